import { createHmac } from 'node:crypto'
import t from 'tap'
import { signRelay, verifyRelaySignature } from '../../src/notifications/relay-signature.js'

const secret = 's'.repeat(40)
const body = '{"id":"EV-1","event_type":"PAYSCORE.USER_PAID"}'
const at = 1_764_000_000_000

t.test('the relay signature is Stripe-style: t=<seconds>,v1=<hex HMAC-SHA256 of "t.body">', async t => {
  const header = signRelay(secret, body, at)
  const expected = createHmac('sha256', secret).update(`${at / 1000}.${body}`).digest('hex')
  t.equal(header, `t=${at / 1000},v1=${expected}`, 'computed independently here')
  t.ok(verifyRelaySignature(secret, header, body, { now: at }))
  t.ok(verifyRelaySignature(secret, header, Buffer.from(body), { now: at + 300_000 }), 'raw bytes, 300 s later')
})

t.test('anything else is refused: other secret, other body, too old, malformed; a rotated secret\'s extra v1 is fine', async t => {
  const header = signRelay(secret, body, at)
  t.notOk(verifyRelaySignature('o'.repeat(40), header, body, { now: at }))
  t.notOk(verifyRelaySignature(secret, header, body.replace('EV-1', 'EV-2'), { now: at }))
  t.notOk(verifyRelaySignature(secret, header, body, { now: at + 301_000 }), 'a replay after the tolerance')
  t.notOk(verifyRelaySignature(secret, header, body, { now: at - 301_000 }))
  t.ok(verifyRelaySignature(secret, header, body, { now: at + 3_600_000, toleranceS: 3600 }))
  for (const bad of [undefined, '', 'v1=abc', `t=x,${header.split(',')[1] ?? ''}`, `t=${at / 1000},v1=${'0'.repeat(64)}`, `t=${at / 1000},v1=zz`]) {
    t.notOk(verifyRelaySignature(secret, bad, body, { now: at }), String(bad))
  }
  const rotated = `${header},v1=${'f'.repeat(64)}`
  t.ok(verifyRelaySignature(secret, rotated, body, { now: at }), 'several v1 entries: any may match')
})
