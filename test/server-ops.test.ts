import { spawn } from 'node:child_process'
import { createServer as createHttpServer } from 'node:http'
import { connect, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { request } from 'undici'
import { freePort, testSandbox, TOKENS } from './helpers.js'
import { until } from './notify-helpers.js'
import { liveEnv, post, start } from './process.js'

/** The real server process under an operator's conditions: few open files, Redis away, a trace collector. */

t.test('more connections than open files: refused, and the process lives on', async t => {
  const sandbox = await testSandbox(t)
  const server = start(t, liveEnv(sandbox, { HTTP_MAX_CONNECTIONS_PER_ADDRESS: '0' }), { fileLimit: 600 })
  const url = await server.listening
  t.ok(server.out.some(l => l.includes('connections are capped at 344')), 'the cap follows the open-file limit')
  const { port } = new URL(url)
  // Slow clients with a wrong token, each sending headers and part of a body, then nothing.
  const sockets = await Promise.all(Array.from({ length: 800 }, () => new Promise<Socket>(resolve => {
    const socket = connect(Number(port), '127.0.0.1', () => {
      socket.write('POST /contracts/1/fail-notify HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer wrong-token-0123456789\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"appid":"wx')
      resolve(socket)
    })
    socket.on('error', () => resolve(socket))
  })))
  await new Promise(resolve => setTimeout(resolve, 1500))
  t.equal(server.child.exitCode, null, 'still running')
  for (const socket of sockets) socket.destroy()
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal((await request(`${url}/healthz`)).statusCode, 200)
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0)
})

/** The notification listener's port (NOTIFY_PORT), from the start log. */
async function notifyPort (server: ReturnType<typeof start>): Promise<number> {
  const listening = (): string | undefined => server.out.find(l => l.includes('WeChat Pay notifications: listening'))
  await until(() => listening() !== undefined)
  return Number(new URL((JSON.parse(listening() ?? '{}') as { address: string }).address).port)
}

/** Writes raw bytes on a new connection; resolves with what was read until the server closed it (or `waitMs`). */
function raw (port: number, data: string, waitMs = 3000): Promise<{ text: string, closed: boolean, ms: number, socket: Socket }> {
  const started = Date.now()
  return new Promise(resolve => {
    const socket = connect(port, '127.0.0.1', () => socket.write(data))
    let text = ''
    socket.on('data', chunk => { text += chunk.toString() })
    socket.on('error', () => {})
    const timer = setTimeout(() => resolve({ text, closed: false, ms: Date.now() - started, socket }), waitMs)
    socket.on('close', () => { clearTimeout(timer); resolve({ text, closed: true, ms: Date.now() - started, socket }) })
  })
}

t.test('the notification listener (NOTIFY_PORT) has the main port\'s protections: 408, 400 and 431 in the gateway\'s shape, a cap per address', async t => {
  const sandbox = await testSandbox(t)
  const server = start(t, liveEnv(sandbox, { NOTIFY_HOST: '127.0.0.1', HTTP_REQUEST_TIMEOUT_MS: '2000', HTTP_KEEP_ALIVE_TIMEOUT_MS: '1000', HTTP_MAX_CONNECTIONS_PER_ADDRESS: '4' }))
  await server.listening
  const port = await notifyPort(server)
  const notify = 'POST /wechatpay/notify/partner HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"id":"EV-'
  const slow = await raw(port, notify, 8000)
  t.match(slow.text, /^HTTP\/1\.1 408 REQUEST TIMEOUT\r\n/, 'a body that does not arrive in time')
  t.match(JSON.parse(slow.text.split('\r\n\r\n')[1] ?? '{}'), { code: 'REQUEST_TIMEOUT' })
  t.ok(slow.closed && slow.ms < 5000, `closed within HTTP_REQUEST_TIMEOUT_MS and a check interval (${slow.ms} ms)`)
  const garbage = await raw(port, 'HELLO\r\n\r\n')
  t.match(garbage.text, /^HTTP\/1\.1 400 BAD REQUEST\r\n[^]*x-request-id: [0-9a-f-]{36}\r\n/)
  t.match(garbage.text, /"code":"BAD_REQUEST"/)
  const huge = await raw(port, `GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`)
  t.match(huge.text, /^HTTP\/1\.1 431 HEADERS TOO LARGE\r\n[^]*"code":"HEADERS_TOO_LARGE"/)
  const kept = await raw(port, 'GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n', 4000)
  t.ok(kept.text.startsWith('HTTP/1.1 200') && kept.closed, 'an idle keep-alive connection is closed')

  // Held by requests still arriving (until HTTP_REQUEST_TIMEOUT_MS), not by keep-alive (1 s): a margin for slow hosts.
  const held = await Promise.all(Array.from({ length: 4 }, () => raw(port, 'GET /healthz HTTP/1.1\r\nHost: gw\r\n', 300)))
  t.ok(held.every(h => !h.closed), 'four connections from one address')
  const fifth = await raw(port, 'GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n', 1000)
  t.ok(fifth.closed && fifth.text === '', 'a fifth is refused (HTTP_MAX_CONNECTIONS_PER_ADDRESS)')
  for (const h of held) h.socket.destroy()
  await sleep(100)
  t.equal((await request(`http://127.0.0.1:${port}/healthz`)).statusCode, 200, 'served again once they are gone')
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0)
})

