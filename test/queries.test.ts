import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import type { SandboxMerchant } from '../src/sandbox/merchants.js'
import { signatureHeaders, signingKey } from '../src/sandbox/protocol.js'
import { loadConfig } from '../src/config.js'
import { operations, upstreamTarget, type ReadOperation } from '../src/wechat/operations.js'
import { auth, testGateway, TOKENS, vectors } from './helpers.js'

const json = { 'content-type': 'application/json' }
const SERVICE = '2002000000000558128851361561536'
const collect = { service_id: SERVICE, sub_mchid: '1900000109' }
const read = (id: string): ReadOperation => operations.find((o): o is ReadOperation => o.id === id && o.method === 'GET') as ReadOperation

const orderQuery = (query: string, headers: Record<string, string> = auth()) =>
  ({ method: 'GET' as const, url: `/payscore/partner/serviceorder?${query}`, headers })
const byOrderNo = (no: string) => orderQuery(`service_id=${SERVICE}&out_order_no=${no}&sub_mchid=1900000109`)
const pay = (no: string, key?: string) => ({
  method: 'POST' as const,
  url: `/payscore/partner/serviceorder/${no}/pay`,
  headers: { ...json, ...auth(), ...(key !== undefined && { 'idempotency-key': key }) },
  payload: collect
})

t.test('GET signing: the request-target with its query string, exactly as sent, matches the openssl vector', async t => {
  const vector = vectors.requests.find(v => v.method === 'GET' && v.url.includes('?'))
  t.ok(vector, 'the shared vectors have a signed GET with a query string')
  const query = Object.fromEntries(new URL(vector?.url ?? '', 'http://x').searchParams)
  t.equal(upstreamTarget(read('payscorePartnerQuery'), {}, query), vector?.url, 'the same parameters, in the same order')
  t.equal(vector?.body, '', 'a GET signs an empty body')

  // Percent-encoding is part of what is signed: a value is encoded once, as sent.
  t.equal(upstreamTarget(read('payscorePartnerQuery'), {}, { service_id: SERVICE, query_id: 'a+b/c=d&e%', sub_mchid: '1', sp_mchid: '2' }),
    `/v3/payscore/partner/serviceorder?service_id=${SERVICE}&query_id=a%2Bb%2Fc%3Dd%26e%25&sub_mchid=1`, 'sp_mchid chooses the profile and is not sent')
  t.equal(upstreamTarget(read('partnerPapayContractQuery'), { plan_id: '12535', out_contract_code: 'c|1*' }, { sub_mchid: '9' }),
    '/v3/papay/sign/partner/contracts/plan-id/12535/out-contract-code/c%7C1*?sub_mchid=9')
  t.equal(upstreamTarget(read('papayContractQuery'), { plan_id: '1', out_contract_code: 'x' }, { mchid: '1230000109' }),
    '/v3/papay/sign/contracts/plan-id/1/out-contract-code/x', 'no query string at all')
})

t.test('PayScore order query: state and collection, signed and verified, by out_order_no or query_id', async t => {
  const { app, sandbox } = await testGateway(t)
  const before = await app.inject(byOrderNo('q-1'))
  t.equal(before.statusCode, 200)
  t.match(before.headers['content-type'], /^application\/json/)
  t.match(before.headers['wechatpay-request-id'], /^[0-9a-f]{32}$/)
  t.match(before.json(), {
    out_order_no: 'q-1', service_id: SERVICE, mchid: '1900000100', sub_mchid: '1900000109', state: 'DOING',
    state_description: 'MCH_COMPLETE', collection: { state: 'USER_PAYING', paid_amount: 0, details: [] }
  }, 'an order first referenced waits for payment')
  const sent = sandbox.app.sandbox.requests.at(-1)
  t.match(sent, { method: 'GET', url: `/v3/payscore/partner/serviceorder?service_id=${SERVICE}&out_order_no=q-1&sub_mchid=1900000109`, body: '', status: 200 })

  t.equal((await app.inject(pay('q-1'))).statusCode, 204)
  const after = (await app.inject(byOrderNo('q-1'))).json()
  t.match(after, { state: 'DONE', collection: { state: 'USER_PAID', paying_amount: 0, paid_amount: 50000 } })
  t.equal(after.collection.details.length, 1)
  t.match(after.collection.details[0], { seq: 1, amount: 50000, paid_type: 'NEWTON', paid_time: /^\d{14}$/ })

  // WeChat's query_id instead of out_order_no, percent-encoded as sent and signed.
  const queryId = sandbox.app.sandbox.state.allOrders()[0]?.query_id ?? ''
  const byQueryId = await app.inject(orderQuery(`service_id=${SERVICE}&query_id=${encodeURIComponent(queryId)}&sub_mchid=1900000109`))
  t.match(byQueryId.json(), { out_order_no: 'q-1', state: 'DONE' })
  const odd = await app.inject(orderQuery(`service_id=${SERVICE}&query_id=${encodeURIComponent('a+b/c=d&e%')}&sub_mchid=1900000109`))
  t.match(odd.json(), { code: 'ORDER_NOT_EXIST', message: '查询单据不存在', detail: { outcome: 'refused' } })
  t.equal(odd.statusCode, 404, 'the signature over the encoded target was good: WeChat\'s signed 404 came back')
  t.match(sandbox.app.sandbox.requests.at(-1)?.url, /query_id=a%2Bb%2Fc%3Dd%26e%25&/)
})

