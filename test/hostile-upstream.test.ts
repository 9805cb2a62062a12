import t, { type Test } from 'tap'
import { safeRequestId } from '../src/wechat/client.js'
import { MemoryNonces } from '../src/wechat/nonces.js'
import { signatureHeaders, signingKey } from '../src/sandbox/protocol.js'
import { auth, hostileProxy, testGateway, testRedis, testSandbox } from './helpers.js'

/**
 * Never twice, under a hostile network (issue: "never twice, never stuck"): an answer the gateway cannot verify
 * is never a reason to send the call again, and a verified answer is accepted once only.
 */

const json = { 'content-type': 'application/json' }
const collect = { service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' }

async function setup (t: Test) {
  const sandbox = await testSandbox(t)
  const proxy = await hostileProxy(t, sandbox.url)
  const { app, logs } = await testGateway(t, { sandbox, wechat: { baseUrl: proxy.url } })
  const executions = () => sandbox.app.sandbox.requests.filter(r => r.status === 204 || r.status === 0).length
  const call = (id: string, key?: string) => app.inject({
    method: 'POST',
    url: `/payscore/partner/serviceorder/${id}/pay`,
    headers: { ...json, ...auth(), ...(key !== undefined && { 'idempotency-key': key }) },
    payload: collect
  })
  return { app, sandbox, proxy, logs, executions, call }
}

t.test('a proxy\'s HTML 504 after forwarding: sent once, outcome unknown, kept for the key', async t => {
  const { proxy, executions, call } = await setup(t)
  proxy.state.mode = 'html504'
  const res = await call('order-1', 'K1')
  t.equal(res.statusCode, 502)
  t.match(res.json(), { code: 'UPSTREAM_UNVERIFIED_ERROR', detail: { outcome: 'unknown', upstream_status: 504 } })
  t.equal(executions(), 1, 'executed once, not retried on an unverified status')
  const again = await call('order-1', 'K1')
  t.equal(again.headers['idempotent-replayed'], 'true', 'the unknown outcome is kept: the key does not run again')
  t.equal(executions(), 1)
})

t.test('an unsigned 500 SYSTEM_ERROR is not taken for WeChat Pay\'s word', async t => {
  const { proxy, executions, call, logs, app } = await setup(t)
  proxy.state.mode = 'unsigned500'
  const res = await call('order-2', 'K2')
  t.equal(res.statusCode, 502)
  t.match(res.json(), { code: 'UPSTREAM_UNVERIFIED_ERROR', detail: { outcome: 'unknown', upstream_status: 500, unverified: { code: 'SYSTEM_ERROR' } } })
  t.equal(executions(), 1)
  await call('order-2', 'K2')
  await call('order-2', 'K2')
  t.equal(executions(), 1, 'one execution for one key, however often it is sent')
  t.notMatch(JSON.stringify(logs.find('operation')[0]), /"wechatCode"/, 'no WeChat code taken from an unverified body')
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.notMatch(metrics, /code="SYSTEM_ERROR"/)
  t.match(metrics, /code="UPSTREAM_UNVERIFIED_ERROR"/)
})

t.test('the sandbox\'s unsigned faults, and a real SIGN_ERROR, which WeChat Pay sends unsigned', async t => {
  const { app, sandbox } = await testGateway(t)
  for (const [fault, status] of [['UNSIGNED_ERROR', 500], ['PROXY_TIMEOUT', 504], ['SIGN_ERROR', 401]] as const) {
    sandbox.app.sandbox.requests.length = 0
    const res = await app.inject({ method: 'POST', url: `/payscore/partner/serviceorder/SANDBOX_${fault}/pay`, headers: { ...json, ...auth() }, payload: collect })
    t.equal(res.statusCode, 502, fault)
    t.match(res.json(), { code: 'UPSTREAM_UNVERIFIED_ERROR', detail: { outcome: 'unknown', upstream_status: status } }, fault)
    t.equal(sandbox.app.sandbox.requests.length, 1, `${fault}: one attempt`)
  }
  // A signature WeChat Pay cannot verify: its SIGN_ERROR carries no signature, and its diagnostics reach the caller.
  const direct = sandbox.merchants.byMchid('1230000109')
  const { app: wrongKey } = await testGateway(t, { sandbox, only: ['direct'], wechat: { privateKeyFile: direct === undefined ? '' : sandbox.merchants.path(direct, direct.files.platformKey) }, omit: ['merchantCertFile'] })
  const refused = await wrongKey.inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: { ...json, ...auth() }, payload: {} })
  t.equal(refused.statusCode, 502)
  t.match(refused.json(), { code: 'UPSTREAM_UNVERIFIED_ERROR', message: /401 SIGN_ERROR/, detail: { outcome: 'unknown', unverified: { code: 'SIGN_ERROR', detail: { sign_information: { sign_message_length: Number } } } } })
})

