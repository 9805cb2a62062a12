import { createPublicKey } from 'node:crypto'
import { readFileSync } from 'node:fs'
import t from 'tap'
import { openNotification } from '../../src/notifications/envelope.js'
import { KeyRing } from '../../src/wechat/keys.js'
import { fixture, vectors } from '../helpers.js'

/**
 * The shared notification vectors (signed by the openssl CLI, encrypted by another library: independent of this
 * project's code) opened as the listener opens them: verified over the raw bytes, then decrypted.
 */

const keys = new KeyRing(vectors.merchant.serial_no)
keys.setPublicKey(vectors.platform.public_key_id, createPublicKey(readFileSync(fixture('platform-test-pub.pem'))))
// Node gives the listener lower-case header names.
const headersOf = (n: { headers: Record<string, string> }) => Object.fromEntries(Object.entries(n.headers).map(([k, v]) => [k.toLowerCase(), v]))
const at = (n: { headers: Record<string, string> }, skewS = 0): number => (Number(n.headers['Wechatpay-Timestamp']) + skewS) * 1000

t.test('each vector gives its expected result: the genuine ones decrypt to their plaintext, the probe is refused', async t => {
  t.equal(vectors.notifications.length, 3)
  for (const n of vectors.notifications) {
    const opened = await openNotification({ keys, apiv3Key: n.apiv3_key }, headersOf(n), Buffer.from(n.body, 'utf8'), at(n))
    if (n.valid) {
      const envelope = JSON.parse(n.body) as { id: string, event_type: string, create_time: string, summary: string, resource: { original_type: string } }
      t.match(opened, {
        ok: true,
        notification: {
          id: envelope.id, event_type: envelope.event_type, create_time: envelope.create_time, summary: envelope.summary,
          resource_type: 'encrypt-resource', original_type: envelope.resource.original_type
        }
      }, n.about)
      t.same(opened.ok && opened.notification.resource, JSON.parse(n.plaintext), 'the decrypted resource')
    } else {
      t.match(opened, { ok: false, status: 401, result: 'probe' }, n.about)
    }
  }
})

t.test('the genuine vectors are refused once anything about them changes', async t => {
  const [n] = vectors.notifications
  if (n === undefined) throw new Error('no vector')
  const open = (headers: Record<string, string>, body = n.body, now = at(n), apiv3Key = n.apiv3_key) =>
    openNotification({ keys, apiv3Key }, headers, Buffer.from(body, 'utf8'), now)
  t.match(await open(headersOf(n), n.body, at(n, 301)), { ok: false, status: 401, result: 'unverified', message: /301 s away/ }, 'more than 300 s later')
  t.match(await open(headersOf(n), n.body.replace('"summary":"支付成功"', '"summary":"支付成功" ')), { ok: false, status: 401, result: 'unverified' }, 'one byte more in the body')
  t.match(await open({ ...headersOf(n), 'wechatpay-serial': 'PUB_KEY_ID_0000000000000000000000000000UNKNOWN' }), { ok: false, status: 401, result: 'unverified' }, 'another serial')
  t.match(await open(headersOf(n), n.body, at(n), 'x'.repeat(32)), { ok: false, status: 500, result: 'undecryptable', message: /authentication failed/ }, 'another APIv3 key: verified, not readable')
  const { 'wechatpay-signature': _, ...unsigned } = headersOf(n)
  t.match(await open(unsigned), { ok: false, status: 401, result: 'unverified', message: /missing wechatpay-signature/ })
})

t.test('after an APIv3 key rotation, a notification encrypted with the previous key is still read; no other key is', async t => {
  const n = vectors.notifications.find(v => v.valid)
  if (n === undefined) throw new Error('no valid vector')
  const open = (apiv3Key: string, previousApiv3Key?: string) =>
    openNotification({ keys, apiv3Key, previousApiv3Key }, headersOf(n), Buffer.from(n.body, 'utf8'), at(n))
  const rotated = 'R'.repeat(32)
  t.match(await open(rotated), { ok: false, status: 500, result: 'undecryptable' }, 'the new key alone cannot read it')
  t.match(await open(rotated, n.apiv3_key), { ok: true }, 'the previous key, kept after the rotation, can')
  t.match(await open(rotated, 'P'.repeat(32)), { ok: false, result: 'undecryptable', message: /APIv3 key/ })
})
