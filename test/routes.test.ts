import t from 'tap'
import { auth, fixture, freePort, testGateway, testSandbox, TOKENS } from './helpers.js'

const json = { 'content-type': 'application/json' }
const collect = { service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' }
const notify = { sub_mchid: '12345512', sub_appid: 'wxd678efh567hg6787', deduct_duration: { count: 1, unit: 'DAY' }, estimated_amount: { amount: 1, currency: 'CNY' } }

t.test('all three routes answer 204 with a call WeChat Pay would accept', async t => {
  const { app, sandbox, logs } = await testGateway(t)
  const calls = [
    { url: '/contracts/123124412412423431/fail-notify', body: {}, mchid: '1230000109', upstream: '/v3/papay/contracts/123124412412423431/fail-notify', sent: { mchid: '1230000109', appid: 'wxd678efh567hg6787' } },
    { url: '/partner/contracts/123124412412423431/notify', body: notify, mchid: '1900000100', upstream: '/v3/partner-papay/contracts/123124412412423431/notify', sent: { sp_mchid: '1900000100', sp_appid: 'wxd678efh567hg6787', ...notify } },
    { url: '/payscore/partner/serviceorder/1234323JKHDFE1243252/pay', body: { ...collect, sp_mchid: '1900000100' }, mchid: '1900000100', upstream: '/v3/payscore/partner/serviceorder/1234323JKHDFE1243252/pay', sent: collect }
  ]
  for (const call of calls) {
    const res = await app.inject({ method: 'POST', url: call.url, headers: { ...json, ...auth(), 'x-request-id': 'caller-id-1' }, payload: call.body })
    t.equal(res.statusCode, 204, call.url)
    t.equal(res.body, '')
    t.equal(res.headers['x-request-id'], 'caller-id-1')
    t.match(res.headers['wechatpay-request-id'], /^[0-9a-f]{32}$/)
    const seen = sandbox.app.sandbox.requests.at(-1)!
    t.equal(seen.url, call.upstream)
    t.same(JSON.parse(seen.body), call.sent, 'merchant fields filled in from the profile; a selector WeChat Pay does not take is not sent')
    t.match(seen.headers, {
      accept: 'application/json',
      'content-type': 'application/json',
      'user-agent': /^wechatpay-gateway\/\d+\.\d+\.\d+ \(linux\/\w+\) node\/\d+/,
      'wechatpay-serial': sandbox.merchants.byMchid(call.mchid)?.ids.wechatpay_public_key_id
    })
    t.match(seen.headers.authorization, new RegExp(`mchid="${call.mchid}"`), 'signed by the merchant of the operation\'s kind')
  }
  const lines = logs.find('operation')
  t.equal(lines.length, 3, 'one log line per operation')
  t.match(lines[0], { reqId: 'caller-id-1', caller: 'billing', operation: 'papayFailNotify', status: 204, upstream: { upstreamStatus: 204, verified: true, requestId: /^[0-9a-f]{32}$/ } })
})

t.test('bad input gets a 400 naming each field, and nothing is sent upstream', async t => {
  const { app, sandbox } = await testGateway(t)
  const cases: Array<[string, unknown, RegExp]> = [
    ['/partner/contracts/123/notify', { sub_mchid: '12345512', estimated_amount: { amount: 0 } }, /body\/estimated_amount\/amount/],
    ['/partner/contracts/123/notify', { sub_mchid: '12345512', estimated_amount: { amount: 1.5 } }, /body\/estimated_amount\/amount/],
    ['/partner/contracts/123/notify', { sub_mchid: '12345512', estimated_amount: { amount: 1, currency: 'USD' } }, /body\/estimated_amount\/currency/],
    ['/partner/contracts/123/notify', { sub_mchid: '12345512', estimated_amount: { amount: 1 }, deduct_duration: { unit: 'DAY' } }, /body\/deduct_duration\/count/],
    ['/partner/contracts/123/notify', { estimated_amount: { amount: 1 } }, /body\/sub_mchid/],
    ['/partner/contracts/123/notify', { sub_mchid: '12345512', estimated_amount: { amount: 1 }, extra: true }, /body\/extra: unknown field/],
    ['/payscore/partner/serviceorder/abc/pay', { sub_mchid: 'x'.repeat(33) }, /body\/sub_mchid/],
    ['/payscore/partner/serviceorder/abc/pay', { sub_mchid: '1900000109', service_id: 123 }, /body\/service_id/],
    ['/payscore/partner/serviceorder/a%2Fb/pay', collect, /params\/out_order_no/],
    ['/payscore/partner/serviceorder/..%2F..%2Fcertificates/pay', collect, /params\/out_order_no/],
    [`/payscore/partner/serviceorder/${'A'.repeat(33)}/pay`, collect, /params\/out_order_no/],
    ['/contracts/12%3F3/fail-notify', {}, /params\/contract_id/],
    ['/contracts/123/fail-notify', { mchid: '1999999999' }, /body\/mchid: unknown merchant id 1999999999: one of 1230000109 \(direct\)/],
    ['/partner/contracts/123/notify', { sp_mchid: '1999999999', sub_mchid: '12345512', estimated_amount: { amount: 1 } }, /body\/sp_mchid: unknown merchant id 1999999999: one of 1900000100 \(partner\)/],
    ['/payscore/partner/serviceorder/abc/pay', { ...collect, sp_mchid: '1230000109' }, /body\/sp_mchid: 1230000109 is the profile direct, not a service provider/]
  ]
  for (const [url, payload, field] of cases) {
    const res = await app.inject({ method: 'POST', url, headers: { ...json, ...auth() }, payload: payload as object })
    t.equal(res.statusCode, 400, `${url} ${JSON.stringify(payload)}`)
    t.equal(res.json().code, 'VALIDATION_ERROR')
    t.match(res.json().message, field)
    t.ok(Array.isArray(res.json().detail.errors))
  }
  const multi = await app.inject({ method: 'POST', url: '/partner/contracts/1/notify', headers: { ...json, ...auth() }, payload: { estimated_amount: { amount: -1, currency: 'EUR' } } })
  t.same(multi.json().detail.errors.map((e: { field: string }) => e.field).sort(), ['/estimated_amount/amount', '/estimated_amount/currency', '/sub_mchid'])
  t.equal(sandbox.app.sandbox.requests.length, 0, 'nothing reached the upstream')
})

t.test('a caller may name the merchant id the gateway holds, and another appid', async t => {
  const { app, sandbox } = await testGateway(t)
  const res = await app.inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: { ...json, ...auth() }, payload: { mchid: '1230000109', appid: 'wx0000000000000001' } })
  t.equal(res.statusCode, 204)
  t.same(JSON.parse(sandbox.app.sandbox.requests.at(-1)!.body), { mchid: '1230000109', appid: 'wx0000000000000001' })
})

