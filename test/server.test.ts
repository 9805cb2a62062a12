import { spawn } from 'node:child_process'
import { connect, type Socket } from 'node:net'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { request } from 'undici'
import type { RunningSandbox } from '../src/sandbox/index.js'
import { secretsOf, testGateway, testRedis, testSandbox, TOKENS } from './helpers.js'

/** `src/server.ts` as a real process, run with the same TypeScript loader as this test (so coverage counts too). */
function start (t: Test, env: Record<string, string>, opts: { fileLimit?: number } = {}) {
  const { NODE_ENV: _, ...inherited } = process.env
  const argv = [process.execPath, ...process.execArgv, 'src/server.ts']
  // With a file limit, through the shell's ulimit, as an operator's container would set it.
  const [command, args] = opts.fileLimit === undefined
    ? [argv[0] as string, argv.slice(1)]
    : ['bash', ['-c', `ulimit -n ${opts.fileLimit} && exec "$@"`, 'bash', ...argv]]
  const child = spawn(command, args, {
    env: { ...inherited, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const out: string[] = []
  let err = ''
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  const listening = new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n').filter(Boolean)) {
        out.push(line)
        const url = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(line)?.[1]
        if (url !== undefined && !line.includes('"component":"sandbox"')) resolve(url)
      }
    })
    child.stderr.on('data', (chunk: Buffer) => { err += chunk.toString() })
    void exited.then(code => reject(new Error(`exited with ${code}: ${err}`)))
  })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  return { child, out, stderr: () => err, exited, listening }
}

const post = (url: string, path: string, body: object, token?: string) => request(url + path, {
  method: 'POST',
  headers: { 'content-type': 'application/json', ...(token !== undefined && { authorization: `Bearer ${token}` }) },
  body: JSON.stringify(body)
})

t.test('live mode without credentials: every problem listed, exit 1', async t => {
  const server = start(t, { WECHATPAY_MODE: 'live' })
  await t.rejects(server.listening)
  t.equal(await server.exited, 1)
  const lines = server.stderr().split('\n').filter(l => l.startsWith('  - '))
  t.equal(lines.length, 5, server.stderr())
  t.match(server.stderr(), /WECHATPAY_MCHID is required in live mode/)
})

t.test('live mode with a bad key file: a clear error, exit 1', async t => {
  const sandbox = await testSandbox(t)
  const s = sandbox.gatewaySettings(1000)
  const server = start(t, {
    WECHATPAY_MODE: 'live', WECHATPAY_BASE_URL: s.baseUrl, WECHATPAY_MCHID: s.mchid, WECHATPAY_MERCHANT_SERIAL: s.merchantSerial,
    WECHATPAY_PRIVATE_KEY_FILE: s.publicKeyFile ?? '', WECHATPAY_PUBLIC_KEY_ID: s.publicKeyId ?? '', WECHATPAY_PUBLIC_KEY_FILE: s.publicKeyFile ?? '',
    GATEWAY_TOKENS: `billing:${TOKENS.billing}`
  })
  await t.rejects(server.listening)
  t.equal(await server.exited, 1)
  t.match(server.stderr(), /WECHATPAY_PRIVATE_KEY_FILE: .* is not a PEM private key/)
})

/** The settings of a live gateway in front of `sandbox`, as an operator writes them. */
function liveEnv (sandbox: RunningSandbox, extra: Record<string, string> = {}): Record<string, string> {
  const s = sandbox.gatewaySettings(0)
  return {
    WECHATPAY_MODE: 'live', WECHATPAY_BASE_URL: s.baseUrl, WECHATPAY_MCHID: s.mchid, WECHATPAY_APPID: s.appid ?? '',
    WECHATPAY_MERCHANT_SERIAL: s.merchantSerial, WECHATPAY_PRIVATE_KEY_FILE: s.privateKeyFile,
    WECHATPAY_MERCHANT_CERT_FILE: s.merchantCertFile ?? '', WECHATPAY_PUBLIC_KEY_ID: s.publicKeyId ?? '', WECHATPAY_PUBLIC_KEY_FILE: s.publicKeyFile ?? '',
    GATEWAY_TOKENS: `billing:${TOKENS.billing}`, ...extra
  }
}

