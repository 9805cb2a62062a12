import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { request } from 'undici'
import { MAX_WAITERS_PER_KEY, MemoryStore, RedisStore } from '../src/plugins/idempotency-store.js'
import { redisClient } from '../src/plugins/redis.js'
import { replayable } from '../src/plugins/idempotency.js'
import { auth, redisReady, testGateway, testRedis, testSandbox, TOKENS } from './helpers.js'

const collect = { service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' }
let unkeyed = 0
/** By default, an order of its own per key: the sandbox remembers orders, and pays each once. */
const call = (key: string | undefined, opts: { url?: string, body?: object, token?: string } = {}) => ({
  method: 'POST' as const,
  url: opts.url ?? `/payscore/partner/serviceorder/${(key ?? `unkeyed-${++unkeyed}`).replace(/[^0-9A-Za-z_-]/g, '_').slice(0, 32)}/pay`,
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
  t.match(metrics.body, /wechatpay_gateway_idempotent_replays_total\{operation="payscorePartnerCollect",merchant="partner"\} 1/)
})

t.test('the same key with another request is refused; keys belong to a caller and an operation', async t => {
  const { app, sandbox } = await testGateway(t)
  t.equal((await app.inject(call('k1'))).statusCode, 204)
  const other = await app.inject(call('k1', { body: { ...collect, sub_mchid: '1900000110' } }))
  t.equal(other.statusCode, 422)
  t.equal(other.json().code, 'IDEMPOTENCY_KEY_REUSED')
  const otherPath = await app.inject(call('k1', { url: '/payscore/partner/serviceorder/OTHER/pay' }))
  t.equal(otherPath.statusCode, 422, 'the path is part of the request')
  t.equal((await app.inject(call('k1', { token: TOKENS.orders, url: '/payscore/partner/serviceorder/k1-orders/pay' }))).statusCode, 204, 'another caller has its own keys')
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
  const accepted = await twice('k-202', 'SANDBOX_ACCEPTED')
  t.equal(accepted.calls, 6, '202 ("accepted, not processed: send it again") is not kept')
  t.match(accepted.b.json(), { code: 'UPSTREAM_RETRY_LATER', detail: { outcome: 'not_executed' } })
  t.equal(accepted.b.headers['idempotent-replayed'], undefined)

  t.equal(replayable(204, ''), true)
  t.equal(replayable(409, '{"detail":{"outcome":"unknown"}}'), true)
  t.equal(replayable(400, '{"detail":{"outcome":"refused"}}'), true)
  t.equal(replayable(503, '{"detail":{"outcome":"not_executed"}}'), false)
  t.equal(replayable(502, '{"detail":{"outcome":"not_executed"}}'), false)
  t.equal(replayable(504, '{"detail":{"outcome":"unknown"}}'), true)
  t.equal(replayable(500, 'not json'), true, 'an answer that does not say the call did not happen is kept')
})

t.test('answers expire after the TTL', async t => {
  const { app, sandbox } = await testGateway(t, { config: { idempotencyTtlMs: 100 } })
  await app.inject(call('short'))
  await sleep(150)
  t.equal((await app.inject(call('short'))).headers['idempotent-replayed'], undefined)
  t.equal(sandbox.app.sandbox.requests.length, 2)
})

t.test('memory store: conflict, owner tokens, a key lives its TTL, never evicted; full is refused', async t => {
  let now = 0
  const store = new MemoryStore({ maxKeys: 3, maxKeysPerOwner: 2 }, () => now)
  const claim = (key: string, f = 'f', owner = 'billing', callMs = 20) => store.claim({ key, fingerprint: f, owner, ttlMs: 1000, callMs })
  const first = await claim('a')
  t.match(first, { kind: 'claimed', token: /^[0-9a-f-]{36}$/ })
  t.same(await claim('a', 'g'), { kind: 'conflict' })
  await store.release('a', 'not-the-owner')
  now = 10
  const waiting = claim('a', 'f', 'billing')
  await store.release('a', (first as { token: string }).token)
  t.match(await waiting, { kind: 'claimed' }, 'a released key (the call did not happen) is claimed by the duplicate that waited')
  now = 100 // past the holder's deadline, with no answer: the outcome is unknown, and the key is NOT run again
  t.same(await claim('a'), { kind: 'unknown' })
  t.same(await claim('a'), { kind: 'unknown' }, 'still unknown: a claim lives as long as the key')

  const b = await claim('b') as { token: string }
  await store.complete('b', b.token, { status: 204, headers: {}, body: '' })
  t.match(await claim('b'), { kind: 'replay', answer: { status: 204 } })
  t.same(await claim('c'), { kind: 'full' }, 'billing holds its share (2): refused, nothing evicted')
  t.match(await claim('c', 'f', 'orders'), { kind: 'claimed' }, 'another caller has its own share')
  t.same(await claim('d', 'f', 'orders'), { kind: 'full' }, 'the store holds 3 keys in all')
  t.equal(store.size(), 3)
  t.match(await claim('b'), { kind: 'replay' }, 'unexpired answers are all still there')
  now = 1099 // 'a' (claimed again at 10) has lived its TTL, 'b' and 'c' (claimed at 100) not yet
  t.equal(store.size(), 2)
  now = 1100
  t.equal(store.size(), 0)
  t.match(await claim('d', 'f', 'orders'), { kind: 'claimed' })
  t.equal(store.size('orders'), 1)
})

t.test('memory store: many keys, expired from the front', async t => {
  let now = 0
  const store = new MemoryStore({ maxKeys: 50_000, maxKeysPerOwner: 50_000 }, () => now)
  for (let i = 0; i < 50_000; i++) {
    now = i
    await store.claim({ key: `k${i}`, fingerprint: 'f', owner: 'o', ttlMs: 100_000, callMs: 1 })
  }
  t.same(await store.claim({ key: 'one-more', fingerprint: 'f', owner: 'o', ttlMs: 100_000, callMs: 1 }), { kind: 'full' })
  now = 135_000
  t.equal(store.size(), 14_999, 'keys claimed at 0-35,000 ms have lived their 100,000 ms')
  t.match(await store.claim({ key: 'one-more', fingerprint: 'f', owner: 'o', ttlMs: 100_000, callMs: 1 }), { kind: 'claimed' })
})

t.test('a full in-memory store answers 503 IDEMPOTENCY_STORE_FULL, counted per caller; calls without a key go on', async t => {
  const { app, sandbox } = await testGateway(t, { config: { idempotencyMemory: { maxKeys: 10, maxKeysPerOwner: 2 } } })
  t.equal((await app.inject(call('f-1'))).statusCode, 204)
  t.equal((await app.inject(call('f-2'))).statusCode, 204)
  const full = await app.inject(call('f-3'))
  t.equal(full.statusCode, 503)
  t.match(full.json(), { code: 'IDEMPOTENCY_STORE_FULL', message: /REDIS_URL/, detail: { outcome: 'not_executed' } })
  t.equal((await app.inject(call('f-1'))).headers['idempotent-replayed'], 'true', 'nothing was evicted')
  t.equal((await app.inject(call(undefined))).statusCode, 204)
  t.equal((await app.inject(call('o-1', { token: TOKENS.orders }))).statusCode, 204, 'another caller has its own share')
  t.equal(sandbox.app.sandbox.requests.length, 4)
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /wechatpay_gateway_idempotency_store_full_total\{caller="billing"\} 1/)
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
  t.equal(down.json().code, 'IDEMPOTENCY_STORE_UNAVAILABLE', down.body)
  const ready = await a.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 503)
  t.match(ready.json().problems, [/redis is/])
  void request
})

