import { createServer } from 'node:net'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { testSandbox } from './helpers.js'
import { post, singleMerchantEnv, start } from './process.js'

/** The real server process: start-up errors, sandbox mode, signals. */

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
  const env = singleMerchantEnv(sandbox, 'direct')
  const server = start(t, { ...env, WECHATPAY_PRIVATE_KEY_FILE: env.WECHATPAY_PUBLIC_KEY_FILE ?? '' })
  await t.rejects(server.listening)
  t.equal(await server.exited, 1)
  t.match(server.stderr(), /WECHATPAY_PRIVATE_KEY_FILE: .* is not a PEM private key/)
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
    for (let i = 0; i < 100 && reloads() < 2 * n; i++) await new Promise(resolve => setTimeout(resolve, 20))
    t.equal(reloads(), 2 * n, `SIGHUP ${n}: the keys of both merchants reloaded`)
    t.equal((await post(url, '/contracts/1/fail-notify', {})).statusCode, 204, `SIGHUP ${n}: still serving`)
  }
  t.equal(server.child.exitCode, null, 'still running')
  t.notOk(server.out.some(l => l.includes('shutting down')))
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0)
})

t.test('a SIGHUP while starting does not stop the start', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'gw-server-hup-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const server = start(t, { SANDBOX_DIR: dir })
  // The banner is logged once the sandbox runs, before the gateway is built and listens.
  for (let i = 0; i < 1500 && !server.out.some(l => l.includes('SANDBOX MODE')); i++) await new Promise(resolve => setTimeout(resolve, 10))
  t.ok(server.out.some(l => l.includes('SANDBOX MODE')), 'the start has begun')
  server.child.kill('SIGHUP')
  const url = await server.listening
  t.equal((await post(url, '/contracts/1/fail-notify', {})).statusCode, 204, 'started and serving')
  t.equal(server.child.exitCode, null)
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0)
})

t.test('a port in use: the setting to change, exit 1', async t => {
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
  // The simulator's port too (the README's notification tour sets SANDBOX_PORT).
  const sandboxBusy = start(t, { SANDBOX_DIR: dir, SANDBOX_PORT: String((busy.address() as { port: number }).port) })
  await t.rejects(sandboxBusy.listening)
  t.equal(await sandboxBusy.exited, 1)
  t.match(sandboxBusy.stderr(), /SANDBOX_PORT: port \d+ on 127\.0\.0\.1 is already in use by another process; set SANDBOX_PORT to a free port/)
  t.notMatch(sandboxBusy.stderr(), /at .*\.ts:\d+/, 'no stack trace')
})

t.test('npm start honours the sandbox settings: key mode and slow fault', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'gw-server-sandbox-settings-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const server = start(t, { SANDBOX_DIR: dir, SANDBOX_KEY_MODE: 'certificate', SANDBOX_SLOW_MS: '200' })
  const url = await server.listening
  t.ok(server.out.some(l => l.includes('SANDBOX MODE') && l.includes('"keyMode":"certificate"')))
  t.ok(server.out.some(l => l.includes('platform certificates updated')), 'certificate mode: the gateway downloaded the platform certificates')
  const started = Date.now()
  t.equal((await post(url, '/contracts/SANDBOX_SLOW/fail-notify', {})).statusCode, 204)
  t.ok(Date.now() - started < 5000, 'SANDBOX_SLOW_MS applies (not the 15 s default)')
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0)
})