t.test('query validation: a clear 400 naming the parameter, and nothing sent', async t => {
  const { app, sandbox } = await testGateway(t)
  const cases: Array<[string, string, RegExp]> = [
    [`service_id=${SERVICE}&sub_mchid=1900000109`, '/out_order_no', /exactly one of out_order_no and query_id/],
    [`service_id=${SERVICE}&out_order_no=a&query_id=b&sub_mchid=1900000109`, '/out_order_no', /exactly one/],
    [`service_id=${SERVICE}&out_order_no=a`, '/sub_mchid', /./],
    [`out_order_no=a&sub_mchid=1900000109`, '/service_id', /./],
    [`service_id=${SERVICE}&out_order_no=a/b&sub_mchid=1900000109`, '/out_order_no', /1-32 characters/],
    [`service_id=${SERVICE}&out_order_no=a&sub_mchid=1900000109&x=1`, '/x', /unknown field/],
    [`service_id=${SERVICE}&out_order_no=a&out_order_no=b&sub_mchid=1900000109`, '/out_order_no', /./]
  ]
  for (const [query, field, issue] of cases) {
    const res = await app.inject(orderQuery(query))
    t.equal(res.statusCode, 400, query)
    t.match(res.json(), { code: 'VALIDATION_ERROR', detail: { outcome: 'not_executed', location: 'querystring', field, issue } }, query)
  }
  const plan = await app.inject({ method: 'GET', url: '/papay/sign/contracts/plan-id/0/out-contract-code/c1', headers: auth() })
  t.match(plan.json(), { code: 'VALIDATION_ERROR', detail: { location: 'params', field: '/plan_id' } })
  t.equal(sandbox.app.sandbox.requests.length, 0, 'nothing reached WeChat Pay')
})

t.test('queries choose the merchant, take the same callers and permissions, and only GET', async t => {
  const { app } = await testGateway(t)
  const chosen = await app.inject(orderQuery(`service_id=${SERVICE}&out_order_no=m-1&sub_mchid=1900000109&sp_mchid=1900000100`))
  t.match(chosen.json(), { mchid: '1900000100' })
  const wrongKind = await app.inject(orderQuery(`service_id=${SERVICE}&out_order_no=m-1&sub_mchid=1900000109&sp_mchid=1230000109`))
  t.match(wrongKind.json(), { code: 'VALIDATION_ERROR', detail: { location: 'querystring', field: '/sp_mchid', issue: /not a service provider/ } })
  t.equal((await app.inject(orderQuery(`service_id=${SERVICE}&out_order_no=m-1&sub_mchid=1900000109`, {}))).statusCode, 401)
  const forbidden = await app.inject(orderQuery(`service_id=${SERVICE}&out_order_no=m-1&sub_mchid=1900000109`, auth(TOKENS.orders)))
  t.match(forbidden, { statusCode: 403 })
  t.match(forbidden.json(), { code: 'FORBIDDEN', message: /payscorePartnerQuery/ }, 'a caller allowed to collect is not allowed to query unless its token says so')
  for (const method of ['POST', 'HEAD', 'DELETE'] as const) {
    const res = await app.inject({ method, url: '/payscore/partner/serviceorder', headers: auth() })
    t.equal(res.statusCode, 405, method)
    t.equal(res.headers.allow, 'GET')
  }
  const post = await app.inject({ method: 'GET', url: '/payscore/partner/serviceorder/x/pay', headers: auth() })
  t.equal(post.headers.allow, 'POST')
})