t.test('a Redis blip mid-call: the answer is recorded once Redis is back, and the key is never run again', async t => {
  const redis = await testRedis(t, { persist: true })
  const sandbox = await testSandbox(t, { slowMs: 1500 })
  const { app } = await testGateway(t, { sandbox, config: { redisUrl: redis.url }, build: { idempotency: { recordRetriesMs: [300, 600, 1200] } } })
  const slow = { url: '/payscore/partner/serviceorder/SANDBOX_SLOW/pay' }
  const first = app.inject(call('blip-1', slow))
  await sleep(400)
  await redis.stop() // `redis-cli shutdown`: the claim is safe in the append-only file
  const answer = await first
  t.equal(answer.statusCode, 204, 'the caller gets its answer although it could not be recorded yet')
  await redis.start()
  await redisReady(app)
  const again = await app.inject(call('blip-1', slow))
  t.equal(again.statusCode, 204)
  t.equal(again.headers['idempotent-replayed'], 'true', 'recorded in the background once Redis came back')
  t.equal(sandbox.app.sandbox.requests.length, 1, 'WeChat Pay saw one call')
})

t.test('a Redis that hangs holds no call: a new key gets 503 within the command timeout, calls without one go on, nothing runs twice', async t => {
  const redis = await testRedis(t)
  const sandbox = await testSandbox(t, { slowMs: 1000 })
  const { app, logs } = await testGateway(t, { sandbox, config: { redisUrl: redis.url, redisCommandTimeoutMs: 300 }, build: { idempotency: { recordRetriesMs: [300, 600, 1200, 2400] } } })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
  const post = async (key: string | undefined, id: string) => {
    const answer = await request(`${base}/payscore/partner/serviceorder/${id}/pay`, {
      method: 'POST', headers: { 'content-type': 'application/json', ...auth(), ...(key !== undefined && { 'idempotency-key': key }) }, body: JSON.stringify(collect)
    })
    return { status: answer.statusCode, replayed: answer.headers['idempotent-replayed'], body: await answer.body.text() }
  }
  const holder = post('hang-1', 'SANDBOX_SLOW')
  await sleep(300)
  redis.pause() // a stopped process or a partition: the connection stays open, nothing answers
  const during = await Promise.race([
    Promise.all([holder, post('hang-2', 'hang-2'), post(undefined, 'hang-3'), request(`${base}/readyz`).then(async r => ({ status: r.statusCode, body: await r.body.json() }))]),
    sleep(8000).then(() => 'hung' as const)
  ])
  redis.resume()
  if (during === 'hung') return t.fail('calls waited on the hung Redis')
  const [held, keyed, unkeyed, ready] = during
  t.equal(held.status, 204, 'the holder gets its answer; recording it goes on in the background')
  t.equal(keyed.status, 503)
  t.match(JSON.parse(keyed.body), { code: 'IDEMPOTENCY_STORE_UNAVAILABLE', detail: { outcome: 'not_executed' } })
  t.equal(unkeyed.status, 204, 'a call without a key does not need Redis')
  t.equal(ready.status, 503)
  t.match(ready.body, { problems: [/^redis (does not answer|is connect|is reconnecting)/] })
  t.ok(logs.lines.some(l => /does not answer within 300 ms \(REDIS_COMMAND_TIMEOUT_MS\)/.test(String(l.msg))), 'one line says so')
  await redisReady(app)
  // Recorded and released in the background: the holder's answer written, the late claim of hang-2 removed.
  const { Redis } = await import('ioredis')
  const look = new Redis(redis.url)
  t.teardown(() => { look.disconnect() })
  const settled = async (): Promise<boolean> => {
    const keys = await look.keys('wechatpay-gateway:idempotency:*')
    const records = await Promise.all(keys.map(async k => JSON.parse(await look.get(k) ?? '{}') as { a?: unknown }))
    return records.length === 1 && records[0]?.a !== undefined
  }
  for (let i = 0; i < 100 && !await settled(); i++) await sleep(100)
  t.ok(await settled(), 'one key left in Redis: hang-1, with its answer')
  const replay = await post('hang-1', 'SANDBOX_SLOW')
  t.match(replay, { status: 204, replayed: 'true' }, 'the holder\'s answer was recorded once Redis woke up')
  const retried = await post('hang-2', 'hang-2')
  t.match(retried, { status: 204, replayed: undefined }, 'the key refused with 503 is free: its claim, run late, was released after it')
  t.equal(sandbox.app.sandbox.requests.length, 3, 'one call each for hang-1, hang-2 and the call without a key')
})