t.test('SIGTERM with the default timeout and grace: a 9-second call in flight is answered, then a clean exit', async t => {
  const sandbox = await testSandbox(t, { slowMs: 9000 })
  const started = Date.now()
  // WECHATPAY_TIMEOUT_MS and SHUTDOWN_GRACE_MS as shipped; no drain delay (no load balancer here).
  const server = start(t, liveEnv(sandbox, { SHUTDOWN_DRAIN_DELAY_MS: '0' }))
  const url = await server.listening
  t.comment(`ready ${Date.now() - started} ms after spawn (tap's TypeScript loader included)`)
  t.equal((await request(`${url}/readyz`)).statusCode, 200)
  t.equal((await post(url, '/contracts/1/fail-notify', {}, TOKENS.billing)).statusCode, 204)

  const slow = post(url, '/contracts/SANDBOX_SLOW/fail-notify', {}, TOKENS.billing)
  await new Promise(resolve => setTimeout(resolve, 300))
  server.child.kill('SIGTERM')
  const answer = await slow
  t.equal(answer.statusCode, 204, 'the call in flight was answered')
  t.equal(await server.exited, 0, server.out.slice(-4).join('\n') + server.stderr())
  t.ok(server.out.some(l => l.includes('"msg":"shutting down: not ready, draining"') && l.includes('SIGTERM')))
  t.ok(server.out.some(l => l.includes('"msg":"operation"') && l.includes('SANDBOX_SLOW') && l.includes('"status":204')), 'audited')
  const leaks = server.out.filter(l => secretsOf(sandbox).some(secret => l.includes(secret)))
  t.same(leaks, [], 'no key or token in the server log')
})

t.test('SIGTERM drains: not ready at once, calls still taken for the drain delay, then the listener stops', async t => {
  const sandbox = await testSandbox(t)
  const server = start(t, liveEnv(sandbox, { SHUTDOWN_DRAIN_DELAY_MS: '1500', WECHATPAY_TIMEOUT_MS: '2000', SHUTDOWN_GRACE_MS: '8000' }))
  const url = await server.listening
  server.child.kill('SIGTERM')
  await new Promise(resolve => setTimeout(resolve, 200))
  const ready = await request(`${url}/readyz`)
  t.equal(ready.statusCode, 503, 'not ready at once: the load balancer moves away')
  t.match(await ready.body.json(), { problems: ['shutting down'] })
  const during = await post(url, '/contracts/1/fail-notify', {}, TOKENS.billing)
  t.equal(during.statusCode, 204, 'a call that still arrives is served')
  t.equal(during.headers.connection, 'close', 'and its connection closed, so the caller reconnects elsewhere')
  await new Promise(resolve => setTimeout(resolve, 1800))
  await t.rejects(request(`${url}/healthz`), { code: 'ECONNREFUSED' }, 'after the drain delay: no new connections')
  t.equal(await server.exited, 0)
})

t.test('a grace period too short for the longest call is refused at start', async t => {
  const sandbox = await testSandbox(t)
  const server = start(t, liveEnv(sandbox, { SHUTDOWN_GRACE_MS: '8000' }))
  await t.rejects(server.listening)
  t.equal(await server.exited, 1)
  t.match(server.stderr(), /SHUTDOWN_GRACE_MS \(8000\) must be at least 19000: SHUTDOWN_DRAIN_DELAY_MS \(5000\) \+ the longest call \(13000 ms: WECHATPAY_TIMEOUT_MS 10000/)
})

t.test('sandbox mode on a fresh folder: banner, warnings, routes answer; SIGHUP reloads keys', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'gw-server-sandbox-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const server = start(t, { SANDBOX_DIR: dir })
  const url = await server.listening
  t.ok(server.out.some(l => l.includes('SANDBOX MODE')), 'a banner says so')
  t.ok(server.out.some(l => l.includes('caller authentication is OFF')))
  t.equal((await post(url, '/payscore/partner/serviceorder/1234323JKHDFE1243252/pay', { sub_mchid: '1900000109' })).statusCode, 204)
  t.equal((await post(url, '/partner/contracts/1/notify', { sub_mchid: '12345512', estimated_amount: { amount: 1 } })).statusCode, 204)
  // SIGHUP reloads and nothing else: the process goes on serving, however often it comes.
  const reloads = (): number => server.out.filter(l => l.includes('credentials reloaded')).length
  for (const n of [1, 2]) {
    server.child.kill('SIGHUP')
    for (let i = 0; i < 100 && reloads() < n; i++) await new Promise(resolve => setTimeout(resolve, 20))
    t.equal(reloads(), n, `SIGHUP ${n}: keys reloaded`)
    t.equal((await post(url, '/contracts/1/fail-notify', {})).statusCode, 204, `SIGHUP ${n}: still serving`)
  }
  t.equal(server.child.exitCode, null, 'still running')
  t.notOk(server.out.some(l => l.includes('shutting down')))
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0)
})

