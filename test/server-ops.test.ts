import { spawn } from 'node:child_process'
import { createServer as createHttpServer } from 'node:http'
import { connect, type Socket } from 'node:net'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { request } from 'undici'
import { freePort, testSandbox, TOKENS } from './helpers.js'
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

t.test('Redis unreachable at start: the gateway starts not ready, says why, and recovers when Redis comes up', async t => {
  const sandbox = await testSandbox(t)
  const port = await freePort()
  const server = start(t, liveEnv(sandbox, { REDIS_URL: `redis://:s3cret@127.0.0.1:${port}` }))
  const url = await server.listening
  const ready = await request(`${url}/readyz`)
  t.equal(ready.statusCode, 503)
  t.match(await ready.body.json(), { problems: [/redis is/] })
  t.ok(server.out.some(l => l.includes(`Redis (REDIS_URL) at 127.0.0.1:${port} cannot be reached`)), 'the log names the setting and the address')
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