t.test('without an appid in the profile the caller must send the appid', async t => {
  const { app } = await testGateway(t, { omit: ['appid'] })
  const res = await app.inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: { ...json, ...auth() }, payload: {} })
  t.equal(res.statusCode, 400)
  t.match(res.json().message, /body\/appid: required: send it, or set appid in the merchant profile/)
})

t.test('WeChat Pay\'s errors: 4xx pass through, 5xx become 502, an unsigned SIGN_ERROR is unverified', async t => {
  const { app } = await testGateway(t)
  const cases: Array<[string, number, string, number]> = [
    ['PARAM_ERROR', 400, 'PARAM_ERROR', 400],
    ['INVALID_REQUEST', 400, 'INVALID_REQUEST', 400],
    ['ORDER_DONE', 400, 'ORDER_DONE', 400],
    ['NO_AUTH', 403, 'NO_AUTH', 403],
    ['ORDER_NOT_EXIST', 404, 'ORDER_NOT_EXIST', 404],
    ['FREQUENCY_LIMITED', 429, 'FREQUENCY_LIMITED', 429],
    ['SIGN_ERROR', 502, 'UPSTREAM_UNVERIFIED_ERROR', 401],
    ['SYSTEM_ERROR', 502, 'SYSTEM_ERROR', 500],
    ['SERVICE_UNAVAILABLE', 502, 'SERVICE_UNAVAILABLE', 503]
  ]
  for (const [fault, status, code, upstream] of cases) {
    const res = await app.inject({ method: 'POST', url: `/payscore/partner/serviceorder/SANDBOX_${fault}/pay`, headers: { ...json, ...auth() }, payload: collect })
    t.equal(res.statusCode, status, fault)
    t.equal(res.json().code, code)
    t.type(res.json().message, 'string')
    t.match(res.headers['wechatpay-request-id'], /^[0-9a-f]{32}$/, 'WeChat\'s Request-ID comes back')
    t.equal(res.json().detail.upstream_status, upstream, 'WeChat Pay\'s status says the answer is WeChat\'s')
  }
})