t.test('slow connections to NOTIFY_PORT beyond the open files: refused, the main port still serves, the process lives on', async t => {
  const sandbox = await testSandbox(t)
  const server = start(t, liveEnv(sandbox, { NOTIFY_HOST: '127.0.0.1', HTTP_MAX_CONNECTIONS_PER_ADDRESS: '0' }), { fileLimit: 400 })
  const url = await server.listening
  const port = await notifyPort(server)
  // Half-sent notifications, then nothing.
  const sockets = await Promise.all(Array.from({ length: 600 }, () => new Promise<Socket>(resolve => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write('POST /wechatpay/notify/partner HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"id":"EV-')
      resolve(socket)
    })
    socket.on('error', () => resolve(socket))
  })))
  await sleep(1500)
  t.equal(server.child.exitCode, null, 'still running')
  t.equal((await request(`${url}/healthz`)).statusCode, 200, 'the internal port is not starved by the internet-facing one')
  for (const socket of sockets) socket.destroy()
  await sleep(300)
  t.equal((await request(`http://127.0.0.1:${port}/healthz`)).statusCode, 200)
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0)
})

t.test('Redis unreachable at start: the gateway starts not ready, says why, and recovers when Redis comes up', async t => {
  const sandbox = await testSandbox(t)
  const port = await freePort()
  const server = start(t, liveEnv(sandbox, { REDIS_URL: `redis://:s3cret@127.0.0.1:${port}` }))
  const url = await server.listening
  const ready = await request(`${url}/readyz`)
  t.equal(ready.statusCode, 503)
  t.match(await ready.body.json(), { problems: [/redis is/] })
  // Logged when the first connection attempt fails, which may come a moment after the listener is up.
  const named = (): boolean => server.out.some(l => l.includes(`Redis (REDIS_URL) at 127.0.0.1:${port} cannot be reached`))
  for (let i = 0; i < 50 && !named(); i++) await new Promise(resolve => setTimeout(resolve, 100))
  t.ok(named(), 'the log names the setting and the address')
  t.notOk(server.out.some(l => l.includes('s3cret')), 'never the password')
  t.equal((await post(url, '/contracts/1/fail-notify', {}, TOKENS.billing)).statusCode, 204, 'calls without a key are served meanwhile')
  const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--requirepass', 's3cret'], { stdio: 'ignore' })
  t.teardown(() => { redis.kill('SIGKILL') })
  let status = 503
  for (let i = 0; i < 100 && status !== 200; i++) {
    await new Promise(resolve => setTimeout(resolve, 100))
    status = (await request(`${url}/readyz`)).statusCode
  }
  t.equal(status, 200, 'ready once Redis is up')
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0)
})

t.test('OTEL_EXPORTER_OTLP_ENDPOINT turns tracing on; the last spans are flushed at shutdown', async t => {
  const names: string[] = []
  const receiver = createHttpServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString()) as { resourceSpans: Array<{ scopeSpans: Array<{ spans: Array<{ name: string }> }> }> }
      for (const r of body.resourceSpans) for (const s of r.scopeSpans) names.push(...s.spans.map(span => span.name))
      res.writeHead(200).end('{}')
    })
  })
  await new Promise<void>(resolve => receiver.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { receiver.close() })
  const dir = await mkdtemp(join(tmpdir(), 'gw-server-otel-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const server = start(t, { SANDBOX_DIR: dir, OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(receiver.address() as { port: number }).port}` })
  const url = await server.listening
  t.ok(server.out.some(l => l.includes('OpenTelemetry tracing is on')))
  t.equal((await post(url, '/contracts/1/fail-notify', {})).statusCode, 204)
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0)
  t.ok(names.includes('POST /contracts/:contract_id/fail-notify'), `exported: ${names.join(', ')}`)
})
