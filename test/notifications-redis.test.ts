import t from 'tap'
import type { Subscriber } from '../src/notifications/subscribers.js'
import type { RunningSandbox } from '../src/sandbox/index.js'
import { signatureHeaders, signingKey } from '../src/sandbox/protocol.js'
import { auth, testGateway, testRedis, testSandbox } from './helpers.js'
import { craft, merchantOf, send, subscriberServer, until, type Crafted } from './notify-helpers.js'

/** A replica with Redis, its notification listener on a free port. */
async function replica (t: Parameters<typeof testGateway>[0], sandbox: RunningSandbox, redisUrl: string, subscribers: Subscriber[],
  notify: { deliveryTimeoutMs?: number, horizonMs?: number } = {}) {
  const gateway = await testGateway(t, {
    sandbox,
    config: {
      redisUrl,
      notify: {
        port: 0, host: '127.0.0.1', subscribers, deliveryTimeoutMs: notify.deliveryTimeoutMs ?? 1000,
        retry: { baseMs: 50, maxMs: 200, horizonMs: notify.horizonMs ?? 60_000 }, retentionMs: 600_000
      }
    },
    build: { notifyPollMs: 50 }
  })
  await gateway.app.ready() // starts the relay's worker, as listening does in server.ts
  return { ...gateway, notifyUrl: await gateway.app.notifications.listen() as string }
}

const resign = async (sandbox: RunningSandbox, n: Crafted): Promise<Crafted> =>
  ({ ...n, headers: { ...n.headers, ...await signatureHeaders(signingKey(merchantOf(sandbox, 'partner'), 'public-key', undefined), n.body) } })

t.test('with Redis: stored and answered at once; delivered with retries once the subscriber is back; a duplicate is delivered once', async t => {
  const redis = await testRedis(t)
  const sandbox = await testSandbox(t)
  let down = true
  const sub = await subscriberServer(t, () => down ? 500 : 204)
  const { app, notifyUrl } = await replica(t, sandbox, redis.url, [sub.subscriber('billing')])
  const n = await craft(sandbox, 'partner')
  t.same(await send(notifyUrl, 'partner', n), { status: 204, json: undefined }, 'safe in Redis: WeChat Pay is answered at once')
  t.ok(await until(() => sub.attempts() >= 3), 'retried while the subscriber fails')
  t.equal(sub.received.length, 0)
  const pending = await app.inject({ method: 'GET', url: `/notifications/partner/${n.id}`, headers: auth() })
  t.match(pending.json().deliveries, [{ subscriber: 'billing', state: 'pending', last_status: 500 }])
  t.match((await app.inject({ method: 'GET', url: '/metrics' })).body, /wechatpay_gateway_notification_oldest_undelivered_seconds [0-9.]+/)

  down = false
  t.ok(await until(() => sub.received.length === 1), 'delivered once the subscriber is back')
  // The subscriber's answer is recorded just after it arrives.
  t.ok(await until(async () => (await app.inject({ method: 'GET', url: `/notifications/partner/${n.id}`, headers: auth() })).json().deliveries[0]?.state === 'delivered'))
  const done = await app.inject({ method: 'GET', url: `/notifications/partner/${n.id}`, headers: auth() })
  t.match(done.json().deliveries, [{ subscriber: 'billing', state: 'delivered', last_status: 204 }])
  const { history, attempts } = done.json().deliveries[0] as { history: Array<{ at: string, status?: number }>, attempts: number }
  t.equal(history.length, Math.min(attempts, 10), 'the latest attempts are kept, each with its time and status')
  t.match(history.at(-1), { at: /^\d{4}-\d\d-\d\dT/, status: 204 })
  t.ok(history.slice(0, -1).every(a => a.status === 500), 'the failed attempts before it')
  t.ok(Number(sub.received[0]?.headers['wechatpay-relay-attempt']) >= 4, 'the attempt number grows')
  t.match((await app.inject({ method: 'GET', url: '/metrics' })).body, /wechatpay_gateway_notification_oldest_undelivered_seconds 0\n/)

  t.same(await send(notifyUrl, 'partner', await resign(sandbox, n)), { status: 204, json: undefined }, 'WeChat Pay resends it')
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal(sub.received.length, 1, 'a duplicate is not delivered again')
  t.match((await app.inject({ method: 'GET', url: '/metrics' })).body, /result="duplicate"\} 1/)

  const redelivered = await app.inject({ method: 'POST', url: `/notifications/partner/${n.id}/redeliver`, headers: auth() })
  t.match(redelivered.json().deliveries, [{ state: 'pending' }], 'queued')
  t.ok(await until(() => sub.received.length === 2), 'an operator\'s redelivery arrives')
})

