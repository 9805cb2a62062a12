import { connect } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { auth, testGateway, testSandbox } from './helpers.js'

const collect = { service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' }
const pay = (id: string) => ({ method: 'POST' as const, url: `/payscore/partner/serviceorder/${id}/pay`, headers: { 'content-type': 'application/json', ...auth(), 'idempotency-key': `k-${id}` }, payload: collect })

t.test('/readyz: ready with keys; not ready when certificates go stale; /healthz stays 200', async t => {
  const { app } = await testGateway(t)
  const ready = { usable: true, problems: [] }
  t.same((await app.inject({ method: 'GET', url: '/readyz' })).json(), { status: 'ready', problems: [], merchants: { direct: ready, partner: ready } })

  // One merchant's certificates go stale: it is listed, and the gateway stays ready for the others.
  const sandbox = await testSandbox(t, { keyMode: 'certificate' })
  const { app: cert } = await testGateway(t, { sandbox, build: { merchants: { certificates: { refreshMs: 60 } } } })
  t.equal((await cert.inject({ method: 'GET', url: '/readyz' })).statusCode, 200)
  await sandbox.close() // downloads now fail
  await sleep(200)
  const stale = await cert.inject({ method: 'GET', url: '/readyz' })
  t.same(stale.json(), {
    status: 'ready',
    problems: [],
    merchants: { direct: { usable: true, problems: ['platform certificates are not fresh'] }, partner: { usable: true, problems: ['platform certificates are not fresh'] } }
  }, 'still usable: the certificates have not expired')
  t.equal(stale.statusCode, 200)
  t.equal((await cert.inject({ method: 'GET', url: '/healthz' })).statusCode, 200)
})

t.test('/metrics: requests, upstream latency by code, retries, verification failures, certificate expiry', async t => {
  const sandbox = await testSandbox(t, { keyMode: 'certificate' })
  const { app } = await testGateway(t, { sandbox })
  for (const id of ['1', '1', 'SANDBOX_SYSTEM_ERROR_ONCE', 'SANDBOX_ORDER_DONE', 'SANDBOX_BAD_SIGNATURE']) await app.inject(pay(id))
  await app.inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: { 'content-type': 'application/json' }, payload: {} })
  const res = await app.inject({ method: 'GET', url: '/metrics' })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/plain/)
  const text = res.body
  t.match(text, /wechatpay_gateway_requests_total\{route="\/payscore\/partner\/serviceorder\/:out_order_no\/pay",method="POST",status="204",caller="billing"\} 3/)
  t.match(text, /wechatpay_gateway_requests_total\{route="\/contracts\/:contract_id\/fail-notify",method="POST",status="401",caller="unauthenticated"\} 1/)
  t.match(text, /wechatpay_gateway_request_duration_seconds_count\{route="\/payscore\/partner\/serviceorder\/:out_order_no\/pay",status="204"\} 3/)
  t.match(text, /wechatpay_gateway_upstream_duration_seconds_count\{operation="payscorePartnerCollect",merchant="partner",code="OK"\} 2/)
  t.match(text, /wechatpay_gateway_upstream_duration_seconds_count\{operation="payscorePartnerCollect",merchant="partner",code="ORDER_DONE"\} 1/)
  t.match(text, /wechatpay_gateway_upstream_duration_seconds_count\{operation="payscorePartnerCollect",merchant="partner",code="UPSTREAM_SIGNATURE_INVALID"\} 1/)
  t.match(text, /wechatpay_gateway_upstream_retries_total\{operation="payscorePartnerCollect",reason="500",merchant="partner"\} 1/)
  t.match(text, /wechatpay_gateway_verification_failures_total\{reason="BAD_SIGNATURE",merchant="partner"\} 1/)
  t.match(text, /wechatpay_gateway_idempotent_replays_total\{operation="payscorePartnerCollect",merchant="partner"\} 1/)
  t.match(text, /wechatpay_gateway_platform_certificate_expiry_seconds\{merchant="direct"\} \d{9}/)
  t.match(text, /wechatpay_gateway_platform_certificate_expiry_seconds\{merchant="partner"\} \d{9}/)
  t.match(text, /process_resident_memory_bytes/)
  // Public-key mode has no platform certificates: no expiry is reported (a 0 would fire an expiry alert for ever).
  const { app: publicKey } = await testGateway(t)
  t.notMatch((await publicKey.inject({ method: 'GET', url: '/metrics' })).body, /^wechatpay_gateway_platform_certificate_expiry_seconds/m)
  const { app: off } = await testGateway(t, { config: { metrics: false } })
  t.equal((await off.inject({ method: 'GET', url: '/metrics' })).statusCode, 404)
})

