import { createCipheriv } from 'node:crypto'
import t from 'tap'
import { decryptResource } from '../../src/wechat/aead.js'
import { vectors } from '../helpers.js'

const fixtures = vectors.official_sdk_fixtures.aead
const resource = (f: { nonce: string, associated_data: string, ciphertext: string }) =>
  ({ algorithm: 'AEAD_AES_256_GCM', nonce: f.nonce, associated_data: f.associated_data, ciphertext: f.ciphertext })

t.test('the official SDKs\' AEAD cases: AES-256 ones decrypt; bad AAD, nonce, ciphertext and every 16-byte key are refused', async t => {
  t.ok(fixtures.length >= 8)
  for (const f of fixtures) {
    const decrypt = () => decryptResource(f.key, resource(f))
    if (f.expect === undefined && f.key_bits === 256) t.equal(decrypt(), f.plaintext, f.id)
    // The Go SDK's own tests use 16-byte keys (AES-128): a decryptor that follows AEAD_AES_256_GCM must refuse them.
    else t.throws(decrypt, f.id)
  }
})

t.test('the shared notification vectors decrypt with their APIv3 key', async t => {
  for (const n of vectors.notifications) {
    const { resource: r } = JSON.parse(n.body)
    t.same(JSON.parse(decryptResource(n.apiv3_key, r)), JSON.parse(n.plaintext))
  }
})

t.test('strict where Node is lenient: truncated tags, loose Base64, odd nonces and keys are refused, and say why', async t => {
  const key = 'k'.repeat(32)
  const nonce = 'n'.repeat(12)
  const seal = (text: string, aad = '') => {
    const cipher = createCipheriv('aes-256-gcm', Buffer.from(key), Buffer.from(nonce))
    if (aad !== '') cipher.setAAD(Buffer.from(aad))
    return Buffer.concat([cipher.update(text), cipher.final(), cipher.getAuthTag()])
  }
  const sealed = seal('{"a":1}', 'payscore')
  const ok = { algorithm: 'AEAD_AES_256_GCM', nonce, associated_data: 'payscore', ciphertext: sealed.toString('base64') }
  t.equal(decryptResource(key, ok), '{"a":1}')
  t.equal(decryptResource(key, { ...ok, associated_data: '', ciphertext: seal('x').toString('base64') }), 'x', 'empty associated data: none')
  const { associated_data: _, ...noAad } = { ...ok, ciphertext: seal('x').toString('base64') }
  t.equal(decryptResource(key, noAad), 'x', 'absent associated data: none')

  // A 4-byte "tag": Node would check only those 4 bytes without authTagLength.
  const long = seal('{"a":"a longer plaintext of forty bytes"}', 'payscore')
  const truncated = Buffer.concat([long.subarray(0, -16), long.subarray(-16, -12)])
  t.throws(() => decryptResource(key, { ...ok, ciphertext: truncated.toString('base64') }), /authentication failed/)
  t.throws(() => decryptResource(key, { ...ok, ciphertext: 'AAAA' }), /shorter than its 16-byte tag/)
  t.throws(() => decryptResource(key, { ...ok, ciphertext: `${ok.ciphertext.slice(0, 8)}!${ok.ciphertext.slice(8)}` }), /not Base64/)
  t.throws(() => decryptResource(key, { ...ok, ciphertext: ok.ciphertext.replace(/=+$/, '') }), /not Base64/, 'unpadded')
  t.throws(() => decryptResource(key, { ...ok, nonce: 'short' }), /nonce has 5 bytes/)
  t.throws(() => decryptResource('k'.repeat(16), ok), /APIv3 key has 16 bytes, not 32/)
  t.throws(() => decryptResource(key, { ...ok, associated_data: 'other' }), /authentication failed/)
  t.throws(() => decryptResource(key, { ...ok, algorithm: 'AES_CBC' }), /unsupported algorithm AES_CBC/)
  try {
    decryptResource('s'.repeat(31) + 'X', ok)
  } catch (err) {
    t.notMatch((err as Error).message, /sss/, 'the key is never in a message')
  }
})