t.test('with Redis, several replicas deliver each notification exactly once', async t => {
  const redis = await testRedis(t)
  const sandbox = await testSandbox(t)
  const sub = await subscriberServer(t, () => 204)
  const subscribers = [sub.subscriber('billing')]
  const a = await replica(t, sandbox, redis.url, subscribers)
  const b = await replica(t, sandbox, redis.url, subscribers)
  const sent = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
    const n = await craft(sandbox, 'partner')
    t.equal((await send(i % 2 === 0 ? a.notifyUrl : b.notifyUrl, 'partner', n)).status, 204)
    return n.id
  }))
  t.ok(await until(() => sub.received.length >= 20))
  await new Promise(resolve => setTimeout(resolve, 300))
  t.same(sub.received.map(r => r.json.id).sort(), [...sent].sort(), 'each once, by one replica or the other')

})

t.test('with Redis, a replica cut off mid-delivery only delays it: another one delivers it after its lease', async t => {
  const redis = await testRedis(t)
  const sandbox = await testSandbox(t)
  const hanging = await subscriberServer(t, n => n === 1 ? -1 : 204)
  const c = await replica(t, sandbox, redis.url, [hanging.subscriber('hanging')], { deliveryTimeoutMs: 300 })
  const d = await replica(t, sandbox, redis.url, [hanging.subscriber('hanging')], { deliveryTimeoutMs: 300 })
  const n = await craft(sandbox, 'partner')
  t.equal((await send(c.notifyUrl, 'partner', n)).status, 204)
  t.ok(await until(() => hanging.attempts() === 1), 'one replica is delivering it')
  c.app.redis?.disconnect()
  t.ok(await until(() => hanging.received.some(r => r.json.id === n.id), 8000), 'delivered by the replica still alive')
  t.equal(hanging.received.length, 1)
  void d
})

t.test('with Redis: down at receive is a 500 (WeChat Pay resends); a delivery failing past the horizon is given up, loudly', async t => {
  const redis = await testRedis(t)
  const sandbox = await testSandbox(t)
  const sub = await subscriberServer(t, () => 500)
  const { app, notifyUrl, logs } = await replica(t, sandbox, redis.url, [sub.subscriber('billing')], { horizonMs: 300 })
  const n = await craft(sandbox, 'partner')
  t.equal((await send(notifyUrl, 'partner', n)).status, 204)
  t.ok(await until(async () => (await app.inject({ method: 'GET', url: `/notifications/partner/${n.id}`, headers: auth() })).json().deliveries[0].state === 'failed'), 'given up')
  t.match(logs.find('notification NOT delivered: the subscriber failed every attempt within NOTIFY_RETRY_HORIZON_S; redeliver it from the operator API once the subscriber is fixed'),
    [{ level: 'error', notification: `partner/${n.id}`, subscriber: 'billing' }])
  t.match((await app.inject({ method: 'GET', url: '/metrics' })).body, /wechatpay_gateway_notification_deliveries_total\{subscriber="billing",outcome="gave_up"\} 1/)

  await redis.stop()
  const lost = await send(notifyUrl, 'partner', await craft(sandbox, 'partner'))
  t.same(lost, { status: 500, json: { code: 'FAIL', message: '失败' } }, 'not stored: WeChat Pay keeps it')
  t.match(logs.find('notification could not be stored (Redis): answered 500 so that WeChat Pay sends it again'), [{ level: 'error' }])
  await redis.start()
  t.ok(await until(async () => (await send(notifyUrl, 'partner', await craft(sandbox, 'partner'))).status === 204, 5000), 'stored again once Redis is back')
})

