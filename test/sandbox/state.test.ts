import { createPrivateKey } from 'node:crypto'
import { readFileSync } from 'node:fs'
import t from 'tap'
import { request } from 'undici'
import type { RunningSandbox } from '../../src/sandbox/index.js'
import type { SandboxMerchant } from '../../src/sandbox/merchants.js'
import { loadConfig } from '../../src/config.js'
import { sandboxOptions, sandboxSettings } from '../../src/sandbox/settings.js'
import { SandboxState, type OrderState } from '../../src/sandbox/state.js'
import { signRequest } from '../../src/wechat/signer.js'
import { testSandbox } from '../helpers.js'

const SP = { mchid: '1900000100', appid: 'wxsp', sub_mchid: '1900000109' }
const beijing = (hhmm: string): Date => new Date(`2026-12-02T${hhmm}:00+08:00`)

t.test('PayScore orders: pay moves a completed order to paid; other states are refused as WeChat Pay refuses them', async t => {
  const state = new SandboxState(() => beijing('10:00'))
  const fresh = state.order({ ...SP, out_order_no: 'o-1' })
  t.match(fresh, { state: 'DOING', state_description: 'MCH_COMPLETE', collections: [] }, 'first referenced: waiting for payment')
  if ('code' in fresh) return
  t.equal(state.pay(fresh), undefined)
  t.match(state.orderAnswer(fresh), { state: 'DONE', collection: { state: 'USER_PAID', paid_amount: 50000, paying_amount: 0, details: [{ seq: 1, paid_time: '20261202100000' }] } })
  t.match(state.pay(fresh), { status: 400, code: 'ORDER_DONE' }, 'a paid order is not collected twice')
  t.equal(fresh.collections.length, 1)

  const refusals: Array<[OrderState, 'USER_CONFIRM' | undefined, string]> = [
    ['REVOKED', undefined, 'ORDER_CANCELED'],
    ['CREATED', undefined, 'INVALID_ORDER_STATE'],
    ['EXPIRED', undefined, 'INVALID_ORDER_STATE'],
    ['DOING', 'USER_CONFIRM', 'INVALID_ORDER_STATE']
  ]
  for (const [s, description, code] of refusals) {
    const order = state.putOrder({ ...SP, out_order_no: `o-${s}-${description ?? ''}` }, { state: s, state_description: description })
    t.match(state.pay(order), { status: 400, code }, `${s} ${description ?? ''}`)
    t.equal(order.collections.length, 0)
    t.equal(order.state, s, 'unchanged')
  }

  t.same(state.order({ ...SP, out_order_no: 'o-1', service_id: 'other' }), { status: 400, code: 'PARAM_ERROR', message: 'service_id 与订单不一致 / the order o-1 belongs to service 2002000000000558128851361561536' })
  t.match(state.order({ ...SP, query_id: fresh.query_id }), { out_order_no: 'o-1' })
  t.match(state.order({ ...SP, sub_mchid: '1', query_id: fresh.query_id }), { status: 404, code: 'ORDER_NOT_EXIST' }, 'another sub-merchant\'s order is not found')
  t.match(state.order({ ...SP, query_id: 'nope' }), { status: 404, code: 'ORDER_NOT_EXIST' })
  t.match(state.order({ ...SP, mchid: '1900000999', out_order_no: 'o-1' }), { state: 'DOING' }, 'orders belong to their merchant')
})