t.test('a query takes no Idempotency-Key: every query reaches WeChat Pay, none is replayed', async t => {
  const { app, sandbox } = await testGateway(t)
  const keyed = { ...byOrderNo('i-1'), headers: { ...auth(), 'idempotency-key': 'q' } }
  const first = await app.inject(keyed)
  t.equal((await app.inject(pay('i-1'))).statusCode, 204)
  const second = await app.inject(keyed)
  t.equal(second.headers['idempotent-replayed'], undefined)
  t.match([first.json().state, second.json().state], ['DOING', 'DONE'], 'the second query reads the new state')
  t.equal(sandbox.app.sandbox.requests.filter(r => r.method === 'GET').length, 2)
})

t.test('contract queries: direct and partner; the contract id they give is the one notices take', async t => {
  const { app, sandbox } = await testGateway(t)
  const direct = await app.inject({ method: 'GET', url: '/papay/sign/contracts/plan-id/12535/out-contract-code/c-1', headers: auth() })
  t.equal(direct.statusCode, 200)
  const contract = direct.json()
  t.match(contract, { mchid: '1230000109', plan_id: 12535, out_contract_code: 'c-1', contract_state: 'SIGNED', contract_id: /^\d{18}$/ })
  t.match(sandbox.app.sandbox.requests.at(-1), { url: '/v3/papay/sign/contracts/plan-id/12535/out-contract-code/c-1', mchid: '1230000109' })
  t.equal((await app.inject({ method: 'POST', url: `/contracts/${contract.contract_id}/fail-notify`, headers: { ...json, ...auth() }, payload: {} })).statusCode, 204)

  const partner = await app.inject({ method: 'GET', url: '/papay/sign/partner/contracts/plan-id/12535/out-contract-code/c-1?sub_mchid=12345512', headers: auth() })
  t.match(partner.json(), { sp_mchid: '1900000100', sub_mchid: '12345512', contract_state: 'SIGNED' })
  t.not(partner.json().contract_id, contract.contract_id, 'another merchant\'s contract')
  t.match(sandbox.app.sandbox.requests.at(-1), { url: '/v3/papay/sign/partner/contracts/plan-id/12535/out-contract-code/c-1?sub_mchid=12345512', mchid: '1900000100' })

  // The user ends the contract: the query says so, and WeChat Pay refuses the notice.
  const ended = await fetch(`${sandbox.url}/sandbox/contracts`, { method: 'POST', body: JSON.stringify({ sub_mchid: '12345512', plan_id: 12535, out_contract_code: 'c-1', contract_id: partner.json().contract_id, state: 'TERMINATED' }) })
  t.equal(ended.status, 201)
  const after = await app.inject({ method: 'GET', url: '/papay/sign/partner/contracts/plan-id/12535/out-contract-code/c-1?sub_mchid=12345512', headers: auth() })
  t.match(after.json(), { contract_state: 'TERMINATED', contract_terminate_info: { contract_termination_mode: 'USER_TERMINATE' } })
  const notice = await app.inject({
    method: 'POST', url: `/partner/contracts/${partner.json().contract_id}/notify`, headers: { ...json, ...auth() },
    payload: { sub_mchid: '12345512', estimated_amount: { amount: 100 } }
  })
  t.equal(notice.statusCode, 400)
  t.match(notice.json(), { code: 'CONTRACT_NOT_EXIST', detail: { outcome: 'refused' } })
})

t.test('reads are retried on every transient failure, operations only when WeChat Pay says "not done"', async t => {
  const { app, sandbox } = await testGateway(t)
  const arm = (fault: string, operation: string) => fetch(`${sandbox.url}/sandbox/faults`, { method: 'POST', body: JSON.stringify({ fault, operation }) })
  for (const fault of ['RESET', 'PROXY_TIMEOUT', 'UNSIGNED_ERROR', 'BAD_SIGNATURE']) {
    await arm(fault, 'payscorePartnerQuery')
    const res = await app.inject(byOrderNo(`r-${fault}`))
    t.equal(res.statusCode, 200, `${fault}: a query is sent again`)
  }
  const retries = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(retries, /wechatpay_gateway_upstream_retries_total\{operation="payscorePartnerQuery",reason="ECONNRESET",merchant="partner"\} 1/)
  t.match(retries, /wechatpay_gateway_upstream_duration_seconds_count\{operation="payscorePartnerQuery",merchant="partner",code="OK"\} 4/)

  await arm('RESET', 'payscorePartnerCollect')
  const lost = await app.inject(pay('r-op'))
  t.match(lost.json(), { code: 'UPSTREAM_UNAVAILABLE', detail: { outcome: 'unknown' } }, 'an operation is not')
})

