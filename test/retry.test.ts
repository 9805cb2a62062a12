import t from 'tap'
import { OPERATION_RETRY_POLICY, READ_RETRY_POLICY, retryDelayMs, retryMayStart, retryReason } from '../src/wechat/retry.js'
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
  t.equal(accepted.statusCode, 503)
  t.match(accepted.json(), { code: 'UPSTREAM_RETRY_LATER', message: /202/, detail: { outcome: 'not_executed', upstream_status: 202 } })
  t.equal(accepted.headers['retry-after'], '1')
  t.equal(sandbox.app.sandbox.requests.length, 3)
})

t.test('never retried: a read timeout, a failed verification, a refusal', async t => {
  const sandbox = await testSandbox(t, { slowMs: 1000 })
  const { app } = await testGateway(t, { sandbox, wechat: { timeoutMs: 200 } })
  for (const [fault, status] of [['SLOW', 504], ['BAD_SIGNATURE', 502], ['SIGNTEST', 502], ['ORDER_DONE', 400], ['NO_AUTH', 403], ['SIGN_ERROR', 502], ['UNSIGNED_ERROR', 502]] as const) {
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
  t.match(logs.find('operation')[0], { upstream: { failover: true, upstreamStatus: 204, retried: ['ECONNREFUSED'] } })

  // The primary answered (even badly): no failover, whatever happens next.
  const { app: primary, sandbox: s2 } = await testGateway(t, { sandbox, wechat: { backupBaseUrl: dead } })
  const failed = await primary.inject({ method: 'POST', url: '/payscore/partner/serviceorder/SANDBOX_SYSTEM_ERROR/pay', headers: { ...json, ...auth() }, payload: collect })
  t.equal(failed.statusCode, 502)
  t.equal(failed.json().code, 'SYSTEM_ERROR')
  t.ok(s2.app.sandbox.requests.length >= 3)
})

t.test('retry policy: what is sent again, full jitter, Retry-After', async t => {
  const op = OPERATION_RETRY_POLICY
  t.equal(retryReason(op, { kind: 'not_sent', reason: 'ECONNREFUSED' }), 'ECONNREFUSED', 'never connected: certainly not carried out')
  t.equal(retryReason(op, { kind: 'answered', status: 500 }), '500', 'WeChat Pay\'s verified "not done"')
  t.equal(retryReason(op, { kind: 'answered', status: 202 }), '202')
  t.equal(retryReason(op, { kind: 'answered', status: 429 }), '429')
  t.equal(retryReason(op, { kind: 'answered', status: 400 }), undefined, 'a refusal is final')
  t.equal(retryReason(op, { kind: 'answered', status: 204 }), undefined)
  t.equal(retryReason(op, { kind: 'lost', reason: 'ECONNRESET' }), undefined, 'a reset may come after the request was read')
  t.equal(retryReason(op, { kind: 'lost', reason: 'TIMEOUT' }), undefined)
  t.equal(retryReason(op, { kind: 'lost', reason: 'UNSIGNED_502' }), undefined, 'an unverified answer may come from a proxy that forwarded the call')
  t.equal(retryReason(READ_RETRY_POLICY, { kind: 'lost', reason: 'TIMEOUT' }), 'TIMEOUT', 'a read is retried after anything transient')
  t.equal(retryDelayMs(op, 1, undefined, () => 0.5), 50, 'full jitter over the base delay')
  t.equal(retryDelayMs(op, 3, undefined, () => 1), 400, 'doubling')
  t.equal(retryDelayMs(op, 10, undefined, () => 1), 1000, 'capped')
  t.equal(retryDelayMs(op, 1, '0.2'), 200, 'Retry-After is honoured')
  t.equal(retryDelayMs(op, 1, '30'), 1000, 'up to the cap')
})

t.test('when a retry may start: operations within the budget, reads while the call\'s deadline leaves a useful attempt', async t => {
  const read = READ_RETRY_POLICY
  t.equal(read.budgetMs, OPERATION_RETRY_POLICY.budgetMs, 'one deadline for both: the longest call (maxCallMs) holds for reads too')
  t.ok(retryMayStart(OPERATION_RETRY_POLICY, 3000, 10_000))
  t.notOk(retryMayStart(OPERATION_RETRY_POLICY, 10_050, 10_000), 'an operation timed out with the default timeout is not retried')
  t.ok(retryMayStart(read, 10_050, 10_000), 'a read timed out with the default timeout is: ~3 s of its 13 s deadline left')
  t.ok(retryMayStart(read, 12_000, 10_000), 'at least 1 s left')
  t.notOk(retryMayStart(read, 12_001, 10_000), 'less than 1 s left: not worth an attempt')
  t.ok(retryMayStart(read, 3000, 200), 'short attempts: one whole attempt must fit')
  t.notOk(retryMayStart(read, 3001, 200))
})

t.test('a misbehaving upstream: cut-off body, unsigned odd detail, proxy HTML — each sent once, none claimed as not executed', async t => {
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
  t.equal(odd.statusCode, 502, 'unsigned: not taken for WeChat Pay\'s refusal')
  t.same(odd.json().detail, { outcome: 'unknown', upstream_status: 400, unverified: { code: 'ORDER_DONE', message: '订单已完成' } }, 'a detail that is not an object is dropped')

  seen.length = 0
  const proxy = await call('html')
  t.equal(proxy.statusCode, 502)
  t.match(proxy.json(), { code: 'UPSTREAM_UNVERIFIED_ERROR', detail: { outcome: 'unknown', upstream_status: 502 } }, 'a body-less 502 may come after forwarding')
  t.equal(seen.length, 1, 'an unsigned 502 is not WeChat Pay\'s "send it again"')
  const again = await call('html')
  t.equal(again.headers['idempotent-replayed'], 'true', 'an unknown outcome is kept: the same key does not call again')
  t.equal(seen.length, 1)
})