t.test('contracts: notices only while SIGNED, and only 07:00-22:00 Beijing time unless the window is off', async t => {
  let now = beijing('12:00')
  const state = new SandboxState(() => now)
  const contract = state.contract({ mchid: '1230000109', appid: 'wx', sub_mchid: '', contract_id: '123' })
  t.match(contract, { state: 'SIGNED', plan_id: 12535 })
  t.equal(state.notice(contract, true), undefined)
  for (const [time, allowed] of [['06:59', false], ['07:00', true], ['21:59', true], ['22:00', false], ['02:00', false]] as const) {
    now = beijing(time)
    const refused = state.notice(contract, true)
    if (allowed) t.equal(refused, undefined, `${time} accepted`)
    else t.match(refused, { status: 400, code: 'RULE_LIMIT' }, `${time} refused`)
    t.equal(state.notice(contract, false), undefined, `${time}: accepted with the window off`)
  }
  const byCode = state.contract({ mchid: '1230000109', appid: 'wx', sub_mchid: '', plan_id: 7, out_contract_code: 'c' })
  t.equal(state.contract({ mchid: '1230000109', appid: 'wx', sub_mchid: '', contract_id: byCode.contract_id }), byCode, 'found again by its id')
  t.equal(state.contract({ mchid: '1230000109', appid: 'wx', sub_mchid: '', plan_id: 7, out_contract_code: 'c' }).contract_id, byCode.contract_id, 'a stable id')
  const ended = state.putContract({ mchid: '1230000109', appid: 'wx', sub_mchid: '', contract_id: byCode.contract_id, plan_id: 7, out_contract_code: 'c' }, 'TERMINATED')
  now = beijing('12:00')
  t.match(state.notice(ended, true), { status: 400, code: 'CONTRACT_NOT_EXIST' })
  t.match(state.contractAnswer(ended, false), { contract_state: 'TERMINATED', contract_terminate_info: { contract_terminated_time: /\+08:00$/ } })
})

const merchant = (sandbox: RunningSandbox, type: string): SandboxMerchant => sandbox.merchants.all.find(m => m.ids.type === type) as SandboxMerchant

async function send (sandbox: RunningSandbox, type: 'direct' | 'partner', method: 'GET' | 'POST', path: string, body = '', sentPath = path) {
  const m = merchant(sandbox, type)
  const privateKey = createPrivateKey(readFileSync(sandbox.merchants.path(m, m.files.merchantKey)))
  const signed = await signRequest({ mchid: m.ids.mchid, serial: m.ids.merchant_serial, privateKey }, method, path, body)
  const res = await request(sandbox.url + sentPath, {
    method,
    headers: { accept: 'application/json', 'content-type': 'application/json', 'user-agent': 't', authorization: signed.authorization },
    ...(body !== '' && { body })
  })
  const text = await res.body.text()
  return { status: res.statusCode, json: text === '' ? undefined : JSON.parse(text) }
}

const PAY_BODY = '{"service_id":"2002000000000558128851361561536","sub_mchid":"1900000109"}'
const payPath = (no: string): string => `/v3/payscore/partner/serviceorder/${no}/pay`
const queryPath = (no: string): string => `/v3/payscore/partner/serviceorder?service_id=2002000000000558128851361561536&out_order_no=${no}&sub_mchid=1900000109`

t.test('faults that leave the outcome unknown carry the call out; refusals, 202 and RESET do not', async t => {
  const sandbox = await testSandbox(t)
  const arm = (fault: string) => request(`${sandbox.url}/sandbox/faults`, { method: 'POST', body: JSON.stringify({ fault, operation: 'payscorePartnerCollect' }) })
  const cases: Array<[string, boolean]> = [
    ['RESET_AFTER', true], ['PROXY_TIMEOUT', true], ['BAD_SIGNATURE', true], ['NOT_JSON', true], ['UNSIGNED', true],
    ['RESET', false], ['SYSTEM_ERROR', false], ['UNSIGNED_ERROR', false], ['ACCEPTED', false], ['FREQUENCY_LIMITED', false]
  ]
  for (const [fault, carried] of cases) {
    await arm(fault)
    await send(sandbox, 'partner', 'POST', payPath(`f-${fault}`), PAY_BODY).catch(() => undefined)
    const order = await send(sandbox, 'partner', 'GET', queryPath(`f-${fault}`))
    t.equal(order.json.state, carried ? 'DONE' : 'DOING', `${fault}: ${carried ? 'carried out' : 'not carried out'}`)
  }
  // Reserved ids strike operations only: the order can be queried.
  await send(sandbox, 'partner', 'POST', payPath('SANDBOX_RESET_AFTER'), PAY_BODY).catch(() => undefined)
  t.match((await send(sandbox, 'partner', 'GET', queryPath('SANDBOX_RESET_AFTER'))).json, { state: 'DONE', collection: { state: 'USER_PAID' } })
})

