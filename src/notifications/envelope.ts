import { z } from 'zod'
import { decryptResource } from '../wechat/aead.js'
import { headerValue, verifyResponse, type VerificationKeys } from '../wechat/verifier.js'

/**
 * A WeChat Pay notification (回调通知, docs/wechatpay.md §8), opened: its signature verified over the raw bytes
 * before anything is parsed, then its envelope read and its resource decrypted with the profile's APIv3 key.
 */

/** What WeChat Pay sent, decrypted: the body relayed to subscribers is made of it. */
export interface Notification {
  id: string
  event_type: string
  create_time: string
  summary: string
  resource_type: string
  /** The decrypted business object (an order, a contract...). */
  resource: Record<string, unknown>
  original_type?: string
}

/** Why a notification was not accepted, and how WeChat Pay is answered. */
export type Refusal =
  /** Signature, timestamp, serial or a SIGNTEST probe: 401, nothing relayed (WeChat resends a genuine one). */
  | { status: 401, result: 'unverified' | 'probe', message: string }
  /** Verified, but it cannot be read: 500 so that WeChat resends it, and an alert (the APIv3 key is wrong...). */
  | { status: 500, result: 'undecryptable', message: string }

export type Opened = { ok: true, notification: Notification } | ({ ok: false } & Refusal)

const SIGNATURE_TYPE = 'WECHATPAY2-SHA256-RSA2048'

// The envelope's fields as documented; WeChat may add others. Lengths are bounded generously: they are logged.
const Envelope = z.looseObject({
  id: z.string().min(1).max(64),
  create_time: z.string().max(64),
  event_type: z.string().min(1).max(64),
  resource_type: z.string().max(64).default('encrypt-resource'),
  summary: z.string().max(256).default(''),
  resource: z.looseObject({
    algorithm: z.string(),
    ciphertext: z.string(),
    nonce: z.string(),
    associated_data: z.string().optional(),
    original_type: z.string().optional()
  })
})

export interface ProfileKeys {
  keys: VerificationKeys
  /** The profile's APIv3 key; notifications cannot be read without it. */
  apiv3Key: string | undefined
  /** The key it replaced, for a while after a rotation: notifications encrypted before it may still come. */
  previousApiv3Key?: string | undefined
}

/** Decrypted with the current key, or else with the previous one (a resend of a notification from before a rotation). */
function decryptWithEither (current: string, previous: string | undefined, resource: Parameters<typeof decryptResource>[1]): string {
  try {
    return decryptResource(current, resource)
  } catch (err) {
    if (previous === undefined) throw err
    try {
      return decryptResource(previous, resource)
    } catch {
      throw err
    }
  }
}

export async function openNotification (profile: ProfileKeys, headers: Record<string, string | string[] | undefined>,
  raw: Buffer, now = Date.now()): Promise<Opened> {
  const type = headerValue(headers, 'wechatpay-signature-type')
  if (type !== undefined && type !== SIGNATURE_TYPE) {
    return { ok: false, status: 401, result: 'unverified', message: `Wechatpay-Signature-Type ${type.slice(0, 64)} is not ${SIGNATURE_TYPE}` }
  }
  const verification = await verifyResponse(profile.keys, headers, raw, now)
  if (!verification.ok) {
    return { ok: false, status: 401, result: verification.reason === 'SIGNTEST_PROBE' ? 'probe' : 'unverified', message: verification.message }
  }
  const undecryptable = (message: string): Opened => ({ ok: false, status: 500, result: 'undecryptable', message })
  let envelope: z.infer<typeof Envelope>
  try {
    const parsed = Envelope.safeParse(JSON.parse(raw.toString('utf8')))
    if (!parsed.success) return undecryptable(`a signed notification whose envelope is not as documented (${parsed.error.issues[0]?.path.join('.') ?? ''})`)
    envelope = parsed.data
  } catch {
    return undecryptable('a signed notification whose body is not JSON')
  }
  if (profile.apiv3Key === undefined) return undecryptable('this merchant profile has no APIv3 key (apiv3_key_file / WECHATPAY_APIV3_KEY): notifications cannot be decrypted')
  let resource: unknown
  try {
    resource = JSON.parse(decryptWithEither(profile.apiv3Key, profile.previousApiv3Key, envelope.resource))
  } catch (err) {
    return undecryptable(`the resource cannot be decrypted with this profile's APIv3 key: ${(err as Error).message}`)
  }
  if (resource === null || typeof resource !== 'object' || Array.isArray(resource)) return undecryptable('the decrypted resource is not a JSON object')
  const { id, event_type, create_time, summary, resource_type } = envelope
  const originalType = envelope.resource.original_type
  return {
    ok: true,
    notification: {
      id, event_type, create_time, summary, resource_type,
      resource: resource as Record<string, unknown>,
      ...(originalType !== undefined && { original_type: originalType })
    }
  }
}