t.test('a captured answer replayed for another call is refused, never taken for success', async t => {
  const { proxy, call, executions, app } = await setup(t)
  t.equal((await call('order-a')).statusCode, 204, 'a genuine call, whose signed 204 the proxy captures')
  proxy.state.mode = 'replay'
  const replayed = await call('order-b', 'K3')
  t.equal(replayed.statusCode, 502)
  t.match(replayed.json(), { code: 'UPSTREAM_SIGNATURE_INVALID', detail: { outcome: 'unknown', reason: /already used/ } })
  t.equal(executions(), 1, 'order-b never reached WeChat Pay, and the caller is not told it did')
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /verification_failures_total\{reason="REPLAYED",merchant="partner"\} 1/)
})

t.test('upstream strings never become metric labels', async t => {
  const { proxy, call, app } = await setup(t)
  proxy.state.mode = 'odd-codes'
  for (let i = 0; i < 30; i++) t.equal((await call(`odd-${i}`)).statusCode, 502)
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.notMatch(metrics, /ODD_CODE/)
  const series = metrics.split('\n').filter(l => l.startsWith('wechatpay_gateway_upstream_duration_seconds_count')).length
  t.equal(series, 1, 'one series for thirty different codes')
})

t.test('a verified answer with an undocumented code is passed on, and counted under code="OTHER"', async t => {
  const sandbox = await testSandbox(t)
  const merchant = sandbox.app.sandbox.merchants.all.find(m => m.ids.type === 'partner')
  if (merchant === undefined) throw new Error('the sandbox has no service provider')
  const proxy = await hostileProxy(t, sandbox.url, body => signatureHeaders(signingKey(merchant, 'public-key', undefined), body))
  const { app } = await testGateway(t, { sandbox, wechat: { baseUrl: proxy.url } })
  proxy.state.mode = 'odd-codes'
  for (let i = 0; i < 30; i++) {
    const answer = await app.inject({ method: 'POST', url: `/payscore/partner/serviceorder/odd-${i}/pay`, headers: { ...json, ...auth() }, payload: collect })
    t.match(answer, { statusCode: 400 })
    t.equal(answer.json().code, `ODD_CODE_${i}`, 'WeChat Pay\'s code reaches the caller')
  }
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.notMatch(metrics, /ODD_CODE/)
  t.match(metrics, /wechatpay_gateway_upstream_duration_seconds_count\{[^}]*code="OTHER"[^}]*\} 30/)
})

t.test('with Redis, an answer accepted by one replica is refused by another', async t => {
  const redis = await testRedis(t)
  const sandbox = await testSandbox(t)
  const proxy = await hostileProxy(t, sandbox.url)
  const config = { redisUrl: redis.url }
  const { app: a } = await testGateway(t, { sandbox, config, wechat: { baseUrl: proxy.url } })
  const { app: b } = await testGateway(t, { sandbox, config, wechat: { baseUrl: proxy.url } })
  const pay = (app: typeof a, id: string) => app.inject({ method: 'POST', url: `/payscore/partner/serviceorder/${id}/pay`, headers: { ...json, ...auth() }, payload: collect })
  t.equal((await pay(a, 'order-a')).statusCode, 204)
  proxy.state.mode = 'replay'
  t.match((await pay(b, 'order-b')).json(), { code: 'UPSTREAM_SIGNATURE_INVALID', detail: { reason: /already used/ } })

  // Redis away: a replica remembers in its own memory what it accepts meanwhile.
  await redis.stop()
  proxy.state.mode = 'forward'
  t.equal((await pay(a, 'order-c')).statusCode, 204)
  proxy.state.mode = 'replay'
  t.match((await pay(a, 'order-d')).json(), { code: 'UPSTREAM_SIGNATURE_INVALID', detail: { reason: /already used/ } })
})

t.test('nonces are kept for as long as their timestamp is accepted, per merchant', async t => {
  let now = 1_700_000_000_000
  const nonces = new MemoryNonces(() => now)
  const ts = String(now / 1000)
  t.equal(await nonces.firstUse('m1', ts, 'n1'), true)
  t.equal(await nonces.firstUse('m1', ts, 'n1'), false, 'a second use')
  t.equal(await nonces.firstUse('m2', ts, 'n1'), true, 'another merchant')
  t.equal(await nonces.firstUse('m1', String(now / 1000 + 1), 'n1'), true, 'another timestamp: another signature')
  now += 302_000
  t.equal(await nonces.firstUse('m1', String(now / 1000), 'x'), true)
  t.equal(await nonces.firstUse('m1', ts, 'n1'), true, 'forgotten once its timestamp is out of the window (refused by the clock check anyway)')
})

t.test('a Request-ID that is not printable ASCII is percent-encoded for logs and callers', async t => {
  t.equal(safeRequestId('08F1B2C3D4'), '08F1B2C3D4')
  t.equal(safeRequestId(Buffer.from('请求-1', 'utf8').toString('latin1')), encodeURIComponent('请求-1'))
  t.equal(safeRequestId('a\nb'), 'a%0Ab')
  t.equal(safeRequestId(undefined), undefined)
})
