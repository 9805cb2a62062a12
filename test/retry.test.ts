import t from 'tap'
import { retryOptions } from '../src/wechat/retry.js'
import { auth, freePort, testGateway, testSandbox } from './helpers.js'

const json = { 'content-type': 'application/json' }
const collect = { service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' }

t.test('transient failures are retried with the same signed request, invisibly to the caller', async t => {
  const { app, sandbox, logs } = await testGateway(t)
  const cases: Array<[string, string]> = [
    ['SYSTEM_ERROR_ONCE', '500'],
    ['SERVICE_UNAVAILABLE_ONCE', '503'],
    ['BAD_GATEWAY_ONCE', '502'],
    ['RATELIMIT_EXCEEDED_ONCE', '429'],
    ['ACCEPTED_ONCE', '202']
  ]
  for (const [fault, reason] of cases) {
    sandbox.app.sandbox.requests.length = 0
    const res = await app.inject({ method: 'POST', url: `/payscore/partner/serviceorder/SANDBOX_${fault}/pay`, headers: { ...json, ...auth() }, payload: collect })
    t.equal(res.statusCode, 204, fault)
    const seen = sandbox.app.sandbox.requests
    t.equal(seen.length, 2, `${fault}: two attempts reached the upstream`)
    t.equal(seen[0]?.headers.authorization, seen[1]?.headers.authorization, 'the very same signed request')
    t.match(logs.find('operation').at(-1), { status: 204, upstream: { attempts: 2, retried: [reason] } })
  }
})

t.test('a reset before any answer is retried', async t => {
  const { app, sandbox, logs } = await testGateway(t)
  const res = await app.inject({ method: 'POST', url: '/payscore/partner/serviceorder/SANDBOX_RESET_ONCE/pay', headers: { ...json, ...auth() }, payload: collect })
  t.equal(res.statusCode, 204)
  t.equal(sandbox.app.sandbox.requests.length, 2)
  t.match(logs.find('operation')[0], { upstream: { attempts: 2, retried: [/ECONNRESET|UND_ERR_SOCKET|EPIPE/] } })
})

t.test('retries are bounded: a failure that persists is reported after 3 attempts', async t => {
  const { app, sandbox } = await testGateway(t)
  const persistent = await app.inject({ method: 'POST', url: '/payscore/partner/serviceorder/SANDBOX_SYSTEM_ERROR/pay', headers: { ...json, ...auth() }, payload: collect })
  t.equal(persistent.statusCode, 502)
  t.equal(persistent.json().code, 'SYSTEM_ERROR')
  t.equal(sandbox.app.sandbox.requests.length, 3)
  sandbox.app.sandbox.requests.length = 0
  const accepted = await app.inject({ method: 'POST', url: '/payscore/partner/serviceorder/SANDBOX_ACCEPTED/pay', headers: { ...json, ...auth() }, payload: collect })
  t.equal(accepted.statusCode, 502)
  t.match(accepted.json(), { code: 'UPSTREAM_BAD_RESPONSE', message: /kept answering 202/, detail: { outcome: 'unknown' } })
  t.equal(sandbox.app.sandbox.requests.length, 3)
  sandbox.app.sandbox.requests.length = 0
  const reset = await app.inject({ method: 'POST', url: '/payscore/partner/serviceorder/SANDBOX_RESET/pay', headers: { ...json, ...auth() }, payload: collect })
  t.match(reset.json(), { code: 'UPSTREAM_UNAVAILABLE', detail: { outcome: 'unknown' } }, 'a reset after sending: the outcome is unknown')
})

t.test('never retried: a read timeout, a failed verification, a refusal', async t => {
  const sandbox = await testSandbox(t, { slowMs: 1000 })
  const { app } = await testGateway(t, { sandbox, wechat: { timeoutMs: 200 } })
  for (const [fault, status] of [['SLOW', 504], ['BAD_SIGNATURE', 502], ['SIGNTEST', 502], ['ORDER_DONE', 400], ['NO_AUTH', 403], ['SIGN_ERROR', 502]] as const) {
    sandbox.app.sandbox.requests.length = 0
    const res = await app.inject({ method: 'POST', url: `/payscore/partner/serviceorder/SANDBOX_${fault}/pay`, headers: { ...json, ...auth() }, payload: collect })
    t.equal(res.statusCode, status, fault)
    t.equal(sandbox.app.sandbox.requests.length, 1, `${fault}: one attempt only`)
  }
})

t.test('the backup host is used only when the primary cannot be connected to', async t => {
  const sandbox = await testSandbox(t)
  const dead = `http://127.0.0.1:${await freePort()}`
  const { app, logs } = await testGateway(t, { sandbox, wechat: { baseUrl: dead, backupBaseUrl: sandbox.url } })
  const res = await app.inject({ method: 'POST', url: '/payscore/partner/serviceorder/1/pay', headers: { ...json, ...auth() }, payload: collect })
  t.equal(res.statusCode, 204)
  t.match(logs.find('operation')[0], { upstream: { failover: true, upstreamStatus: 204, retried: ['ECONNREFUSED', 'ECONNREFUSED'] } })

  // The primary answered (even badly): no failover, whatever happens next.
  const { app: primary, sandbox: s2 } = await testGateway(t, { sandbox, wechat: { backupBaseUrl: dead } })
  const failed = await primary.inject({ method: 'POST', url: '/payscore/partner/serviceorder/SANDBOX_SYSTEM_ERROR/pay', headers: { ...json, ...auth() }, payload: collect })
  t.equal(failed.statusCode, 502)
  t.equal(failed.json().code, 'SYSTEM_ERROR')
  t.ok(s2.app.sandbox.requests.length >= 3)
})

t.test('retry policy: full jitter, Retry-After, count and time budget', async t => {
  const policy = { maxRetries: 2, baseDelayMs: 100, maxDelayMs: 1000, budgetMs: 10_000 }
  const decide = (err: object, attempts = { count: 1, retried: [] as string[] }, startedAt = Date.now(), random = () => 0.5) =>
    new Promise<{ retried: boolean, attempts: typeof attempts }>(resolve => {
      const options = retryOptions(policy, attempts, startedAt, random) as { retry: (e: object, c: unknown, cb: (e: Error | null) => void) => void }
      options.retry(err, {}, e => resolve({ retried: e === null, attempts }))
    })
  const status = (code: number, headers = {}) => Object.assign(new Error('x'), { code: 'UND_ERR_REQ_RETRY', statusCode: code, headers })
  t.equal((await decide(status(500))).retried, true)
  t.equal((await decide(status(400))).retried, false, '4xx is final')
  t.equal((await decide(Object.assign(new Error('x'), { code: 'UND_ERR_HEADERS_TIMEOUT' }))).retried, false, 'a read timeout is final')
  t.equal((await decide(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }))).retried, true)
  t.equal((await decide(status(500), { count: 3, retried: ['500', '500'] })).retried, false, 'at most 2 retries')
  t.equal((await decide(status(500), undefined, Date.now() - 9_990)).retried, false, 'not past the time budget')
  const started = Date.now()
  t.equal((await decide(status(429, { 'retry-after': '0.2' }))).retried, true)
  t.ok(Date.now() - started >= 190, 'Retry-After is honoured')
})