t.test('a claim whose connection is lost is never sent again behind the caller\'s back: the key stays free', async t => {
  const redis = await testRedis(t)
  const { createServer, connect } = await import('node:net')
  // Between the gateway and Redis: forwards everything, except that on demand it cuts the connection right after a
  // claim went through (its reply lost), or swallows a claim and cuts the connection later.
  const proxy = { mode: 'forward' as 'forward' | 'lose-reply' | 'swallow' }
  const server = createServer(client => {
    const upstream = connect(Number(new URL(redis.url).port), '127.0.0.1')
    let cutAfterReply = false
    client.on('data', (chunk: Buffer) => {
      const claim = chunk.includes('PX')
      if (claim && proxy.mode === 'swallow') {
        proxy.mode = 'forward'
        setTimeout(() => { client.destroy(); upstream.destroy() }, 200)
        return
      }
      if (claim && proxy.mode === 'lose-reply') cutAfterReply = true
      upstream.write(chunk)
    })
    upstream.on('data', (chunk: Buffer) => {
      if (!cutAfterReply) return client.write(chunk)
      proxy.mode = 'forward'
      client.destroy()
      upstream.destroy()
    })
    for (const s of [client, upstream]) s.on('error', () => {}).on('close', () => { client.destroy(); upstream.destroy() })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const client = redisClient(`redis://127.0.0.1:${(server.address() as { port: number }).port}`, 1000)
  client.on('error', () => {})
  t.teardown(() => { client.disconnect() })
  await redisReady({ redis: client })
  const store = new RedisStore(client)
  const claim = (key: string) => store.claim({ key, fingerprint: 'f', owner: 'billing', ttlMs: 60_000, callMs: 3000 })
  const { Redis } = await import('ioredis')
  const look = new Redis(redis.url)
  t.teardown(() => { look.disconnect() })

  for (const mode of ['lose-reply', 'swallow'] as const) {
    proxy.mode = mode
    await t.rejects(claim(mode), `${mode}: the caller is told the claim failed (503, nothing sent)`)
    await redisReady({ redis: client })
    for (let i = 0; i < 50 && await look.exists(`wechatpay-gateway:idempotency:${mode}`) === 1; i++) await sleep(100)
    t.equal(await look.exists(`wechatpay-gateway:idempotency:${mode}`), 0, `${mode}: no claim is left behind`)
    t.match(await claim(mode), { kind: 'claimed' }, `${mode}: the same key is free for the caller's retry`)
  }
})

t.test('an answer that cannot be recorded leaves the key claimed with an unknown outcome, never run again', async t => {
  const redis = await testRedis(t, { persist: true })
  const sandbox = await testSandbox(t, { slowMs: 800 })
  const { app, logs } = await testGateway(t, { sandbox, config: { redisUrl: redis.url }, build: { idempotency: { callMs: 3000, recordRetriesMs: [100] } } })
  const slow = { url: '/payscore/partner/serviceorder/SANDBOX_SLOW/pay' }
  const first = app.inject(call('lost-1', slow))
  await sleep(300)
  await redis.stop()
  t.equal((await first).statusCode, 204)
  await sleep(500) // the background retry fails too
  await redis.start()
  await redisReady(app)
  const waiting = await app.inject(call('lost-1', slow))
  t.equal(waiting.statusCode, 409, 'a duplicate waits for the holder\'s deadline, then gives up')
  t.match(waiting.json(), { code: 'IDEMPOTENCY_OUTCOME_UNKNOWN', detail: { outcome: 'unknown' } })
  t.equal((await app.inject(call('lost-1', slow))).json().code, 'IDEMPOTENCY_OUTCOME_UNKNOWN', 'and stays so')
  t.equal(sandbox.app.sandbox.requests.length, 1, 'WeChat Pay saw one call')
  t.equal(logs.find('the answer of an Idempotency-Key call could not be recorded: the key stays claimed, with an unknown outcome').length, 1)
})

t.test('waiting duplicates cost a few Redis commands each, stop when their caller leaves, and are capped', async t => {
  const redis = await testRedis(t)
  const sandbox = await testSandbox(t, { slowMs: 3000 })
  const { app } = await testGateway(t, { sandbox, config: { redisUrl: redis.url }, wechat: { timeoutMs: 5000 } })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
  const post = (signal?: AbortSignal) => request(`${base}/payscore/partner/serviceorder/SANDBOX_SLOW/pay`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...auth(), 'idempotency-key': 'dup-1' }, body: JSON.stringify(collect), ...(signal !== undefined && { signal })
  })
  const before = await redis.commands()
  const holder = post()
  await sleep(200)
  const leave = new AbortController()
  const duplicates = Array.from({ length: 200 }, () => post(leave.signal).then(r => r.statusCode, () => 'left'))
  await sleep(1000)
  leave.abort()
  const outcomes = await Promise.all(duplicates)
  t.equal(outcomes.filter(o => o === 409).length, 200 - MAX_WAITERS_PER_KEY, 'beyond the cap: 409 at once')
  t.equal(outcomes.filter(o => o === 'left').length, MAX_WAITERS_PER_KEY, 'the others waited until their caller left')
  const afterLeaving = await redis.commands()
  await sleep(1200)
  t.ok(await redis.commands() - afterLeaving <= 2, 'nobody polls once every waiting caller has left')
  t.equal((await holder).statusCode, 204)
  const used = await redis.commands() - before
  t.ok(used < 600, `${used} Redis commands for one call and 200 duplicates`)
  t.equal(sandbox.app.sandbox.requests.length, 1)
})