t.test('a real SIGN_ERROR shows WeChat\'s view of the signed message next to our message length', async t => {
  const sandbox = await testSandbox(t)
  // A key the sandbox does not know: the signature cannot match.
  const { app, logs } = await testGateway(t, { sandbox, wechat: { privateKeyFile: fixture('merchant-test-key.pem') }, omit: ['merchantCertFile'] })
  const res = await app.inject({ method: 'POST', url: '/payscore/partner/serviceorder/123/pay', headers: { ...json, ...auth() }, payload: collect })
  t.equal(res.statusCode, 502)
  const body = res.json()
  // WeChat Pay does not sign it: the gateway cannot rule out that a proxy forged it after forwarding the call.
  t.match(body, { code: 'UPSTREAM_UNVERIFIED_ERROR', detail: { outcome: 'unknown', upstream_status: 401, unverified: { code: 'SIGN_ERROR' } } })
  const wechat = body.detail.unverified.detail
  t.equal(wechat.sign_information.sign_message_length, body.detail.gateway_sign_message_length, 'same length: the keys differ, not the message')
  t.match(wechat.sign_information.truncated_sign_message, /^POST\n\/v3\/payscore\/partner\/serviceorder\/123\/pay\n\d+\n[0-9A-F]{32}\n/)
  t.match(logs.find('operation')[0], { upstream: { upstreamStatus: 401, signMessageLength: body.detail.gateway_sign_message_length } })
})

t.test('an answer that fails verification is never a success', async t => {
  const { app } = await testGateway(t)
  const cases: Array<[string, number, string, RegExp]> = [
    ['BAD_SIGNATURE', 502, 'UPSTREAM_SIGNATURE_INVALID', /does not match/],
    ['SIGNTEST', 502, 'UPSTREAM_SIGNATURE_INVALID', /SIGNTEST/],
    ['STALE_TIMESTAMP', 502, 'UPSTREAM_SIGNATURE_INVALID', /600 s away/],
    ['UNKNOWN_SERIAL', 502, 'UPSTREAM_SIGNATURE_INVALID', /unknown Wechatpay-Serial/],
    ['UNSIGNED', 502, 'UPSTREAM_SIGNATURE_INVALID', /missing wechatpay-timestamp/],
    ['NOT_JSON', 502, 'UPSTREAM_BAD_RESPONSE', /not JSON/]
  ]
  for (const [fault, status, code, message] of cases) {
    const res = await app.inject({ method: 'POST', url: `/contracts/SANDBOX_${fault}/fail-notify`, headers: { ...json, ...auth() }, payload: {} })
    t.equal(res.statusCode, status, fault)
    t.equal(res.json().code, code)
    t.match(res.json().message, message)
    t.equal(res.json().detail.outcome, 'unknown', 'the caller is told the outcome is unknown')
  }
})

t.test('a signed error whose signature fails is not passed off as WeChat\'s word', async t => {
  const { app, sandbox } = await testGateway(t)
  sandbox.app.sandbox.keyMode = 'certificate' // signs with the platform certificate, which this gateway does not know
  const res = await app.inject({ method: 'POST', url: '/contracts/SANDBOX_ORDER_DONE/fail-notify', headers: { ...json, ...auth() }, payload: {} })
  t.equal(res.statusCode, 502)
  t.equal(res.json().code, 'UPSTREAM_SIGNATURE_INVALID')
})

t.test('timeouts, resets and refused connections', async t => {
  const sandbox = await testSandbox(t, { slowMs: 1500 })
  const { app } = await testGateway(t, { sandbox, wechat: { timeoutMs: 300 } })
  const slow = await app.inject({ method: 'POST', url: '/contracts/SANDBOX_SLOW/fail-notify', headers: { ...json, ...auth() }, payload: {} })
  t.equal(slow.statusCode, 504)
  t.match(slow.json(), { code: 'UPSTREAM_TIMEOUT', detail: { outcome: 'unknown' } })
  const reset = await app.inject({ method: 'POST', url: '/contracts/SANDBOX_RESET/fail-notify', headers: { ...json, ...auth() }, payload: {} })
  t.equal(reset.statusCode, 502)
  t.match(reset.json(), { code: 'UPSTREAM_UNAVAILABLE' })

  const port = await freePort()
  const { app: orphan } = await testGateway(t, { sandbox, wechat: { baseUrl: `http://127.0.0.1:${port}` } })
  const refused = await orphan.inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: { ...json, ...auth() }, payload: {} })
  t.equal(refused.statusCode, 502)
  t.match(refused.json(), { code: 'UPSTREAM_UNAVAILABLE', message: /ECONNREFUSED/, detail: { outcome: 'not_executed' } })
})

