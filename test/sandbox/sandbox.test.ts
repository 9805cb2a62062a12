import { createDecipheriv, createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { request } from 'undici'
import { createLogger } from '../../src/logger.js'
import { loadMerchantsFile } from '../../src/merchants-file.js'
import type { RunningSandbox } from '../../src/sandbox/index.js'
import { ensureMerchants, type SandboxMerchant } from '../../src/sandbox/merchants.js'
import { KeyRing } from '../../src/wechat/keys.js'
import { signRequest } from '../../src/wechat/signer.js'
import { verifyResponse } from '../../src/wechat/verifier.js'
import { testSandbox } from '../helpers.js'

const PATH = '/v3/payscore/partner/serviceorder/1234323JKHDFE1243252/pay'
let orders = 0
/** A pay path for an order not paid yet: the sandbox remembers orders, and a paid one answers ORDER_DONE. */
const freshOrder = (): string => `/v3/payscore/partner/serviceorder/order-${++orders}/pay`
const BODY = '{"service_id":"2002000000000558128851361561536","sub_mchid":"1900000109"}'

interface CallOptions { as?: string, method?: string, path?: string, body?: string, headers?: Record<string, string>, mchid?: string, serial?: string, now?: number, keyFile?: string }

const merchant = (sandbox: RunningSandbox, name: string): SandboxMerchant => sandbox.merchants.all.find(m => m.ids.name === name) as SandboxMerchant
const file = (sandbox: RunningSandbox, m: SandboxMerchant, name: string): string => sandbox.merchants.path(m, name)

/** A request signed as merchant `as` (the service provider by default) would sign it; `headers` overrides any header. */
async function call (sandbox: RunningSandbox, o: CallOptions = {}) {
  const m = merchant(sandbox, o.as ?? 'partner')
  const method = o.method ?? 'POST'
  const body = o.body ?? (method === 'GET' ? '' : BODY)
  const path = o.path ?? freshOrder()
  const signed = await signRequest({
    mchid: o.mchid ?? m.ids.mchid,
    serial: o.serial ?? m.ids.merchant_serial,
    privateKey: createPrivateKey(readFileSync(o.keyFile ?? file(sandbox, m, m.files.merchantKey)))
  }, method, path, body, o.now)
  const res = await request(sandbox.url + path, {
    method: method as 'POST',
    headers: { accept: 'application/json', 'content-type': 'application/json', 'user-agent': 'test/1', authorization: signed.authorization, ...o.headers },
    ...(body !== '' && { body })
  })
  const raw = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, headers: res.headers as Record<string, string>, raw, json: raw.length > 0 ? JSON.parse(raw.toString()) : undefined }
}

/** The keys that verify the sandbox's answers to merchant `name`. */
function verifier (sandbox: RunningSandbox, name = 'partner'): KeyRing {
  const m = merchant(sandbox, name)
  const keys = new KeyRing(m.ids.merchant_serial)
  keys.setPublicKey(m.ids.wechatpay_public_key_id, createPublicKey(readFileSync(file(sandbox, m, m.files.publicKey))))
  return keys
}

t.test('a well-signed call gets a 204 signed with the WeChat Pay key of the merchant that called', async t => {
  const sandbox = await testSandbox(t)
  const res = await call(sandbox, { path: PATH })
  t.equal(res.status, 204)
  t.equal(res.headers['wechatpay-serial'], merchant(sandbox, 'partner').ids.wechatpay_public_key_id)
  t.equal(res.headers['wechatpay-signature-type'], 'WECHATPAY2-SHA256-RSA2048')
  t.match(res.headers['request-id'], /^[0-9a-f]{32}$/)
  t.match(await verifyResponse(verifier(sandbox, 'partner'), res.headers, res.raw), { ok: true })
  t.match(await verifyResponse(verifier(sandbox, 'direct'), res.headers, res.raw), { ok: false, reason: 'UNKNOWN_SERIAL' }, 'not the other merchant\'s key')
  t.match(sandbox.app.sandbox.requests.at(-1), { method: 'POST', url: PATH, operation: 'payscorePartnerCollect', mchid: '1900000100', status: 204, body: BODY })

  const direct = await call(sandbox, { as: 'direct', path: '/v3/papay/contracts/1/fail-notify', body: '{"mchid":"1230000109","appid":"wx1"}' })
  t.equal(direct.status, 204)
  t.match(await verifyResponse(verifier(sandbox, 'direct'), direct.headers, direct.raw), { ok: true }, 'the direct merchant\'s answer, with its own key')
})