t.test('with the default timeout, a query that timed out is sent again within the call\'s deadline', async t => {
  // WECHATPAY_TIMEOUT_MS's default (10 s), not the tests' 2 s: the first attempt ends past the 3 s in which an
  // operation's retry may start, and a read is still retried.
  const timeoutMs = loadConfig({}).upstream.timeoutMs
  const { app, sandbox, logs } = await testGateway(t, { wechat: { timeoutMs } })
  await fetch(`${sandbox.url}/sandbox/faults`, { method: 'POST', body: JSON.stringify({ fault: 'SLOW', operation: 'payscorePartnerQuery', delay_ms: timeoutMs + 500 }) })
  const started = performance.now()
  const res = await app.inject(byOrderNo('slow-1'))
  const took = performance.now() - started
  t.equal(res.statusCode, 200, 'the second attempt answered')
  t.match(res.json(), { out_order_no: 'slow-1', state: 'DOING' })
  t.equal(sandbox.app.sandbox.requests.filter(r => r.operation === 'payscorePartnerQuery').length, 2, 'two upstream GETs')
  t.match(logs.find('operation').at(-1), { status: 200, upstream: { attempts: 2, retried: ['TIMEOUT'] } })
  t.ok(took >= timeoutMs && took < app.wechat.maxCallMs, `within the longest call (${Math.round(took)} ms < ${app.wechat.maxCallMs} ms)`)
})

t.test('a query that keeps timing out: retried until the call\'s deadline, then a 504 worded for a read', async t => {
  // 1.5 s attempts: the third starts past the 3 s budget of operations, and is cut to what is left of 1.5 s + 3 s.
  const { app, sandbox, logs } = await testGateway(t, { wechat: { timeoutMs: 1500 } })
  await fetch(`${sandbox.url}/sandbox/faults`, { method: 'POST', body: JSON.stringify({ fault: 'SLOW', times: 3, operation: 'payscorePartnerQuery', delay_ms: 5000 }) })
  const started = performance.now()
  const res = await app.inject(byOrderNo('slow-2'))
  const took = performance.now() - started
  t.equal(res.statusCode, 504)
  t.match(res.json(), { code: 'UPSTREAM_TIMEOUT', message: /query/ })
  t.notMatch(res.json().message, /carried out/, 'a query carries nothing out')
  // Three attempts on time (the third starts ~3.2 s in, 1.3 s before the deadline); two on a host slow enough to
  // start it late: never a fourth, never past the deadline (the timers' lateness aside).
  const { upstream } = logs.find('operation').at(-1) as { upstream: { attempts: number, retried: string[] } }
  t.ok(upstream.attempts >= 2 && upstream.attempts <= 3, `retried after timeouts (${upstream.attempts} attempts)`)
  t.ok(upstream.retried.every(r => r === 'TIMEOUT'))
  t.ok(took < app.wechat.maxCallMs + 1000, `bounded by the longest call (${Math.round(took)} ms, ${app.wechat.maxCallMs} ms)`)

  // A reset is worded for a read too.
  await fetch(`${sandbox.url}/sandbox/faults`, { method: 'POST', body: JSON.stringify({ fault: 'RESET', times: 3, operation: 'payscorePartnerQuery' }) })
  const reset = await app.inject(byOrderNo('slow-3'))
  t.match(reset.json(), { code: 'UPSTREAM_UNAVAILABLE', message: /query/ })
  t.notMatch(reset.json().message, /carried out/)
})

t.test('a query\'s audit line names what was asked: its validated query string', async t => {
  const { app, logs } = await testGateway(t)
  t.equal((await app.inject(byOrderNo('audit-1'))).statusCode, 200)
  t.match(logs.find('operation').at(-1), {
    operation: 'payscorePartnerQuery', merchant: 'partner', status: 200, params: {},
    query: { service_id: SERVICE, out_order_no: 'audit-1', sub_mchid: '1900000109' }
  })
  await app.inject({ method: 'GET', url: '/papay/sign/partner/contracts/plan-id/12535/out-contract-code/c-9?sub_mchid=12345512', headers: auth() })
  t.match(logs.find('operation').at(-1), { operation: 'partnerPapayContractQuery', params: { plan_id: '12535', out_contract_code: 'c-9' }, query: { sub_mchid: '12345512' } })
  // What failed validation is not repeated in the log: only the fields of a valid query are.
  t.equal((await app.inject(orderQuery(`service_id=${SERVICE}&out_order_no=a&sub_mchid=1900000109&junk=x`))).statusCode, 400)
  t.notOk('query' in (logs.find('operation').at(-1) ?? {}), 'a refused query string is not logged')
  // Operations log their path parameters, as before, and no query.
  t.equal((await app.inject(pay('audit-1'))).statusCode, 204)
  t.notOk('query' in (logs.find('operation').at(-1) ?? {}))
  t.match(logs.find('operation').at(-1), { operation: 'payscorePartnerCollect', params: { out_order_no: 'audit-1' } })
})