t.test('callers: no token 401, unknown token 401, forbidden operation 403, and nothing is sent', async t => {
  const { app, sandbox } = await testGateway(t)
  const url = '/contracts/1/fail-notify'
  const none = await app.inject({ method: 'POST', url, headers: json, payload: {} })
  t.equal(none.statusCode, 401)
  t.equal(none.json().code, 'UNAUTHORIZED')
  t.equal(none.headers['www-authenticate'], 'Bearer realm="wechatpay-gateway"')
  for (const header of ['Bearer nope-nope-nope-nope-nope', `Basic ${TOKENS.billing}`, `Bearer ${TOKENS.billing}x`, 'Bearer']) {
    const res = await app.inject({ method: 'POST', url, headers: { ...json, authorization: header }, payload: {} })
    t.equal(res.statusCode, 401, header.slice(0, 12))
  }
  const forbidden = await app.inject({ method: 'POST', url, headers: { ...json, ...auth(TOKENS.orders) }, payload: {} })
  t.equal(forbidden.statusCode, 403)
  t.match(forbidden.json(), { code: 'FORBIDDEN', message: 'Caller orders may not use papayFailNotify' })
  t.equal(sandbox.app.sandbox.requests.length, 0)
  const allowed = await app.inject({ method: 'POST', url: '/payscore/partner/serviceorder/1/pay', headers: { ...json, ...auth(TOKENS.orders) }, payload: collect })
  t.equal(allowed.statusCode, 204)
  const open = await app.inject({ method: 'GET', url: '/healthz' })
  t.equal(open.statusCode, 200, '/healthz needs no token')
})

t.test('authentication off: every caller is anonymous', async t => {
  const { app, logs } = await testGateway(t, { config: { auth: { enabled: false, tokens: [] } } })
  const res = await app.inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: json, payload: {} })
  t.equal(res.statusCode, 204)
  t.equal(logs.find('operation')[0]?.caller, 'anonymous')
})

t.test('transport-level refusals: 413, 415, bad JSON, unknown route, unsafe request id', async t => {
  const { app, sandbox, logs } = await testGateway(t)
  const big = await app.inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: { ...json, ...auth() }, payload: JSON.stringify({ appid: 'x'.repeat(20_000) }) })
  t.equal(big.statusCode, 413)
  t.equal(big.json().code, 'PAYLOAD_TOO_LARGE')
  for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/xml']) {
    const res = await app.inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: { 'content-type': type, ...auth() }, payload: 'a=1' })
    t.equal(res.statusCode, 415, type)
    t.match(res.json(), { code: 'UNSUPPORTED_MEDIA_TYPE', message: `Content-Type "${type}" is not supported: send the body as Content-Type: application/json` })
  }
  const bad = await app.inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: { ...json, ...auth() }, payload: '{"mchid":' })
  t.equal(bad.statusCode, 400)
  t.equal(bad.json().code, 'INVALID_JSON')
  const proto = await app.inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: { ...json, ...auth() }, payload: '{"__proto__":{"polluted":1}}' })
  t.equal(proto.statusCode, 400)
  t.equal(({} as Record<string, unknown>).polluted, undefined)
  // No body at all (curl -X POST with no data), or an empty JSON body: an empty object.
  t.equal((await app.inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: auth() })).statusCode, 204)
  t.equal((await app.inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: { ...json, ...auth() } })).statusCode, 204)
  const empty = await app.inject({ method: 'POST', url: '/partner/contracts/1/notify', headers: auth() })
  t.equal(empty.statusCode, 400)
  t.match(empty.json(), { code: 'VALIDATION_ERROR', detail: { field: '/sub_mchid' } }, 'a required field is named, not "expected object"')
  const wrongMethod = await app.inject({ method: 'GET', url: '/contracts/1/fail-notify' })
  t.equal(wrongMethod.statusCode, 405)
  t.equal(wrongMethod.headers.allow, 'POST')
  t.match(wrongMethod.json(), { code: 'METHOD_NOT_ALLOWED', message: /use POST/ })
  const yuan = await app.inject({ method: 'POST', url: '/partner/contracts/1/notify', headers: { ...json, ...auth() }, payload: { sub_mchid: '12345512', estimated_amount: { amount: 9.9 } } })
  t.match(yuan.json().message, /estimated_amount\/amount: must be a positive integer number of fen \(分\)/)
  const missing = await app.inject({ method: 'GET', url: '/nope?x=1' })
  t.equal(missing.statusCode, 404)
  t.same(missing.json(), { code: 'ROUTE_NOT_FOUND', message: 'No route GET /nope', detail: { outcome: 'not_executed' } })
  const unsafe = await app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'bad id\n{"level":"fatal"}' } })
  t.match(unsafe.headers['x-request-id'], /^[0-9a-f-]{36}$/, 'an unsafe request id is replaced')
  t.match(logs.find('x-request-id ignored: it must be 1-128 of A-Z a-z 0-9 . _ : -; this request\'s id is reqId').at(-1),
    { reqId: unsafe.headers['x-request-id'], given: '"bad id\\n{\\"level\\":\\"fatal\\"}"' }, 'and the replacement is logged, escaped')
  t.equal(sandbox.app.sandbox.requests.length, 2, 'only the two empty-body calls reached WeChat Pay')
})