t.test('each merchant calls only the APIs of its kind, and only for itself', async t => {
  const sandbox = await testSandbox(t)
  const asDirect = await call(sandbox, { as: 'direct' })
  t.match(asDirect, { status: 403, json: { code: 'NO_AUTH', message: /1230000109/ } }, 'a direct merchant cannot call a service provider\'s API')
  t.match(await verifyResponse(verifier(sandbox, 'direct'), asDirect.headers, asDirect.raw), { ok: true }, 'signed: the request was authenticated')
  const asPartner = await call(sandbox, { path: '/v3/papay/contracts/1/fail-notify', body: '{"mchid":"1900000100","appid":"wx1"}' })
  t.match(asPartner, { status: 403, json: { code: 'NO_AUTH' } }, 'nor the reverse')
  const other = await call(sandbox, { path: '/v3/partner-papay/contracts/1/notify', body: JSON.stringify({ sp_mchid: '1230000109', sp_appid: 'wx1', sub_mchid: '1', estimated_amount: { amount: 1 } }) })
  t.match(other, { status: 400, json: { code: 'INVALID_REQUEST', message: /sp_mchid/ } }, 'a body naming another merchant than the signer')
  t.equal((await call(sandbox, { path: '/v3/partner-papay/contracts/1/notify', body: JSON.stringify({ sp_mchid: '1900000100', sp_appid: 'wx1', sub_mchid: '1', estimated_amount: { amount: 1 } }) })).status, 204)
})