t.test('queries are checked as WeChat Pay checks them; a signature covers the query string', async t => {
  const sandbox = await testSandbox(t)
  const both = await send(sandbox, 'partner', 'GET', '/v3/payscore/partner/serviceorder?service_id=1&out_order_no=a&query_id=b&sub_mchid=1')
  t.match(both, { status: 400, json: { code: 'PARAM_ERROR', detail: { field: 'out_order_no', location: 'query' } } })
  const repeated = await send(sandbox, 'partner', 'GET', '/v3/payscore/partner/serviceorder?service_id=1&out_order_no=a&out_order_no=b&sub_mchid=1')
  t.match(repeated, { status: 400, json: { code: 'PARAM_ERROR', message: /out_order_no/ } })
  const direct = await send(sandbox, 'direct', 'GET', queryPath('x'))
  t.match(direct, { status: 403, json: { code: 'NO_AUTH' } }, 'a direct merchant cannot query a service provider\'s order')
  // DESIGN finding: a path signed without a query string, sent with one, is not the signed request.
  const extra = await send(sandbox, 'partner', 'POST', payPath('x'), PAY_BODY, `${payPath('x')}?x=1`)
  t.match(extra, { status: 401, json: { code: 'SIGN_ERROR' } })
})

t.test('the control API puts orders and contracts in any state, and names what it refuses', async t => {
  const sandbox = await testSandbox(t)
  const control = async (path: string, body?: unknown) => {
    const res = await request(`${sandbox.url}${path}`, body === undefined ? {} : { method: 'POST', body: JSON.stringify(body) })
    return { status: res.statusCode, json: await res.body.json() as any }
  }
  const order = await control('/sandbox/orders', { sub_mchid: '1900000109', out_order_no: 'c-1', state: 'REVOKED' })
  t.match(order, { status: 201, json: { mchid: '1900000100', state: 'REVOKED', query_id: /./ } })
  t.match(await send(sandbox, 'partner', 'POST', payPath('c-1'), PAY_BODY), { status: 400, json: { code: 'ORDER_CANCELED' } })
  t.match((await control('/sandbox/orders')).json.orders, [{ out_order_no: 'c-1' }])
  t.match(await control('/sandbox/orders', { sub_mchid: '1', out_order_no: 'c-2', state: 'PAID' }), { status: 400, json: { code: 'PARAM_ERROR', message: /^state: / } })
  t.match(await control('/sandbox/orders', { sp_mchid: '1230000109', sub_mchid: '1', out_order_no: 'c-2', state: 'DONE' }), { status: 400, json: { message: /no partner merchant 1230000109/ } })
  const contract = await control('/sandbox/contracts', { plan_id: 1, out_contract_code: 'k', state: 'TERMINATED' })
  t.match(contract, { status: 201, json: { mchid: '1230000109', sub_mchid: '', contract_id: /^\d{18}$/, state: 'TERMINATED' } })
  const notice = await send(sandbox, 'direct', 'POST', `/v3/papay/contracts/${contract.json.contract_id}/fail-notify`, '{"mchid":"1230000109","appid":"wx1"}')
  t.match(notice, { status: 400, json: { code: 'CONTRACT_NOT_EXIST' } })
  t.match((await control('/sandbox/contracts')).json.contracts, [{ out_contract_code: 'k' }])
})

