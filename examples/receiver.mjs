// A subscriber of the gateway's notification relay, in a few lines of Node and no dependency: it checks the
// relay's signature with its own secret (no WeChat Pay key), and acts once per notification id.
//   RECEIVER_SECRET=... node examples/receiver.mjs        (listens on RECEIVER_PORT, default 4000)
import { createHmac, timingSafeEqual } from 'node:crypto'
import { createServer } from 'node:http'

const secret = process.env.RECEIVER_SECRET ?? ''
const seen = new Set() // use your database: the notification id is the idempotency key

/** `Wechatpay-Relay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>`, at most 5 minutes old. */
function verified (header = '', body) {
  const fields = Object.fromEntries(header.split(',').map(kv => kv.split('=')))
  const expected = createHmac('sha256', secret).update(`${fields.t}.`).update(body).digest()
  const given = Buffer.from(fields.v1 ?? '', 'hex')
  return Math.abs(Date.now() / 1000 - Number(fields.t)) <= 300 && given.length === expected.length && timingSafeEqual(given, expected)
}

createServer((req, res) => {
  const chunks = []
  req.on('data', c => chunks.push(c)).on('end', () => {
    const body = Buffer.concat(chunks)
    if (!verified(req.headers['wechatpay-relay-signature'], body)) return res.writeHead(401).end()
    const event = JSON.parse(body)
    if (!seen.has(event.id)) {
      seen.add(event.id)
      console.log(event.event_type, event.merchant, JSON.stringify(event.resource))
    }
    res.writeHead(204).end() // 2xx only once it is safe on your side: anything else is delivered again
  })
}).listen(Number(process.env.RECEIVER_PORT ?? 4000), () => console.log('receiver listening'))