t.test('requests are checked as WeChat Pay checks them; refusals after the signature check are signed, others not', async t => {
  const sandbox = await testSandbox(t)
  const keys = verifier(sandbox)
  const cases: Array<[string, CallOptions, number, string, RegExp]> = [
    ['no Authorization', { headers: { authorization: '' } }, 401, 'SIGN_ERROR', /missing|scheme/],
    ['another scheme', { headers: { authorization: 'Bearer x' } }, 401, 'SIGN_ERROR', /scheme/],
    ['a field missing', { headers: { authorization: 'WECHATPAY2-SHA256-RSA2048 mchid="1230000109",nonce_str="x"' } }, 401, 'SIGN_ERROR', /lacks signature, timestamp, serial_no/],
    ['a malformed field', { headers: { authorization: 'WECHATPAY2-SHA256-RSA2048 mchid=1230000109' } }, 401, 'SIGN_ERROR', /pairs separated by commas/],
    ['an unknown merchant', { mchid: '1900000000' }, 401, 'SIGN_ERROR', /not a merchant/],
    ['an unknown serial', { serial: 'ABCDEF' }, 401, 'SIGN_ERROR', /serial_no ABCDEF/],
    ['an old timestamp', { now: Date.now() - 301_000 }, 401, 'SIGN_ERROR', /5 minutes/],
    ['another key', { keyFile: new URL('../fixtures/wechatpay/merchant-test-key.pem', import.meta.url).pathname }, 401, 'SIGN_ERROR', /sign not match/],
    ['no User-Agent', { headers: { 'user-agent': '' } }, 400, 'INVALID_REQUEST', /User-Agent/],
    ['Accept is not JSON', { headers: { accept: 'text/html' } }, 400, 'INVALID_REQUEST', /Accept/],
    ['a form body', { headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 400, 'INVALID_REQUEST', /Content-Type/],
    ['an unknown API', { path: '/v3/nothing/here' }, 404, 'NOT_FOUND', /no such API/],
    ['a GET on a POST API', { method: 'GET' }, 405, 'METHOD_NOT_ALLOWED', /method/],
    ['a bad path parameter', { path: '/v3/payscore/partner/serviceorder/a%20b/pay' }, 400, 'PARAM_ERROR', /out_order_no|参数/],
    ['a body that is not JSON', { body: '{"sub_mchid":' }, 400, 'PARAM_ERROR', /JSON/],
    ['the signer\'s merchant id is not the body\'s', { as: 'direct', path: '/v3/papay/contracts/1/fail-notify', body: '{"mchid":"1900000000","appid":"wx1"}' }, 400, 'INVALID_REQUEST', /mchid/]
  ]
  for (const [what, options, status, code, text] of cases) {
    const headers = Object.fromEntries(Object.entries(options.headers ?? {}).filter(([, v]) => v !== ''))
    const drop = Object.entries(options.headers ?? {}).filter(([, v]) => v === '').map(([k]) => k)
    const res = await call(sandbox, { ...options, headers: { ...headers, ...Object.fromEntries(drop.map(k => [k, undefined as unknown as string])) } })
    t.equal(res.status, status, what)
    t.equal(res.json.code, code, what)
    t.match(JSON.stringify(res.json), text, what)
    // WeChat Pay signs its answer only once it has verified the request's signature (docs/wechatpay.md §4).
    if (code === 'SIGN_ERROR' || (status === 400 && code === 'INVALID_REQUEST' && options.as === undefined)) {
      t.equal(res.headers['wechatpay-signature'], undefined, `${what}: refused before the signature was checked: not signed`)
    } else {
      t.match(await verifyResponse(options.as === 'direct' ? verifier(sandbox, 'direct') : keys, res.headers, res.raw), { ok: true }, `${what}: the error is signed`)
    }
  }
})

t.test('a bad body gets PARAM_ERROR with WeChat\'s detail shape', async t => {
  const sandbox = await testSandbox(t)
  const res = await call(sandbox, { path: '/v3/partner-papay/contracts/1/notify', body: JSON.stringify({ sp_mchid: '1230000109', sp_appid: 'wx1', sub_mchid: '1', estimated_amount: { amount: 0 } }) })
  t.equal(res.status, 400)
  t.same(res.json, { code: 'PARAM_ERROR', message: '参数错误', detail: { field: '/estimated_amount/amount', value: 0, issue: 'must be a positive integer number of fen (分): 1.00 CNY is 100', location: 'body' } })
  const extra = await call(sandbox, { as: 'direct', path: '/v3/papay/contracts/1/fail-notify', body: '{"mchid":"1230000109","appid":"wx1","x":1}' })
  t.match(extra.json, { code: 'PARAM_ERROR', detail: { field: '/x', issue: 'unknown field' } })
})

t.test('a failed signature check shows the start of the message WeChat Pay computed', async t => {
  const sandbox = await testSandbox(t)
  const res = await call(sandbox, { path: PATH, keyFile: new URL('../fixtures/wechatpay/merchant-test-key.pem', import.meta.url).pathname })
  t.match(res.json.detail.sign_information, {
    method: 'POST',
    url: PATH,
    sign_message_length: Buffer.byteLength(`POST\n${PATH}\n0000000000\n${'0'.repeat(32)}\n${BODY}\n`),
    truncated_sign_message: new RegExp(`^POST\n${PATH}\n\\d{10}\n[0-9A-F]{32}\n\\{"service_id":"2\n$`)
  })
})

t.test('faults: reserved ids, _ONCE, armed faults and the catalogue', async t => {
  const sandbox = await testSandbox(t)
  const reserved = await call(sandbox, { path: '/v3/payscore/partner/serviceorder/SANDBOX_ORDER_DONE/pay' })
  t.match(reserved, { status: 400, json: { code: 'ORDER_DONE' } })
  t.equal(sandbox.app.sandbox.requests.at(-1)?.fault, 'ORDER_DONE')

  // _ONCE: the first attempt of a signed request fails, a resend of the very same request passes.
  const path = '/v3/payscore/partner/serviceorder/SANDBOX_SYSTEM_ERROR_ONCE/pay'
  const sp = merchant(sandbox, 'partner')
  const signed = await signRequest({ mchid: sp.ids.mchid, serial: sp.ids.merchant_serial, privateKey: createPrivateKey(readFileSync(file(sandbox, sp, sp.files.merchantKey))) }, 'POST', path, BODY)
  const send = async () => (await request(sandbox.url + path, { method: 'POST', headers: { accept: 'application/json', 'content-type': 'application/json', 'user-agent': 't', authorization: signed.authorization }, body: BODY })).statusCode
  t.equal(await send(), 500)
  t.equal(await send(), 204)
  t.equal((await call(sandbox, { path })).status, 500, 'a new request fails once again')

  const arm = (spec: unknown) => request(`${sandbox.url}/sandbox/faults`, { method: 'POST', body: JSON.stringify(spec) })
  t.equal((await arm({ fault: 'SERVICE_UNAVAILABLE', times: 2, operation: 'payscorePartnerCollect' })).statusCode, 204)
  t.equal((await arm({ fault: 'NO_AUTH' })).statusCode, 204)
  t.equal((await call(sandbox)).status, 503)
  t.equal((await call(sandbox)).status, 503)
  t.equal((await call(sandbox)).status, 403)
  t.equal((await call(sandbox)).status, 204, 'armed faults are used up')
  t.equal((await arm({ fault: 'NOPE' })).statusCode, 400)
  t.equal((await arm('not json{')).statusCode, 400)
  await arm({ fault: 'ACCEPTED', operation: 'papayFailNotify' })
  t.equal((await call(sandbox)).status, 204, 'a fault armed for another operation waits')
  t.equal((await request(`${sandbox.url}/sandbox/faults`, { method: 'DELETE' })).statusCode, 204)
  t.equal((await call(sandbox, { as: 'direct', path: '/v3/papay/contracts/1/fail-notify', body: '{"mchid":"1230000109","appid":"wx1"}' })).status, 204, 'cleared')
  const slow = await arm({ fault: 'SLOW', delay_ms: 50 })
  t.equal(slow.statusCode, 204)
  t.equal((await call(sandbox)).status, 204)

  const catalogue = await (await request(`${sandbox.url}/sandbox/faults`)).body.json() as { faults: Record<string, string> }
  t.ok(catalogue.faults.SIGNTEST?.includes('SIGNTEST'))
  const listed = await (await request(`${sandbox.url}/sandbox/requests`)).body.json() as { requests: unknown[] }
  t.ok(listed.requests.length > 5)
  t.equal((await request(`${sandbox.url}/sandbox/requests`, { method: 'DELETE' })).statusCode, 204)
  t.equal(sandbox.app.sandbox.requests.length, 0)
})

t.test('key modes: certificates are served encrypted with the APIv3 key; migration follows Wechatpay-Serial', async t => {
  const sandbox = await testSandbox(t)
  const m = merchant(sandbox, 'partner')
  const json = { ...m.ids, apiv3_key: m.apiv3Key }
  const none = await call(sandbox, { method: 'GET', path: '/v3/certificates' })
  t.match(none, { status: 404, json: { code: 'RESOURCE_NOT_EXISTS', message: /微信支付公钥/ } }, 'public-key mode: no platform certificates, like a new merchant')

  const setMode = (mode: string) => request(`${sandbox.url}/sandbox/key-mode`, { method: 'PUT', body: mode })
  t.equal((await setMode('nonsense')).statusCode, 400)
  t.equal((await setMode('certificate')).statusCode, 204)
  const certs = await call(sandbox, { method: 'GET', path: '/v3/certificates' })
  t.equal(certs.status, 200)
  t.equal(certs.headers['wechatpay-serial'], json.platform_cert_serial)
  const [entry] = certs.json.data
  t.match(entry, { serial_no: json.platform_cert_serial, effective_time: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00$/, encrypt_certificate: { algorithm: 'AEAD_AES_256_GCM', associated_data: 'certificate', nonce: /^[0-9a-f]{12}$/ } })
  const sealed = Buffer.from(entry.encrypt_certificate.ciphertext, 'base64')
  const decipher = createDecipheriv('aes-256-gcm', Buffer.from(json.apiv3_key), Buffer.from(entry.encrypt_certificate.nonce))
  decipher.setAAD(Buffer.from('certificate'))
  decipher.setAuthTag(sealed.subarray(-16))
  const pem = Buffer.concat([decipher.update(sealed.subarray(0, -16)), decipher.final()]).toString()
  t.equal(pem, readFileSync(file(sandbox, m, m.files.platformCert), 'utf8'))
  const cert = new X509Certificate(pem)
  t.equal(cert.serialNumber.toUpperCase(), json.platform_cert_serial)
  const ring = new KeyRing(json.merchant_serial)
  ring.setCertificates(new Map([[json.platform_cert_serial, { key: cert.publicKey, expiresAt: Date.parse(cert.validTo) }]]))
  t.match(await verifyResponse(ring, certs.headers, certs.raw), { ok: true }, 'signed by the platform certificate')

  await setMode('migration')
  t.equal((await call(sandbox)).headers['wechatpay-serial'], json.platform_cert_serial, 'no Wechatpay-Serial: platform certificate')
  t.equal((await call(sandbox, { headers: { 'wechatpay-serial': json.wechatpay_public_key_id } })).headers['wechatpay-serial'], json.wechatpay_public_key_id, 'PUB_KEY_ID asked for: public key')
})

t.test('the sandbox folder is made once and reused; merchants.json is a merchants file; certificates are real X.509', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'sandbox-merchants-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const specs = [{ name: 'brand-a', type: 'direct' as const, mchid: '1900000001', merchantSerial: '1a2b3c4d5e6f7a8b', publicKeyId: 'PUB_KEY_ID_0123' }, { name: 'sp', type: 'partner' as const, mchid: '1900000002' }]
  const first = await ensureMerchants(dir, specs)
  const again = await ensureMerchants(dir, [{ ...specs[0] as typeof specs[0], mchid: 'ignored' }, specs[1] as typeof specs[1]])
  t.same(again.all.map(m => m.ids), first.all.map(m => m.ids), 'the keys and ids of the first start are kept')
  const [a, sp] = first.all as [SandboxMerchant, SandboxMerchant]
  t.match(a.ids, { name: 'brand-a', type: 'direct', mchid: '1900000001', merchant_serial: '1A2B3C4D5E6F7A8B', wechatpay_public_key_id: 'PUB_KEY_ID_0123' })
  t.match(a.apiv3Key, /^[A-Za-z0-9]{32}$/)
  t.not(a.apiv3Key, sp.apiv3Key, 'each merchant has its own keys')
  const problems: string[] = []
  const profiles = loadMerchantsFile(first.writeProfiles('migration'), { baseUrl: 'http://127.0.0.1:1' }, problems)
  t.same(problems, [])
  t.match(profiles, [
    { name: 'brand-a', types: ['direct'], mchid: '1900000001', keyMode: 'migration', publicKeyId: 'PUB_KEY_ID_0123', apiv3Key: a.apiv3Key, privateKeyFile: join(dir, 'brand-a', 'apiclient_key.pem') },
    { name: 'sp', types: ['partner'], mchid: '1900000002' }
  ], 'WECHATPAY_MERCHANTS_FILE=<dir>/merchants.json works as is')
  const sdk = JSON.parse(readFileSync(join(dir, 'sandbox.json'), 'utf8')) as Record<string, string>
  t.match(sdk, { mchid: '1900000001', merchant_serial: '1A2B3C4D5E6F7A8B', merchant_private_key_file: 'brand-a/apiclient_key.pem', apiv3_key: a.apiv3Key }, 'sandbox.json: the direct merchant, for SDKs')
  const merchantCert = new X509Certificate(readFileSync(first.path(a, a.files.merchantCert)))
  t.equal(merchantCert.serialNumber.toUpperCase(), '1A2B3C4D5E6F7A8B')
  t.ok(merchantCert.checkPrivateKey(createPrivateKey(readFileSync(first.path(a, a.files.merchantKey)))))
  t.ok(merchantCert.verify(merchantCert.publicKey), 'self-signed signature is valid')
  t.match(merchantCert.subject, /CN=1900000001 merchant API certificate/)
  t.ok(Date.parse(merchantCert.validTo) > Date.now() + 4 * 365 * 24 * 3600_000)
})

