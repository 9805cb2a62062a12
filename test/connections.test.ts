import { connect, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { request } from 'undici'
import { openFileLimit } from '../src/plugins/connections.js'
import { auth, TOKENS, testGateway, type GatewayOptions } from './helpers.js'

/**
 * Slow, garbage and vanishing clients (issue: "never twice, never stuck"): each gets a true answer or a clear,
 * closed refusal, and none can hold the gateway's connections for ever.
 */

const collect = JSON.stringify({ service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' })

async function listening (t: Test, opts: GatewayOptions = {}) {
  const gw = await testGateway(t, opts)
  await gw.app.listen({ host: '127.0.0.1', port: 0 })
  const port = (gw.app.server.address() as { port: number }).port
  return { ...gw, port, base: `http://127.0.0.1:${port}` }
}

/** Writes raw bytes on a new connection; resolves with everything read until the server closes it (or `waitMs`). */
function raw (port: number, data: string, waitMs = 3000): Promise<{ text: string, closed: boolean, socket: Socket }> {
  return new Promise(resolve => {
    const socket = connect(port, '127.0.0.1', () => socket.write(data))
    let text = ''
    socket.on('data', chunk => { text += chunk.toString() })
    socket.on('error', () => {})
    const timer = setTimeout(() => resolve({ text, closed: false, socket }), waitMs)
    socket.on('close', () => { clearTimeout(timer); resolve({ text, closed: true, socket }) })
  })
}

const post = (path: string, body: string, token = TOKENS.billing, length = Buffer.byteLength(body)) =>
  `POST ${path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n${body}`

t.test('a valid call followed by garbage gets its true answer, never a false 400', async t => {
  const { port, sandbox } = await listening(t)
  sandbox.app.sandbox.requests.length = 0
  const res = await raw(port, post('/payscore/partner/serviceorder/1234323JKHDFE1243252/pay', collect) + 'GARBAGE NOT HTTP\r\n\r\n')
  t.match(res.text, /^HTTP\/1\.1 204 No Content\r\n/, 'the operation\'s own answer')
  t.notMatch(res.text, /HTTP\/1\.1 400/, 'no refusal after it')
  t.ok(res.closed, 'then the connection is closed')
  t.equal(sandbox.app.sandbox.requests.length, 1)
})

t.test('Node\'s refusals in the gateway\'s shape: 400 for garbage, 431 for huge headers', async t => {
  const { port, sandbox } = await listening(t)
  const garbage = await raw(port, 'HELLO\r\n\r\n')
  t.match(garbage.text, /^HTTP\/1\.1 400 BAD REQUEST\r\n/)
  t.match(garbage.text, /x-request-id: [0-9a-f-]{36}\r\n/)
  t.match(JSON.parse(garbage.text.split('\r\n\r\n')[1] ?? ''), { code: 'BAD_REQUEST', detail: { outcome: 'not_executed' } })
  t.ok(garbage.closed)
  const huge = await raw(port, `GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`)
  t.match(huge.text, /^HTTP\/1\.1 431 HEADERS TOO LARGE\r\n/)
  t.match(huge.text, /"code":"HEADERS_TOO_LARGE"/)
  t.equal(sandbox.app.sandbox.requests.length, 0)
})

t.test('a body that does not arrive in time: 408 and closed; an idle connection is closed too', async t => {
  const { port, sandbox } = await listening(t, { config: { http: { requestTimeoutMs: 500, keepAliveTimeoutMs: 300, maxConnections: 100, maxConnectionsPerAddress: 0 } } })
  const started = Date.now()
  const slow = await raw(port, post('/payscore/partner/serviceorder/1/pay', '{"sub_mchid":"19', TOKENS.billing, 100))
  t.match(slow.text, /^HTTP\/1\.1 408 REQUEST TIMEOUT\r\n/)
  t.match(slow.text, /"code":"REQUEST_TIMEOUT"/)
  t.ok(slow.closed)
  t.ok(Date.now() - started < 2500, 'within the request timeout and one check interval')
  const idle = await raw(port, '')
  t.ok(idle.closed, 'a connection that sends nothing is not kept')
  const kept = await raw(port, 'GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n')
  t.match(kept.text, /^HTTP\/1\.1 200/)
  t.ok(kept.closed, 'an idle keep-alive connection is closed after HTTP_KEEP_ALIVE_TIMEOUT_MS')
  t.equal(sandbox.app.sandbox.requests.length, 0)
})

t.test('a 401 before the body is read closes the connection at once', async t => {
  const { port } = await listening(t)
  const started = Date.now()
  const res = await raw(port, post('/payscore/partner/serviceorder/1/pay', '{"sub_mchid":"19', 'wrong-token-0123456789abcdef', 100))
  t.match(res.text, /^HTTP\/1\.1 401 Unauthorized\r\n/)
  t.match(res.text, /connection: close/i)
  t.ok(res.closed)
  t.ok(Date.now() - started < 1000, 'not held until the request timeout')
})

t.test('connections are capped per client address and in all', async t => {
  const { port, base } = await listening(t, { config: { http: { requestTimeoutMs: 10_000, keepAliveTimeoutMs: 5000, maxConnections: 8, maxConnectionsPerAddress: 3 } } })
  const open = await Promise.all(Array.from({ length: 3 }, () => raw(port, 'GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n', 300)))
  t.ok(open.every(o => !o.closed && o.text.startsWith('HTTP/1.1 200')), 'three kept-alive connections')
  const fourth = await raw(port, 'GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n', 1000)
  t.ok(fourth.closed, 'a fourth from the same address is refused')
  t.equal(fourth.text, '')
  for (const o of open) o.socket.destroy()
  await sleep(100)
  t.equal((await request(`${base}/healthz`)).statusCode, 200, 'served again once they are gone')
  t.equal(openFileLimit(() => 'Limit  Soft Limit  Hard Limit  Units\nMax open files            1024                 4096                 files\n'), 1024)
  t.equal(openFileLimit(() => { throw new Error('no /proc') }), undefined)
})

t.test('a caller that hangs up mid-call: the call finishes, and is audited and counted', async t => {
  const sandbox = await (await import('./helpers.js')).testSandbox(t, { slowMs: 500 })
  const { base, logs, app } = await listening(t, { sandbox })
  const leave = new AbortController()
  const pending = request(`${base}/payscore/partner/serviceorder/SANDBOX_SLOW/pay`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...auth() }, body: collect, signal: leave.signal
  }).catch(() => 'left')
  await sleep(150)
  leave.abort()
  t.equal(await pending, 'left')
  for (let i = 0; i < 50 && logs.find('operation').length === 0; i++) await sleep(50)
  t.match(logs.find('operation')[0], { status: 204, callerGone: true, client: '127.0.0.1', upstream: { upstreamStatus: 204, verified: true } })
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /wechatpay_gateway_upstream_duration_seconds_count\{operation="payscorePartnerCollect",merchant="partner",code="OK"\} 1/)
  t.match(metrics, /wechatpay_gateway_requests_total\{route="\/payscore\/partner\/serviceorder\/:out_order_no\/pay",method="POST",status="204",caller="billing"\} 1/)
})