t.test('a 200 without a field callers rely on is UPSTREAM_BAD_RESPONSE; other differences are passed on', async t => {
  const { sandbox } = await testGateway(t)
  const partner = sandbox.merchants.all.find(m => m.ids.type === 'partner') as SandboxMerchant
  let body = ''
  // An upstream that signs what it is told to answer, with the service provider's WeChat Pay key.
  const upstream = createServer((_req, res) => {
    void signatureHeaders(signingKey(partner, 'public-key', undefined), body).then(headers => {
      res.writeHead(200, { 'content-type': 'application/json', 'request-id': 'r1', ...headers }).end(body)
    })
  })
  await new Promise<void>(resolve => upstream.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { upstream.close() })
  const { app } = await testGateway(t, { sandbox, wechat: { baseUrl: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` } })

  body = JSON.stringify({ out_order_no: 'x', service_id: SERVICE, mchid: '1900000100', appid: 'wx', service_introduction: 's' })
  const missing = await app.inject(byOrderNo('x'))
  t.equal(missing.statusCode, 502)
  t.match(missing.json(), { code: 'UPSTREAM_BAD_RESPONSE', message: /lacks state/ })
  body = JSON.stringify({ out_order_no: 'x', service_id: SERVICE, mchid: '1900000100', state: 7 })
  t.match((await app.inject(byOrderNo('x'))).json(), { code: 'UPSTREAM_BAD_RESPONSE', message: /state/ }, 'a field of another type')
  body = '[]'
  t.match((await app.inject(byOrderNo('x'))).json(), { code: 'UPSTREAM_BAD_RESPONSE', message: /not a JSON object/ })
  body = JSON.stringify({ out_order_no: 'x', service_id: SERVICE, mchid: '1900000100', state: 'NEW_STATE', brand_new_field: { a: 1 } })
  const extra = await app.inject(byOrderNo('x'))
  t.equal(extra.statusCode, 200)
  t.equal(extra.body, body, 'passed on byte for byte: new fields and values included')
})

t.test('the lost answer, settled: pay -> outcome unknown -> query -> paid -> no second collection', async t => {
  const { app, sandbox } = await testGateway(t)
  // WeChat Pay collects, then the connection is reset before the answer arrives.
  await fetch(`${sandbox.url}/sandbox/faults`, { method: 'POST', body: JSON.stringify({ fault: 'RESET_AFTER', operation: 'payscorePartnerCollect' }) })
  const lost = await app.inject(pay('story-1', 'collect-story-1'))
  t.equal(lost.statusCode, 502)
  t.match(lost.json(), { code: 'UPSTREAM_UNAVAILABLE', detail: { outcome: 'unknown' } })
  t.equal(sandbox.app.sandbox.requests.filter(r => r.operation === 'payscorePartnerCollect').length, 1, 'not retried: it may have happened')
  const replay = await app.inject(pay('story-1', 'collect-story-1'))
  t.equal(replay.headers['idempotent-replayed'], 'true', 'the same key keeps its unknown answer')

  const order = await app.inject(byOrderNo('story-1'))
  t.match(order.json(), { state: 'DONE', collection: { state: 'USER_PAID', paying_amount: 0 } }, 'the query settles it: collected')
  t.equal(order.json().collection.details.length, 1)

  // A caller that did not query, and tried again with a new key, is refused by WeChat Pay: nothing is collected twice.
  const again = await app.inject(pay('story-1', 'collect-story-1-retry'))
  t.equal(again.statusCode, 400)
  t.match(again.json(), { code: 'ORDER_DONE', detail: { outcome: 'refused' } })
  t.equal(sandbox.app.sandbox.state.allOrders().find(o => o.out_order_no === 'story-1')?.collections.length, 1, 'one collection')
})