t.test('with Redis, a delivery still pending survives a gateway restart and a Redis restart from its append-only file', async t => {
  const redis = await testRedis(t, { persist: true })
  const sandbox = await testSandbox(t)
  let down = true
  const sub = await subscriberServer(t, () => down ? 503 : 204)
  const before = await replica(t, sandbox, redis.url, [sub.subscriber('billing')])
  const n = await craft(sandbox, 'partner')
  t.same(await send(before.notifyUrl, 'partner', n), { status: 204, json: undefined }, 'stored: WeChat Pay will not send it again')
  t.ok(await until(() => sub.attempts() >= 1), 'tried while the subscriber is down')
  await before.app.close()
  // No RDB snapshots (--save ''): what comes back is what the append-only file kept.
  await redis.stop()
  await redis.start()
  down = false
  const after = await replica(t, sandbox, redis.url, [sub.subscriber('billing')])
  t.ok(await until(() => sub.received.length === 1, 10_000), 'delivered by the restarted gateway')
  t.equal(sub.received[0]?.json.id, n.id)
  // The subscriber's answer is recorded just after it arrives.
  const delivered = async () => (await after.app.inject({ method: 'GET', url: `/notifications/partner/${n.id}`, headers: auth() })).json().deliveries[0]?.state === 'delivered'
  t.ok(await until(delivered), 'recorded as delivered')
  const record = await after.app.inject({ method: 'GET', url: `/notifications/partner/${n.id}`, headers: auth() })
  t.match(record.json().deliveries, [{ subscriber: 'billing', state: 'delivered', last_status: 204 }])
})

t.test('with Redis, a retry horizon shorter than WeChat Pay\'s resends is a warning at start', async t => {
  const redis = await testRedis(t)
  const sandbox = await testSandbox(t)
  const warning = (logs: { lines: Array<Record<string, unknown>> }) => logs.lines.filter(l => String(l.msg).startsWith('NOTIFY_RETRY_HORIZON_S is'))
  const short = await replica(t, sandbox, redis.url, [], { horizonMs: 60_000 })
  t.match(warning(short.logs), [{ level: 'warn', msg: /^NOTIFY_RETRY_HORIZON_S is 60 s, less than WeChat Pay's own resends \(up to 86640 s\)/ }])
  const enough = await replica(t, sandbox, redis.url, [], { horizonMs: 25 * 3600_000 })
  t.same(warning(enough.logs), [], 'none with the default 25 h')
})

t.test('with Redis, a partition that leaves the connections half-open: the relay reconnects its reader too, and delivers', async t => {
  const redis = await testRedis(t)
  const { createServer, connect } = await import('node:net')
  // Between the gateway and Redis: `partition()` makes every connection open now go silent both ways, for good,
  // as a partition does to connections nobody closes; new connections work.
  const open = new Set<{ stalled: boolean }>()
  const server = createServer(client => {
    const upstream = connect(Number(new URL(redis.url).port), '127.0.0.1')
    const link = { stalled: false }
    open.add(link)
    client.on('data', (chunk: Buffer) => { if (!link.stalled) upstream.write(chunk) })
    upstream.on('data', (chunk: Buffer) => { if (!link.stalled) client.write(chunk) })
    for (const s of [client, upstream]) s.on('error', () => {}).on('close', () => { open.delete(link); client.destroy(); upstream.destroy() })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const sandbox = await testSandbox(t)
  const sub = await subscriberServer(t, () => 204)
  const { app, notifyUrl, logs } = await replica(t, sandbox, `redis://127.0.0.1:${(server.address() as { port: number }).port}`, [sub.subscriber('billing')])
  await until(() => open.size >= 2) // the shared connection and the relay's reader
  for (const link of open) link.stalled = true
  t.ok(await until(() => logs.lines.some(l => /does not answer within/.test(String(l.msg))), 5000), 'the shared connection notices the silence')
  // It drops the silent connection (its status leaves `ready` once the socket has closed), then connects again.
  await until(() => app.redis?.status !== 'ready', 2000)
  t.ok(await until(() => app.redis?.status === 'ready'), 'and reconnects')
  const n = await craft(sandbox, 'partner')
  const stored = await send(notifyUrl, 'partner', n)
  t.same(stored, { status: 204, json: undefined }, 'stored')
  if (stored.status !== 204) t.comment(JSON.stringify(logs.lines.slice(-8)))
  t.ok(await until(() => sub.received.length === 1, 8000), 'delivered: the reader did not stay on its silent connection')
})