t.test('a replica killed mid-call: the same key on another replica is never run again', async t => {
  const redis = await testRedis(t, { persist: true })
  const sandbox = await testSandbox(t, { slowMs: 2000 })
  const s = sandbox.gatewaySettings(3000)
  const server = start(t, {
    WECHATPAY_MODE: 'live', WECHATPAY_BASE_URL: s.baseUrl, WECHATPAY_MCHID: s.mchid, WECHATPAY_APPID: s.appid ?? '',
    WECHATPAY_MERCHANT_SERIAL: s.merchantSerial, WECHATPAY_PRIVATE_KEY_FILE: s.privateKeyFile,
    WECHATPAY_PUBLIC_KEY_ID: s.publicKeyId ?? '', WECHATPAY_PUBLIC_KEY_FILE: s.publicKeyFile ?? '',
    WECHATPAY_TIMEOUT_MS: '3000', GATEWAY_TOKENS: `billing:${TOKENS.billing}`, REDIS_URL: redis.url
  })
  const url = await server.listening
  for (let i = 0; i < 100 && (await request(`${url}/readyz`)).statusCode !== 200; i++) await new Promise(resolve => setTimeout(resolve, 50))
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${TOKENS.billing}`, 'idempotency-key': 'killed-1' }
  const body = JSON.stringify({ service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' })
  const path = '/payscore/partner/serviceorder/SANDBOX_SLOW/pay'
  const first = request(url + path, { method: 'POST', headers, body }).catch(() => 'no answer')
  await new Promise(resolve => setTimeout(resolve, 300))
  // An orchestrator's stop: SIGTERM, then SIGKILL when its timeout (here 1 s) runs out.
  server.child.kill('SIGTERM')
  await new Promise(resolve => setTimeout(resolve, 1000))
  server.child.kill('SIGKILL')
  await server.exited
  t.equal(await first, 'no answer', 'the first caller lost its answer with the replica')

  // Another replica, same Redis: it waits for the dead replica's deadline, then says the outcome is unknown.
  const { app } = await testGateway(t, { sandbox, config: { redisUrl: redis.url } })
  const again = await app.inject({ method: 'POST', url: path, headers, payload: body })
  t.equal(again.statusCode, 409)
  t.match(again.json(), { code: 'IDEMPOTENCY_OUTCOME_UNKNOWN', detail: { outcome: 'unknown' } })
  const later = await app.inject({ method: 'POST', url: path, headers, payload: body })
  t.equal(later.json().code, 'IDEMPOTENCY_OUTCOME_UNKNOWN', 'and it stays unknown: the key is never run again')
  await new Promise(resolve => setTimeout(resolve, 2500))
  t.equal(sandbox.app.sandbox.requests.length, 1, 'WeChat Pay saw one call')
})

t.test('more connections than open files: refused, and the process lives on', async t => {
  const sandbox = await testSandbox(t)
  const s = sandbox.gatewaySettings(2000)
  const server = start(t, {
    WECHATPAY_MODE: 'live', WECHATPAY_BASE_URL: s.baseUrl, WECHATPAY_MCHID: s.mchid, WECHATPAY_APPID: s.appid ?? '',
    WECHATPAY_MERCHANT_SERIAL: s.merchantSerial, WECHATPAY_PRIVATE_KEY_FILE: s.privateKeyFile,
    WECHATPAY_PUBLIC_KEY_ID: s.publicKeyId ?? '', WECHATPAY_PUBLIC_KEY_FILE: s.publicKeyFile ?? '',
    GATEWAY_TOKENS: `billing:${TOKENS.billing}`, HTTP_MAX_CONNECTIONS_PER_ADDRESS: '0'
  }, { fileLimit: 600 })
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

t.test('a port in use: the setting to change, exit 1', async t => {
  const { createServer } = await import('node:net')
  const busy = createServer().listen(0, '127.0.0.1')
  await new Promise(resolve => busy.once('listening', resolve))
  t.teardown(() => { busy.close() })
  const dir = await mkdtemp(join(tmpdir(), 'gw-server-port-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const server = start(t, { SANDBOX_DIR: dir, PORT: String((busy.address() as { port: number }).port) })
  await t.rejects(server.listening)
  t.equal(await server.exited, 1)
  t.match(server.stderr(), /PORT: port \d+ on 127\.0\.0\.1 is already in use by another process; set PORT to a free port/)
  t.notMatch(server.stderr(), /at .*\.ts:\d+/, 'no stack trace')
})
