import t from 'tap'
import { request } from 'undici'
import { secretsOf, testGateway, testRedis, testSandbox, TOKENS } from './helpers.js'
import { liveEnv, post, start } from './process.js'

/** Stopping the real server process: SIGTERM with the shipped defaults, the drain, the grace check, a kill. */

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

t.test('a replica killed mid-call: the same key on another replica is never run again', async t => {
  const redis = await testRedis(t, { persist: true })
  const sandbox = await testSandbox(t, { slowMs: 2000 })
  const server = start(t, liveEnv(sandbox, { WECHATPAY_TIMEOUT_MS: '3000', REDIS_URL: redis.url }))
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

t.test('a request begun while draining whose body arrives after closing began is refused, nothing sent', async t => {
  const sandbox = await testSandbox(t)
  const { app } = await testGateway(t, { sandbox })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }
  const { connect } = await import('node:net')
  const socket = connect(port, '127.0.0.1')
  t.teardown(() => { socket.destroy() })
  await new Promise(resolve => socket.once('connect', resolve))
  const body = JSON.stringify({ service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' })
  socket.write(`POST /payscore/partner/serviceorder/slow-body/pay HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nauthorization: Bearer ${TOKENS.billing}\r\ncontent-length: ${body.length}\r\n\r\n${body.slice(0, 10)}`)
  await new Promise(resolve => setTimeout(resolve, 100))
  app.lifecycle.drain()
  app.lifecycle.stopTaking() // the drain delay is over: no call may start now
  let answer = ''
  socket.on('data', (chunk: Buffer) => { answer += chunk.toString() })
  const closed = new Promise(resolve => socket.once('close', resolve))
  socket.write(body.slice(10))
  await closed
  t.match(answer, /^HTTP\/1\.1 503/)
  t.match(answer, /"code":"SHUTTING_DOWN"/)
  t.equal(sandbox.app.sandbox.requests.length, 0, 'nothing was sent to WeChat Pay')
})
