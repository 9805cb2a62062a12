import t from 'tap'
import { auth, testGateway, testSandbox, TOKENS } from './helpers.js'

/**
 * Merchant profiles: one gateway, several WeChat Pay accounts (a direct merchant's and a service provider's, or
 * several of one kind). Each call is signed by the account of its operation's kind, chosen by the field that names
 * it, over real HTTP against the sandbox, which checks the signature with the key of the merchant that signed.
 */

const json = { 'content-type': 'application/json' }
const collect = { service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' }
const notify = { sub_mchid: '12345512', estimated_amount: { amount: 1 } }
const THREE = [
  { name: 'brand-a', type: 'direct' as const, mchid: '1230000109' },
  { name: 'brand-b', type: 'direct' as const, mchid: '1230000110' },
  { name: 'sp', type: 'partner' as const, mchid: '1900000100' }
]

t.test('two profiles: each operation signed by the account of its kind, no merchant named', async t => {
  const { app, sandbox, logs } = await testGateway(t)
  const signer = (): string | undefined => sandbox.app.sandbox.requests.at(-1)?.mchid
  t.equal((await app.inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: { ...json, ...auth() }, payload: {} })).statusCode, 204)
  t.equal(signer(), '1230000109', 'fail-notify: the direct merchant')
  t.equal((await app.inject({ method: 'POST', url: '/partner/contracts/1/notify', headers: { ...json, ...auth() }, payload: notify })).statusCode, 204)
  t.equal(signer(), '1900000100', 'notify: the service provider')
  t.same(JSON.parse(sandbox.app.sandbox.requests.at(-1)?.body ?? ''), { ...notify, sp_mchid: '1900000100', sp_appid: 'wxd678efh567hg6787' }, 'sp_mchid and sp_appid from the chosen profile')
  t.equal((await app.inject({ method: 'POST', url: '/payscore/partner/serviceorder/1/pay', headers: { ...json, ...auth() }, payload: collect })).statusCode, 204)
  t.equal(signer(), '1900000100', 'pay: the service provider')
  t.same(logs.find('operation').map(l => l.merchant), ['direct', 'partner', 'partner'], 'the audit line names the merchant')
})

t.test('three profiles: the field that names the merchant chooses; ambiguous, unknown or wrong kind is a 400 naming it', async t => {
  const sandbox = await testSandbox(t, { merchants: THREE })
  const { app } = await testGateway(t, { sandbox })
  const signer = (): string | undefined => sandbox.app.sandbox.requests.at(-1)?.mchid
  const failNotify = (body: object) => app.inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: { ...json, ...auth() }, payload: body })

  t.equal((await failNotify({ mchid: '1230000110' })).statusCode, 204)
  t.equal(signer(), '1230000110', 'the second direct merchant, chosen by mchid')
  t.equal((await failNotify({ mchid: '1230000109' })).statusCode, 204)
  t.equal(signer(), '1230000109')

  const before = sandbox.app.sandbox.requests.length
  const ambiguous = await failNotify({})
  t.equal(ambiguous.statusCode, 400)
  t.match(ambiguous.json(), { code: 'VALIDATION_ERROR', detail: { location: 'body', field: '/mchid', issue: /several direct merchant .*profiles; send one of 1230000109 \(brand-a\), 1230000110 \(brand-b\)/ } })
  const unknown = await failNotify({ mchid: '1230009999' })
  t.match(unknown.json(), { detail: { field: '/mchid', issue: /unknown merchant id 1230009999: one of 1230000109 \(brand-a\), 1230000110 \(brand-b\)/ } })
  const wrongKind = await failNotify({ mchid: '1900000100' })
  t.match(wrongKind.json(), { detail: { field: '/mchid', issue: /1900000100 is the profile sp, not a direct merchant/ } })
  const payWrongKind = await app.inject({ method: 'POST', url: '/payscore/partner/serviceorder/1/pay', headers: { ...json, ...auth() }, payload: { ...collect, sp_mchid: '1230000109' } })
  t.match(payWrongKind.json(), { detail: { field: '/sp_mchid', issue: /1230000109 is the profile brand-a, not a service provider/ } })
  t.equal(sandbox.app.sandbox.requests.length, before, 'nothing was sent')

  t.equal((await app.inject({ method: 'POST', url: '/payscore/partner/serviceorder/1/pay', headers: { ...json, ...auth() }, payload: collect })).statusCode, 204, 'one service provider: the default')
  t.equal(signer(), '1900000100')
})

