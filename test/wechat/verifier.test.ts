import { createPublicKey, generateKeyPairSync, sign } from 'node:crypto'
import { readFileSync } from 'node:fs'
import t from 'tap'
import { KeyRing } from '../../src/wechat/keys.js'
import { isSigned, responseMessage, verifyResponse } from '../../src/wechat/verifier.js'
import { fixture, vectors } from '../helpers.js'

const platformKey = createPublicKey(readFileSync(fixture('platform-test-pub.pem')))
const keys = new KeyRing(vectors.merchant.serial_no)
keys.setPublicKey(vectors.platform.public_key_id, platformKey)
const lower = (h: Record<string, string>): Record<string, string> =>
  Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v]))
const signedAt = (v: { headers: Record<string, string> }): number => Number(v.headers['Wechatpay-Timestamp']) * 1000

t.test('the openssl response vectors: 204 and 400 verify, the SIGNTEST probe fails', async t => {
  for (const v of vectors.responses) {
    if (v.message !== undefined) t.equal(responseMessage(v.headers['Wechatpay-Timestamp']!, v.headers['Wechatpay-Nonce']!, Buffer.from(v.body)).toString(), v.message)
    const result = await verifyResponse(keys, lower(v.headers), Buffer.from(v.body), signedAt(v))
    t.equal(result.ok, v.valid, `${v.status} ${v.valid ? 'valid' : 'invalid'}`)
    if (!v.valid) t.match(result, { reason: 'SIGNTEST_PROBE' })
  }
})

const good = vectors.responses[0]!
const headers = lower(good.headers)
const at = signedAt(good)

t.test('a tampered body or a spoiled signature fails', async t => {
  t.match(await verifyResponse(keys, headers, Buffer.from('{}'), at), { ok: false, reason: 'BAD_SIGNATURE' })
  t.match(await verifyResponse(keys, { ...headers, 'wechatpay-signature': 'not base64!' }, Buffer.alloc(0), at), { ok: false, reason: 'BAD_SIGNATURE' })
  t.match(await verifyResponse(keys, { ...headers, 'wechatpay-nonce': 'other' }, Buffer.alloc(0), at), { ok: false, reason: 'BAD_SIGNATURE' })
})

t.test('each missing header is named', async t => {
  const { 'wechatpay-nonce': _n, 'wechatpay-serial': _s, ...rest } = headers
  const result = await verifyResponse(keys, rest, Buffer.alloc(0), at)
  t.match(result, { ok: false, reason: 'MISSING_HEADERS', message: 'missing wechatpay-nonce, wechatpay-serial' })
  t.equal(isSigned(rest), true)
  t.equal(isSigned({}), false)
})

t.test('timestamps: 300 s either way is accepted, 301 s is not, garbage is refused', async t => {
  t.equal((await verifyResponse(keys, headers, Buffer.alloc(0), at + 300_999)).ok, true)
  t.equal((await verifyResponse(keys, headers, Buffer.alloc(0), at - 300_000)).ok, true)
  t.match(await verifyResponse(keys, headers, Buffer.alloc(0), at + 301_000), { ok: false, reason: 'STALE_TIMESTAMP' })
  t.match(await verifyResponse(keys, headers, Buffer.alloc(0), at - 301_000), { ok: false, reason: 'STALE_TIMESTAMP' })
  t.match(await verifyResponse(keys, { ...headers, 'wechatpay-timestamp': '1e9' }, Buffer.alloc(0), at), { ok: false, reason: 'BAD_TIMESTAMP' })
})

t.test('an unknown serial fails and names the serials known; refresh() gets one chance to find it', async t => {
  const other = { ...headers, 'wechatpay-serial': 'PUB_KEY_ID_999' }
  t.match(await verifyResponse(keys, other, Buffer.alloc(0), at), { ok: false, reason: 'UNKNOWN_SERIAL', message: /PUB_KEY_ID_999.*known: PUB_KEY_ID_0112300001092019040800000000000001/ })
  const ring = new KeyRing('AB')
  let refreshed = 0
  ring.refresh = async serial => {
    refreshed++
    ring.setPublicKey(serial, platformKey)
    return true
  }
  t.equal((await verifyResponse(ring, headers, Buffer.alloc(0), at)).ok, true)
  t.equal(refreshed, 1)
})

t.test('a key of the wrong kind verifies nothing and throws nothing', async t => {
  const ring = new KeyRing('AB')
  ring.setPublicKey(vectors.platform.public_key_id, generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey)
  t.match(await verifyResponse(ring, headers, Buffer.alloc(0), at), { ok: false, reason: 'BAD_SIGNATURE' })
})

t.test('platform certificates verify by serial until they expire', async t => {
  const pair = generateKeyPairSync('rsa', { modulusLength: 2048 })
  let now = 1_000_000
  const ring = new KeyRing('MERCHANT', () => now)
  ring.setCertificates(new Map([['ABCDEF', { key: pair.publicKey, expiresAt: 2_000_000 }]]))
  const body = Buffer.from('{"a":1}')
  const ts = String(Math.floor(now / 1000))
  const signature = sign('sha256', responseMessage(ts, 'n', body), pair.privateKey).toString('base64')
  const h = { 'wechatpay-timestamp': ts, 'wechatpay-nonce': 'n', 'wechatpay-signature': signature, 'wechatpay-serial': 'abcdef' }
  t.equal((await verifyResponse(ring, h, body, now)).ok, true, 'serials match whatever their case')
  t.equal(ring.nearestCertificateExpiry(), 1000)
  t.equal(ring.hasCertificates(), true)
  now = 2_000_001
  t.match(await verifyResponse(ring, { ...h, 'wechatpay-timestamp': String(Math.floor(now / 1000)) }, body, now), { ok: false, reason: 'UNKNOWN_SERIAL' })
  t.equal(ring.nearestCertificateExpiry(), undefined)
  t.throws(() => ring.setCertificates(new Map([['merchant', { key: pair.publicKey, expiresAt: 3_000_000 }]])), /merchant serial/)
})

t.test('a SIGNTEST probe is refused before its serial is looked up: it never makes the gateway download certificates', async t => {
  const probe = vectors.responses.find(v => !v.valid)!
  const ring = new KeyRing('AB')
  let refreshed = 0
  ring.refresh = async () => { refreshed++; return false }
  const result = await verifyResponse(ring, { ...lower(probe.headers), 'wechatpay-serial': 'UNKNOWN-SERIAL' }, Buffer.from(probe.body), signedAt(probe))
  t.match(result, { ok: false, reason: 'SIGNTEST_PROBE' })
  t.equal(refreshed, 0)
})
