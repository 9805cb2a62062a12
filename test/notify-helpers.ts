import { randomUUID } from 'node:crypto'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Test } from 'tap'
import { request } from 'undici'
import type { RunningSandbox } from '../src/sandbox/index.js'
import type { SandboxMerchant } from '../src/sandbox/merchants.js'
import { encryptResource, signatureHeaders, signingKey, type Spoil } from '../src/sandbox/protocol.js'
import type { Subscriber } from '../src/notifications/subscribers.js'

/** Notifications as WeChat Pay sends them, made here from the sandbox's keys, and a subscriber to receive the relay. */

export const SECRET = 'subscriber-secret-0123456789abcdef-0123'

export const merchantOf = (sandbox: RunningSandbox, name: string): SandboxMerchant =>
  sandbox.merchants.all.find(m => m.ids.name === name) as SandboxMerchant

export interface Crafted { headers: Record<string, string>, body: string, id: string }

/**
 * A signed, encrypted notification from WeChat Pay to `merchant` (spoiled on purpose when asked), signed with its
 * WeChat Pay public key unless `signer` says its platform certificate.
 */
export async function craft (sandbox: RunningSandbox, merchant: string, opts: {
  event_type?: string, resource?: Record<string, unknown>, id?: string, spoil?: Spoil, apiv3Key?: string, signer?: 'public-key' | 'certificate'
} = {}): Promise<Crafted> {
  const m = merchantOf(sandbox, merchant)
  const id = opts.id ?? randomUUID()
  const resource = opts.resource ?? { mchid: m.ids.mchid, out_order_no: `o-${id.slice(0, 8)}`, state: 'DONE', collection: { state: 'USER_PAID' } }
  const body = JSON.stringify({
    id,
    create_time: '2026-12-02T12:00:00+08:00',
    resource_type: 'encrypt-resource',
    event_type: opts.event_type ?? 'PAYSCORE.USER_PAID',
    summary: '支付成功',
    resource: { original_type: 'payscore', ...encryptResource(opts.apiv3Key ?? m.apiv3Key, JSON.stringify(resource), 'payscore') }
  })
  const signed = await signatureHeaders(signingKey(m, opts.signer ?? 'public-key', undefined), body, opts.spoil)
  return { id, body, headers: { ...signed, 'content-type': 'application/json', 'request-id': randomUUID() } }
}

export async function send (notifyUrl: string, merchant: string, n: Crafted): Promise<{ status: number, json: unknown }> {
  const res = await request(`${notifyUrl}/wechatpay/notify/${merchant}`, { method: 'POST', headers: n.headers, body: n.body })
  const text = await res.body.text()
  return { status: res.statusCode, json: text === '' ? undefined : JSON.parse(text) }
}

export interface Received { headers: IncomingHttpHeaders, body: string, json: Record<string, any> }

/** An internal service receiving the relay; `status` decides its answer (a function of the delivery number; -1: none). */
export async function subscriberServer (t: Test, status: (n: number) => number = () => 204) {
  const received: Received[] = []
  let n = 0
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      const code = status(++n)
      if (code < 0) return
      if (code >= 200 && code < 300) received.push({ headers: req.headers, body, json: JSON.parse(body) })
      res.writeHead(code).end()
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`
  return { url, received, attempts: () => n, subscriber: (name: string, more: Partial<Subscriber> = {}): Subscriber => ({ name, url, events: ['*'], secret: SECRET, ...more }) }
}

export async function until (check: () => boolean | Promise<boolean>, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (await check()) return true
    await new Promise(resolve => setTimeout(resolve, 25))
  }
  return await check()
}