t.test('callers limited to some profiles: 403 outside them, nothing sent; their only profile is their default', async t => {
  const sandbox = await testSandbox(t, { merchants: THREE })
  const tokens = [
    { name: 'billing', token: TOKENS.billing },
    { name: 'brand-b-billing', token: 'brand-b-token-0123456789abcdef', merchants: ['brand-b'] }
  ]
  const { app, logs } = await testGateway(t, { sandbox, config: { auth: { enabled: true, tokens } } })
  const call = (token: string, body: object, url = '/contracts/1/fail-notify') => app.inject({ method: 'POST', url, headers: { ...json, authorization: `Bearer ${token}` }, payload: body })
  const before = sandbox.app.sandbox.requests.length
  const outside = await call('brand-b-token-0123456789abcdef', { mchid: '1230000109' })
  t.equal(outside.statusCode, 403)
  t.match(outside.json(), { code: 'FORBIDDEN', message: 'Caller brand-b-billing may not use merchant brand-a', detail: { outcome: 'not_executed' } })
  const noProvider = await call('brand-b-token-0123456789abcdef', collect, '/payscore/partner/serviceorder/1/pay')
  t.match(noProvider.json(), { code: 'FORBIDDEN', message: /may not use any service provider/ })
  const elsewhere = await call('brand-b-token-0123456789abcdef', { ...collect, sp_mchid: '1230000109' }, '/payscore/partner/serviceorder/1/pay')
  t.equal(elsewhere.statusCode, 400)
  t.match(elsewhere.json(), { detail: { field: '/sp_mchid', issue: 'unknown merchant id 1230000109: one of none this caller may use' } }, 'a profile outside the caller\'s is not named to it')
  t.equal(sandbox.app.sandbox.requests.length, before, 'nothing was sent')
  t.equal((await call('brand-b-token-0123456789abcdef', {})).statusCode, 204, 'the only direct merchant it may use is its default')
  t.equal(sandbox.app.sandbox.requests.at(-1)?.mchid, '1230000110')
  t.equal((await call(TOKENS.billing, { mchid: '1230000109' })).statusCode, 204, 'an unlimited caller uses any')
  t.match(logs.find('operation').at(-1), { caller: 'billing', merchant: 'brand-a' })
})

t.test('an Idempotency-Key never crosses merchants', async t => {
  const sandbox = await testSandbox(t, { merchants: THREE })
  const { app } = await testGateway(t, { sandbox })
  const call = (mchid: string) => app.inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: { ...json, ...auth(), 'idempotency-key': 'same-key' }, payload: { mchid } })
  const a = await call('1230000109')
  const b = await call('1230000110')
  t.same([a.statusCode, b.statusCode], [204, 204])
  t.equal(b.headers['idempotent-replayed'], undefined, 'the other merchant\'s call is its own, neither a replay nor a conflict')
  t.equal((await call('1230000110')).headers['idempotent-replayed'], 'true')
  t.same(sandbox.app.sandbox.requests.map(r => r.mchid), ['1230000109', '1230000110'])
})

t.test('the single-merchant settings: one profile that serves both kinds of operation, as before profiles', async t => {
  const { app, sandbox } = await testGateway(t, { only: ['direct'], wechat: { types: ['direct', 'partner'] } })
  t.equal((await app.inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: { ...json, ...auth() }, payload: {} })).statusCode, 204)
  const pay = await app.inject({ method: 'POST', url: '/payscore/partner/serviceorder/1/pay', headers: { ...json, ...auth() }, payload: collect })
  t.equal(sandbox.app.sandbox.requests.at(-1)?.mchid, '1230000109', 'sent, signed by the one merchant the gateway holds')
  t.match(pay.json(), { code: 'NO_AUTH', detail: { outcome: 'refused' } }, 'and WeChat Pay (here the sandbox) decides whether that account may call it')
})