t.test('Redis down: calls without a key go on at once (rate limits fail open); one clear log line, no stack', async t => {
  const redis = await testRedis(t)
  const { app, logs, sandbox } = await testGateway(t, { config: { redisUrl: redis.url, rateLimit: { max: 100, windowMs: 1000 } } })
  await redis.stop()
  for (let i = 0; i < 50 && app.redis?.status === 'ready'; i++) await sleep(20)
  const started = Date.now()
  const res = await app.inject(call(undefined))
  t.equal(res.statusCode, 204, 'served: a Redis outage does not stop calls without a key')
  t.ok(Date.now() - started < 400, 'without waiting on reconnects')
  const keyed = await app.inject(call('k-down'))
  t.equal(keyed.statusCode, 503)
  t.match(keyed.json(), { code: 'IDEMPOTENCY_STORE_UNAVAILABLE', detail: { outcome: 'not_executed' } })
  const outage = (): Array<Record<string, unknown>> => logs.lines.filter(l => typeof l.msg === 'string' && (l.msg as string).startsWith('Redis (REDIS_URL) at 127.0.0.1:'))
  for (let i = 0; i < 50 && outage().length === 0; i++) await sleep(20)
  await sleep(300) // a few reconnect attempts
  const down = outage()
  t.equal(down.length, 1, 'one line for the outage, not one per reconnect attempt')
  t.match(down[0]?.msg, /cannot be reached: calls with an Idempotency-Key get 503 until it is back/)
  t.notOk(logs.raw.some(l => l.includes('MaxRetriesPerRequestError') || l.includes('"stack"')), 'no driver stack')
  t.equal(sandbox.app.sandbox.requests.length, 1)
  await redis.start()
  await redisReady(app)
  t.equal((await app.inject(call('k-back'))).statusCode, 204, 'back to normal once Redis is')
  t.ok(logs.lines.some(l => typeof l.msg === 'string' && (l.msg as string).includes('is reachable again')))
})
