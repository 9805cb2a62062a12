import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { request } from 'undici'
import { MemoryStore } from '../src/plugins/idempotency-store.js'
import { replayable } from '../src/plugins/idempotency.js'
import { auth, testGateway, testRedis, testSandbox, TOKENS } from './helpers.js'

const collect = { service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' }
const call = (key: string | undefined, opts: { url?: string, body?: object, token?: string } = {}) => ({
  method: 'POST' as const,
  url: opts.url ?? '/payscore/partner/serviceorder/1234323JKHDFE1243252/pay',
  headers: { 'content-type': 'application/json', ...auth(opts.token), ...(key !== undefined && { 'idempotency-key': key }) },
  payload: opts.body ?? collect
})

t.test('a repeated key gets the stored answer; WeChat Pay is called once', async t => {
  const { app, sandbox, logs } = await testGateway(t)
  const first = await app.inject(call('order-1-collect'))
  t.equal(first.statusCode, 204)
  t.equal(first.headers['idempotent-replayed'], undefined)
  // The same body with other key order is the same request.
  const again = await app.inject(call('order-1-collect', { body: { sub_mchid: '1900000109', service_id: '2002000000000558128851361561536' } }))
  t.equal(again.statusCode, 204)
  t.equal(again.headers['idempotent-replayed'], 'true')
  t.equal(again.headers['wechatpay-request-id'], first.headers['wechatpay-request-id'], 'WeChat\'s Request-ID of the first call')
  t.equal(sandbox.app.sandbox.requests.length, 1, 'one call upstream')
  t.match(logs.find('operation')[1], { idempotencyKey: 'order-1-collect', replayed: true, upstream: null })
  const metrics = await app.inject({ method: 'GET', url: '/metrics' })
  t.match(metrics.body, /wechatpay_gateway_idempotent_replays_total\{operation="payscorePartnerCollect"\} 1/)
})

t.test('the same key with another request is refused; keys belong to a caller and an operation', async t => {
  const { app, sandbox } = await testGateway(t)
  t.equal((await app.inject(call('k1'))).statusCode, 204)
  const other = await app.inject(call('k1', { body: { ...collect, sub_mchid: '1900000110' } }))
  t.equal(other.statusCode, 422)
  t.equal(other.json().code, 'IDEMPOTENCY_KEY_REUSED')
  const otherPath = await app.inject(call('k1', { url: '/payscore/partner/serviceorder/OTHER/pay' }))
  t.equal(otherPath.statusCode, 422, 'the path is part of the request')
  t.equal((await app.inject(call('k1', { token: TOKENS.orders }))).statusCode, 204, 'another caller has its own keys')
  t.equal((await app.inject(call('k1', { url: '/contracts/1/fail-notify', body: {} }))).statusCode, 204, 'another operation has its own keys')
  t.equal(sandbox.app.sandbox.requests.length, 3)
  const bad = await app.inject(call('ключ'))
  t.equal(bad.statusCode, 400)
  t.match(bad.json(), { code: 'VALIDATION_ERROR', detail: { location: 'headers', field: '/idempotency-key' } })
  t.equal((await app.inject(call('x'.repeat(256)))).statusCode, 400)
})

t.test('concurrent duplicates wait for the first and share its answer', async t => {
  const sandbox = await testSandbox(t, { slowMs: 300 })
  const { app } = await testGateway(t, { sandbox })
  const answers = await Promise.all(Array.from({ length: 5 }, () => app.inject(call('slow-1', { url: '/payscore/partner/serviceorder/SANDBOX_SLOW/pay' }))))
  t.same(answers.map(a => a.statusCode), [204, 204, 204, 204, 204])
  t.equal(answers.filter(a => a.headers['idempotent-replayed'] === 'true').length, 4)
  t.equal(sandbox.app.sandbox.requests.length, 1, 'WeChat Pay saw one call')
})

t.test('what is kept: success, refusals, unknown outcomes; what is not: calls that did not happen', async t => {
  const { app, sandbox } = await testGateway(t)
  const count = () => sandbox.app.sandbox.requests.length
  const twice = async (key: string, id: string) => {
    const before = count()
    const a = await app.inject(call(key, { url: `/payscore/partner/serviceorder/${id}/pay` }))
    const b = await app.inject(call(key, { url: `/payscore/partner/serviceorder/${id}/pay` }))
    return { a, b, calls: count() - before }
  }
  const refused = await twice('k-done', 'SANDBOX_ORDER_DONE')
  t.match(refused, { calls: 1, b: { statusCode: 400, headers: { 'idempotent-replayed': 'true' } } }, 'WeChat\'s refusal is kept')
  t.equal(refused.b.json().code, 'ORDER_DONE')
  const unknown = await twice('k-probe', 'SANDBOX_SIGNTEST')
  t.match(unknown, { calls: 1, b: { statusCode: 502 } }, 'an unknown outcome is kept: repeating could double the operation')
  t.equal(unknown.b.json().code, 'UPSTREAM_SIGNATURE_INVALID')
  const failed = await twice('k-500', 'SANDBOX_SYSTEM_ERROR')
  t.equal(failed.calls, 6, 'WeChat\'s 5xx (3 attempts each) is not kept: the same key may try again')
  t.equal(failed.b.headers['idempotent-replayed'], undefined)
  const limited = await twice('k-429', 'SANDBOX_FREQUENCY_LIMITED')
  t.equal(limited.calls, 6, '429 is not kept')

  t.equal(replayable(204, ''), true)
  t.equal(replayable(409, '{}'), false)
  t.equal(replayable(502, '{"detail":{"outcome":"not_executed"}}'), false)
  t.equal(replayable(504, '{"detail":{"outcome":"unknown"}}'), true)
  t.equal(replayable(500, 'not json'), false)
})

t.test('answers expire after the TTL', async t => {
  const { app, sandbox } = await testGateway(t, { config: { idempotencyTtlMs: 100 } })
  await app.inject(call('short'))
  await sleep(150)
  t.equal((await app.inject(call('short'))).headers['idempotent-replayed'], undefined)
  t.equal(sandbox.app.sandbox.requests.length, 2)
})

t.test('memory store: busy, conflict, owner tokens, expiry, and the size cap', async t => {
  let now = 0
  const store = new MemoryStore(2, () => now)
  t.teardown(() => store.close())
  const first = await store.claim('a', 'f', 20)
  t.match(first, { kind: 'claimed', token: /^[0-9a-f-]{36}$/ })
  t.same(await store.claim('a', 'f', 20), { kind: 'busy' })
  t.same(await store.claim('a', 'g', 20), { kind: 'conflict' })
  await store.release('a', 'not-the-owner')
  t.same(await store.claim('a', 'f', 20), { kind: 'busy' }, 'only the owner can release')
  await store.release('a', (first as { token: string }).token)
  const second = await store.claim('a', 'g', 20) as { token: string }
  now = 100 // the claim expires; another call takes the key
  const third = await store.claim('a', 'g', 20) as { token: string }
  await store.complete('a', second.token, 'g', { status: 204, headers: {}, body: 'stale' }, 1000)
  t.same(await store.claim('a', 'g', 0), { kind: 'busy' }, 'a stale owner cannot complete over the new claim')
  await store.complete('a', third.token, 'g', { status: 204, headers: {}, body: '' }, 1000)
  t.match(await store.claim('a', 'g', 0), { kind: 'replay', answer: { status: 204, body: '' } })
  for (const k of ['b', 'c', 'd']) {
    const c = await store.claim(k, 'f', 20) as { token: string }
    await store.complete(k, c.token, 'f', { status: 204, headers: {}, body: '' }, 1000)
  }
  t.match(await store.claim('a', 'g', 20), { kind: 'claimed' }, 'the oldest answers went past the cap')
  now = 5000
  t.match(await store.claim('d', 'f', 20), { kind: 'claimed' }, 'expired')
})

t.test('with Redis, replicas share keys and rate limits', async t => {
  const redis = await testRedis(t)
  const sandbox = await testSandbox(t, { slowMs: 300 })
  const config = { redisUrl: redis.url, rateLimit: { max: 2, windowMs: 60_000 } }
  const { app: a } = await testGateway(t, { sandbox, config })
  const { app: b } = await testGateway(t, { sandbox, config })
  t.equal((await a.inject(call('shared-1'))).statusCode, 204)
  const replay = await b.inject(call('shared-1'))
  t.equal(replay.headers['idempotent-replayed'], 'true', 'replica B replays replica A\'s answer')
  t.equal(sandbox.app.sandbox.requests.length, 1)
  t.equal((await b.inject(call('shared-1', { body: { ...collect, sub_mchid: '1' } }))).statusCode, 422)

  const slow = '/payscore/partner/serviceorder/SANDBOX_SLOW/pay'
  const both = await Promise.all([a.inject(call('shared-2', { url: slow })), b.inject(call('shared-2', { url: slow }))])
  t.same(both.map(r => r.statusCode), [204, 204])
  t.equal(sandbox.app.sandbox.requests.length, 2, 'concurrent duplicates on two replicas: one call upstream')

  // 2 per minute per caller, counted across both replicas. Replays and refused keys never reach WeChat Pay and
  // are not counted: billing has made 2 counted calls (shared-1 on A, shared-2 on one replica).
  const limited = await b.inject(call(undefined))
  t.equal(limited.statusCode, 429)
  t.match(limited.json(), { code: 'RATE_LIMITED', message: /Caller billing is over 2 requests per 60000 ms/ })
  t.ok(Number(limited.headers['retry-after']) > 0)
  t.equal((await b.inject(call(undefined, { token: TOKENS.orders }))).statusCode, 204, 'another caller has its own budget')

  t.equal((await a.inject({ method: 'GET', url: '/readyz' })).statusCode, 200)
  await redis.stop()
  await sleep(50)
  const down = await b.inject(call('shared-3', { token: TOKENS.orders }))
  t.equal(down.statusCode, 503)
  t.equal(down.json().code === 'IDEMPOTENCY_STORE_UNAVAILABLE' || down.json().code === 'SERVICE_UNAVAILABLE', true, down.body)
  const ready = await a.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 503)
  t.match(ready.json().problems, [/redis is/])
  void request
})
