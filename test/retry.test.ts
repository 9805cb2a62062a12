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

t.test('a reset after connecting is never retried nor failed over: the request may have been carried out', async t => {
  const sandbox = await testSandbox(t)
  const dead = `http://127.0.0.1:${await freePort()}`
  const { app, logs } = await testGateway(t, { sandbox, wechat: { backupBaseUrl: dead } })
  const res = await app.inject({ method: 'POST', url: '/payscore/partner/serviceorder/SANDBOX_RESET_ONCE/pay', headers: { ...json, ...auth() }, payload: collect })
  t.equal(res.statusCode, 502)
  t.match(res.json(), { code: 'UPSTREAM_UNAVAILABLE', detail: { outcome: 'unknown' } })
  t.equal(sandbox.app.sandbox.requests.length, 1, 'sent once')
  t.match(logs.find('operation')[0], { upstream: { attempts: 1 } })
  t.notOk((logs.find('operation')[0]?.upstream as { failover?: boolean }).failover, 'not sent to the backup host')
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
  t.equal((await decide(Object.assign(new Error('x'), { code: 'ECONNRESET' }))).retried, false, 'a reset may come after the request was read')
  t.equal((await decide(Object.assign(new Error('x'), { code: 'UND_ERR_SOCKET' }))).retried, false)
  t.match((await decide(status(503))).attempts, { answered: true }, 'an HTTP answer marks the call as seen by WeChat Pay')
  t.equal((await decide(status(500), { count: 3, retried: ['500', '500'] })).retried, false, 'at most 2 retries')
  t.equal((await decide(status(500), undefined, Date.now() - 9_990)).retried, false, 'not past the time budget')
  const started = Date.now()
  t.equal((await decide(status(429, { 'retry-after': '0.2' }))).retried, true)
  t.ok(Date.now() - started >= 190, 'Retry-After is honoured')
})

t.test('a misbehaving upstream: cut-off body, odd detail, proxy HTML — each sent once, none claimed as not executed', async t => {
  const { createServer } = await import('node:http')
  const seen: string[] = []
  const upstream = createServer((req, res) => {
    seen.push(req.headers.range ?? '')
    req.resume()
    req.on('end', () => {
      const id = req.url?.split('/')[5] ?? ''
      if (id === 'cut') {
        res.writeHead(400, { 'content-type': 'application/json', 'content-length': '100' })
        res.write('{"code":"ORDER_DONE","mess')
        setTimeout(() => res.destroy(), 20)
      } else if (id === 'nulldetail') {
        res.writeHead(400, { 'content-type': 'application/json' }).end('{"code":"ORDER_DONE","message":"订单已完成","detail":null}')
      } else {
        res.writeHead(502, { 'content-type': 'text/html' }).end('<html>502 Bad Gateway</html>')
      }
    })
  })
  await new Promise<void>(resolve => upstream.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { upstream.close() })
  const { app } = await testGateway(t, { wechat: { baseUrl: `http://127.0.0.1:${(upstream.address() as { port: number }).port}` } })
  const call = (id: string) => app.inject({ method: 'POST', url: `/payscore/partner/serviceorder/${id}/pay`, headers: { ...json, ...auth(), 'idempotency-key': `k-${id}` }, payload: collect })

  const cut = await call('cut')
  t.equal(cut.statusCode, 502)
  t.match(cut.json(), { code: 'UPSTREAM_UNAVAILABLE', detail: { outcome: 'unknown' } })
  t.same(seen, [''], 'sent once, never re-sent with a Range header')

  const odd = await call('nulldetail')
  t.equal(odd.statusCode, 400)
  t.same(odd.json(), { code: 'ORDER_DONE', message: '订单已完成' }, 'a detail that is not an object is dropped')

  seen.length = 0
  const proxy = await call('html')
  t.equal(proxy.statusCode, 502)
  t.match(proxy.json(), { code: 'UPSTREAM_BAD_RESPONSE', detail: { outcome: 'unknown' } }, 'a body-less 502 may come after forwarding')
  t.equal(seen.length, 3, '502 is retried as WeChat Pay asks')
  const again = await call('html')
  t.equal(again.headers['idempotent-replayed'], 'true', 'an unknown outcome is kept: the same key does not call again')
  t.equal(seen.length, 3)
})