t.test('the official Node SDK (wechatpay-axios-plugin) configured from sandbox.json calls the sandbox and verifies it', async t => {
  const sandbox = await testSandbox(t)
  const json = JSON.parse(readFileSync(join(sandbox.merchants.dir, 'sandbox.json'), 'utf8')) as { mchid: string, appid: string, merchant_serial: string, merchant_private_key_file: string, wechatpay_public_key_id: string, wechatpay_public_key_file: string }
  const path = (f: string): string => join(sandbox.merchants.dir, f)
  const { Wechatpay } = await import('wechatpay-axios-plugin')
  const wxpay = new Wechatpay({
    mchid: json.mchid,
    serial: json.merchant_serial,
    privateKey: readFileSync(path(json.merchant_private_key_file)),
    certs: { [json.wechatpay_public_key_id]: readFileSync(path(json.wechatpay_public_key_file)) },
    baseURL: sandbox.url
  } as never) as any
  const ok = await wxpay.v3.papay.contracts._contract_id_['fail-notify'].post({ mchid: json.mchid, appid: json.appid }, { contract_id: '123124412412423431' })
  t.equal(ok.status, 204)
  await t.rejects(wxpay.v3.payscore.partner.serviceorder._out_order_no_.pay.post(
    { service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' }, { out_order_no: '1234323JKHDFE1243252' }),
  { response: { status: 403, data: { code: 'NO_AUTH' } } } as never, 'sandbox.json is the direct merchant: a service provider API is refused')
  await t.rejects(wxpay.v3.papay.contracts._contract_id_['fail-notify'].post({ mchid: json.mchid, appid: json.appid }, { contract_id: 'SANDBOX_BAD_SIGNATURE' }),
    'the SDK itself rejects a bad signature from the sandbox')
  await t.rejects(wxpay.v3.papay.contracts._contract_id_['fail-notify'].post({ mchid: json.mchid, appid: json.appid }, { contract_id: 'SANDBOX_NO_AUTH' }),
    { response: { status: 403, data: { code: 'NO_AUTH' } } } as never)
  t.equal(createLogger('silent').level, 'silent')
})