t.test('one audit line per operation, with everything an SRE needs and no secret', async t => {
  const { app, logs } = await testGateway(t)
  await app.inject(pay('SANDBOX_SYSTEM_ERROR_ONCE'))
  const [line] = logs.find('operation')
  t.match(line, {
    level: 'info',
    reqId: /^[0-9a-f-]{36}$/,
    caller: 'billing',
    operation: 'payscorePartnerCollect',
    params: { out_order_no: 'SANDBOX_SYSTEM_ERROR_ONCE' },
    idempotencyKey: 'k-SANDBOX_SYSTEM_ERROR_ONCE',
    replayed: false,
    status: 204,
    ms: Number,
    upstream: { upstreamStatus: 204, requestId: /^[0-9a-f]{32}$/, attempts: 2, retried: ['500'], verified: true, ms: Number }
  })
})

t.test('event-loop pressure sheds load with 503', async t => {
  const { app } = await testGateway(t, { config: { maxEventLoopDelayMs: 5 } })
  await app.ready()
  let res = await app.inject({ method: 'GET', url: '/healthz' })
  for (let i = 0; i < 30 && res.statusCode !== 503; i++) {
    const end = Date.now() + 400
    while (Date.now() < end) { /* block the event loop */ }
    await sleep(100)
    res = await app.inject({ method: 'GET', url: '/healthz' })
  }
  t.equal(res.statusCode, 503)
  t.match(res.json(), { code: 'OVERLOADED' })
  t.equal(res.headers['retry-after'], '1')
})

t.test('shutdown: calls in flight cut by the grace period answer "unknown"; calls after closing get SHUTTING_DOWN', async t => {
  const sandbox = await testSandbox(t, { slowMs: 1000 })
  const { app, logs } = await testGateway(t, { sandbox })
  const inFlight = app.inject({ method: 'POST', url: '/payscore/partner/serviceorder/SANDBOX_SLOW/pay', headers: { 'content-type': 'application/json', ...auth() }, payload: { sub_mchid: '1900000109' } })
  await new Promise(resolve => setTimeout(resolve, 200))
  app.lifecycle.abortCalls()
  const cut = await inFlight
  t.equal(cut.statusCode, 502)
  t.match(cut.json(), { code: 'UPSTREAM_UNAVAILABLE', message: /shutting down/, detail: { outcome: 'unknown' } })
  t.match(logs.find('operation').at(-1), { status: 502, upstream: { sent: true } }, 'audited')

})

t.test('shutdown: a call answered while closing closes its connection; one that still arrives gets SHUTTING_DOWN', async t => {
  const sandbox = await testSandbox(t, { slowMs: 800 })
  const { app } = await testGateway(t, { sandbox })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }
  // Two calls pipelined on one connection: the first is in flight when closing begins.
  const call = (path: string) => `POST ${path} HTTP/1.1\r\nHost: gw\r\nAuthorization: ${auth().authorization}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`
  const answers = new Promise<string>(resolve => {
    const socket = connect(port, '127.0.0.1', () => socket.write(call('/contracts/SANDBOX_SLOW/fail-notify') + call('/contracts/1/fail-notify')))
    let text = ''
    socket.on('data', chunk => { text += chunk.toString() })
    socket.on('close', () => resolve(text))
  })
  await sleep(200)
  app.lifecycle.stopTaking()
  const late = await app.inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: { 'content-type': 'application/json', ...auth() }, payload: {} })
  t.equal(late.statusCode, 503)
  t.match(late.json(), { code: 'SHUTTING_DOWN', detail: { outcome: 'not_executed' } })
  t.equal(late.headers.connection, 'close')
  const closing = app.close()
  const text = await answers
  await closing
  // The pipelined call was read with the first (before closing began) and is answered before the connection closes.
  const [first, second] = text.split(/(?=HTTP\/1\.1 )/)
  t.match(first, /^HTTP\/1\.1 204 No Content\r\n/, 'the call in flight finishes')
  t.notMatch(first, /connection: close/i, 'its connection stays open for the call behind it')
  t.match(second, /^HTTP\/1\.1 204 No Content\r\n/, 'which gets its true answer; then the connection is closed (the promise above resolved)')
  t.equal(sandbox.app.sandbox.requests.length, 2, 'two calls sent, two answered')
})