t.test('the notice window is enforced by default, and the SANDBOX_NOTICE_WINDOW setting turns it off', async t => {
  const body = '{"sp_mchid":"1900000100","sp_appid":"wx1","sub_mchid":"12345512","estimated_amount":{"amount":1}}'
  const night = await testSandbox(t, { clock: () => beijing('23:30') })
  t.match(await send(night, 'partner', 'POST', '/v3/partner-papay/contracts/1/notify', body), { status: 400, json: { code: 'RULE_LIMIT' } })
  const off = await testSandbox(t, { clock: () => beijing('23:30'), noticeWindow: false })
  t.equal((await send(off, 'partner', 'POST', '/v3/partner-papay/contracts/1/notify', body)).status, 204)
})

t.test('SANDBOX_NOTICE_WINDOW: the environment setting becomes the simulator\'s option, for npm run sandbox and npm start alike', async t => {
  const window = (env: Record<string, string>): boolean | undefined => sandboxOptions(sandboxSettings.parse(env)).noticeWindow
  t.equal(window({}), true, 'on by default')
  t.equal(window({ SANDBOX_NOTICE_WINDOW: 'on' }), true)
  t.equal(window({ SANDBOX_NOTICE_WINDOW: 'off' }), false)
  t.notOk(sandboxSettings.safeParse({ SANDBOX_NOTICE_WINDOW: 'no' }).success, 'anything else is a start error')
  // npm start's sandbox mode: the gateway's configuration keeps the setting for the simulator it starts (server.ts).
  t.equal(sandboxOptions(loadConfig({ SANDBOX_NOTICE_WINDOW: 'off' }).sandbox).noticeWindow, false)
  t.equal(sandboxOptions(loadConfig({}).sandbox).noticeWindow, true)
  // And the simulator started from it takes a notice at night.
  const body = '{"sp_mchid":"1900000100","sp_appid":"wx1","sub_mchid":"12345512","estimated_amount":{"amount":1}}'
  const night = await testSandbox(t, { clock: () => beijing('23:30'), noticeWindow: window({ SANDBOX_NOTICE_WINDOW: 'off' }) as boolean })
  t.equal((await send(night, 'partner', 'POST', '/v3/partner-papay/contracts/2/notify', body)).status, 204)
})

t.test('benchmarks: presigned empty answers, each with its own nonce, then signed as they go', async t => {
  const sandbox = await testSandbox(t, { presign: { direct: 3 } })
  const { verifyResponse } = await import('../../src/wechat/verifier.js')
  const { KeyRing } = await import('../../src/wechat/keys.js')
  const { createPublicKey } = await import('node:crypto')
  const m = merchant(sandbox, 'direct')
  const keys = new KeyRing(m.ids.merchant_serial)
  keys.setPublicKey(m.ids.wechatpay_public_key_id, createPublicKey(readFileSync(sandbox.merchants.path(m, m.files.publicKey))))
  const nonces = new Set<string>()
  for (let i = 0; i < 5; i++) {
    const privateKey = createPrivateKey(readFileSync(sandbox.merchants.path(m, m.files.merchantKey)))
    const path = '/v3/papay/contracts/1/fail-notify'
    const body = '{"mchid":"1230000109","appid":"wx1"}'
    const signed = await signRequest({ mchid: m.ids.mchid, serial: m.ids.merchant_serial, privateKey }, 'POST', path, body)
    const res = await request(sandbox.url + path, { method: 'POST', headers: { accept: 'application/json', 'content-type': 'application/json', 'user-agent': 't', authorization: signed.authorization }, body })
    t.equal(res.statusCode, 204)
    t.match(await verifyResponse(keys, res.headers, Buffer.alloc(0)), { ok: true }, `answer ${i + 1} verifies`)
    nonces.add(res.headers['wechatpay-nonce'] as string)
    await res.body.dump()
  }
  t.equal(nonces.size, 5, 'no nonce twice')
})
