import { createDecipheriv } from 'node:crypto'

/**
 * AEAD_AES_256_GCM with the APIv3 key (docs/wechatpay.md §8): how WeChat Pay encrypts notification resources and
 * platform certificates. Strict where Node is lenient: a 32-byte key (a 16-byte one would silently be AES-128), a
 * 12-byte nonce, canonical Base64 (Node skips invalid characters), and a full 16-byte tag (Node accepts a truncated
 * one unless told its length: a 4-byte tag is a 2^32 forgery).
 */

export interface EncryptedResource {
  algorithm: string
  nonce: string
  /** Absent or empty: no associated data. */
  associated_data?: string | undefined
  /** Base64 of the encrypted bytes followed by the 16-byte tag. */
  ciphertext: string
}

const KEY_BYTES = 32
const NONCE_BYTES = 12
const TAG_BYTES = 16
const CANONICAL_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

/** The plaintext, or an Error saying which rule the resource or key broke (never the key itself). */
export function decryptResource (apiv3Key: string, resource: EncryptedResource): string {
  if (resource.algorithm !== 'AEAD_AES_256_GCM') throw new Error(`unsupported algorithm ${String(resource.algorithm).slice(0, 32)}`)
  const key = Buffer.from(apiv3Key, 'utf8')
  if (key.length !== KEY_BYTES) throw new Error(`the APIv3 key has ${key.length} bytes, not ${KEY_BYTES}`)
  const nonce = Buffer.from(String(resource.nonce), 'utf8')
  if (nonce.length !== NONCE_BYTES) throw new Error(`the nonce has ${nonce.length} bytes, not ${NONCE_BYTES}`)
  if (typeof resource.ciphertext !== 'string' || !CANONICAL_BASE64.test(resource.ciphertext)) throw new Error('the ciphertext is not Base64')
  const sealed = Buffer.from(resource.ciphertext, 'base64')
  if (sealed.length < TAG_BYTES) throw new Error(`the ciphertext is shorter than its ${TAG_BYTES}-byte tag`)
  const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES })
  decipher.setAuthTag(sealed.subarray(-TAG_BYTES))
  const aad = resource.associated_data ?? ''
  if (aad !== '') decipher.setAAD(Buffer.from(aad, 'utf8'))
  try {
    return Buffer.concat([decipher.update(sealed.subarray(0, -TAG_BYTES)), decipher.final()]).toString('utf8')
  } catch {
    throw new Error('authentication failed: another APIv3 key, or altered ciphertext, nonce or associated data')
  }
}
