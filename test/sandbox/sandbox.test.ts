import { createDecipheriv, createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { request } from 'undici'
import { createLogger } from '../../src/logger.js'
import { ensureIdentity } from '../../src/sandbox/identity.js'
import type { RunningSandbox } from '../../src/sandbox/index.js'
import { KeyRing } from '../../src/wechat/keys.js'
import { signRequest } from '../../src/wechat/signer.js'
import { verifyResponse } from '../../src/wechat/verifier.js'
import { testSandbox } from '../helpers.js'

const PATH = '/v3/payscore/partner/serviceorder/1234323JKHDFE1243252/pay'
const BODY = '{"service_id":"2002000000000558128851361561536","sub_mchid":"1900000109"}'

interface CallOptions { method?: string, path?: string, body?: string, headers?: Record<string, string>, mchid?: string, serial?: string, now?: number, keyFile?: string }

/** A request signed as a merchant would sign it; `headers` overrides any header, including Authorization. */
async function call (sandbox: RunningSandbox, o: CallOptions = {}) {
  const { json, path } = sandbox.identity
  const method = o.method ?? 'POST'
  const body = o.body ?? (method === 'GET' ? '' : BODY)
  const signed = await signRequest({
    mchid: o.mchid ?? json.mchid,
    serial: o.serial ?? json.merchant_serial,
    privateKey: createPrivateKey(readFileSync(o.keyFile ?? path(json.merchant_private_key_file)))
  }, method, o.path ?? PATH, body, o.now)
  const res = await request(sandbox.url + (o.path ?? PATH), {
    method: method as 'POST',
    headers: { accept: 'application/json', 'content-type': 'application/json', 'user-agent': 'test/1', authorization: signed.authorization, ...o.headers },
    ...(body !== '' && { body })
  })
  const raw = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, headers: res.headers as Record<string, string>, raw, json: raw.length > 0 ? JSON.parse(raw.toString()) : undefined }
}

function verifier (sandbox: RunningSandbox): KeyRing {
  const { json, path } = sandbox.identity
  const keys = new KeyRing(json.merchant_serial)
  keys.setPublicKey(json.wechatpay_public_key_id, createPublicKey(readFileSync(path(json.wechatpay_public_key_file))))
  return keys
}

t.test('a well-signed call gets a signed 204 that verifies with the public key in sandbox.json', async t => {
  const sandbox = await testSandbox(t)
  const res = await call(sandbox)
  t.equal(res.status, 204)
  t.equal(res.headers['wechatpay-serial'], sandbox.identity.json.wechatpay_public_key_id)
  t.equal(res.headers['wechatpay-signature-type'], 'WECHATPAY2-SHA256-RSA2048')
  t.match(res.headers['request-id'], /^[0-9a-f]{32}$/)
  t.match(await verifyResponse(verifier(sandbox), res.headers, res.raw), { ok: true })
  t.match(sandbox.app.sandbox.requests.at(-1), { method: 'POST', url: PATH, operation: 'payscorePartnerCollect', status: 204, body: BODY })
})

t.test('requests are checked as WeChat Pay checks them; every refusal is signed, but a signature refusal', async t => {
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
    ['the signer\'s merchant id is not the body\'s', { path: '/v3/papay/contracts/1/fail-notify', body: '{"mchid":"1900000000","appid":"wx1"}' }, 400, 'INVALID_REQUEST', /mchid/]
  ]
  for (const [what, options, status, code, text] of cases) {
    const headers = Object.fromEntries(Object.entries(options.headers ?? {}).filter(([, v]) => v !== ''))
    const drop = Object.entries(options.headers ?? {}).filter(([, v]) => v === '').map(([k]) => k)
    const res = await call(sandbox, { ...options, headers: { ...headers, ...Object.fromEntries(drop.map(k => [k, undefined as unknown as string])) } })
    t.equal(res.status, status, what)
    t.equal(res.json.code, code, what)
    t.match(JSON.stringify(res.json), text, what)
    // WeChat Pay signs its answer only once it has verified the request's signature (PROTOCOL.md B.4).
    if (code === 'SIGN_ERROR') t.equal(res.headers['wechatpay-signature'], undefined, `${what}: the error is not signed`)
    else t.match(await verifyResponse(keys, res.headers, res.raw), { ok: true }, `${what}: the error is signed`)
  }
})

t.test('a bad body gets PARAM_ERROR with WeChat\'s detail shape', async t => {
  const sandbox = await testSandbox(t)
  const res = await call(sandbox, { path: '/v3/partner-papay/contracts/1/notify', body: JSON.stringify({ sp_mchid: '1230000109', sp_appid: 'wx1', sub_mchid: '1', estimated_amount: { amount: 0 } }) })
  t.equal(res.status, 400)
  t.same(res.json, { code: 'PARAM_ERROR', message: '参数错误', detail: { field: '/estimated_amount/amount', value: 0, issue: 'must be a positive integer number of fen (分): 1.00 CNY is 100', location: 'body' } })
  const extra = await call(sandbox, { path: '/v3/papay/contracts/1/fail-notify', body: '{"mchid":"1230000109","appid":"wx1","x":1}' })
  t.match(extra.json, { code: 'PARAM_ERROR', detail: { field: '/x', issue: 'unknown field' } })
})

t.test('a failed signature check shows the start of the message WeChat Pay computed', async t => {
  const sandbox = await testSandbox(t)
  const res = await call(sandbox, { keyFile: new URL('../fixtures/wechatpay/merchant-test-key.pem', import.meta.url).pathname })
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
  const signed = await signRequest({ mchid: '1230000109', serial: sandbox.identity.json.merchant_serial, privateKey: createPrivateKey(readFileSync(sandbox.identity.path('apiclient_key.pem'))) }, 'POST', path, BODY)
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
  t.equal((await call(sandbox, { path: '/v3/papay/contracts/1/fail-notify', body: '{"mchid":"1230000109","appid":"wx1"}' })).status, 204, 'cleared')
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
  const { json, path } = sandbox.identity
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
  t.equal(pem, readFileSync(path(json.platform_cert_file), 'utf8'))
  const cert = new X509Certificate(pem)
  t.equal(cert.serialNumber.toUpperCase(), json.platform_cert_serial)
  const ring = new KeyRing(json.merchant_serial)
  ring.setCertificates(new Map([[json.platform_cert_serial, { key: cert.publicKey, expiresAt: Date.parse(cert.validTo) }]]))
  t.match(await verifyResponse(ring, certs.headers, certs.raw), { ok: true }, 'signed by the platform certificate')

  await setMode('migration')
  t.equal((await call(sandbox)).headers['wechatpay-serial'], json.platform_cert_serial, 'no Wechatpay-Serial: platform certificate')
  t.equal((await call(sandbox, { headers: { 'wechatpay-serial': json.wechatpay_public_key_id } })).headers['wechatpay-serial'], json.wechatpay_public_key_id, 'PUB_KEY_ID asked for: public key')
})

t.test('the sandbox folder is made once and reused; its certificates are real X.509', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'sandbox-identity-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const first = await ensureIdentity(dir, { mchid: '1900000001', merchantSerial: '1a2b3c4d5e6f7a8b', publicKeyId: 'PUB_KEY_ID_0123' })
  const again = await ensureIdentity(dir, { mchid: 'ignored' })
  t.same(again.json, first.json)
  t.match(first.json, { mchid: '1900000001', merchant_serial: '1A2B3C4D5E6F7A8B', wechatpay_public_key_id: 'PUB_KEY_ID_0123', apiv3_key: /^[A-Za-z0-9]{32}$/ })
  const merchantCert = new X509Certificate(readFileSync(first.path(first.json.merchant_cert_file)))
  t.equal(merchantCert.serialNumber.toUpperCase(), '1A2B3C4D5E6F7A8B')
  t.ok(merchantCert.checkPrivateKey(createPrivateKey(readFileSync(first.path(first.json.merchant_private_key_file)))))
  t.ok(merchantCert.verify(merchantCert.publicKey), 'self-signed signature is valid')
  t.match(merchantCert.subject, /CN=1900000001 merchant API certificate/)
  t.ok(Date.parse(merchantCert.validTo) > Date.now() + 4 * 365 * 24 * 3600_000)
})

t.test('the official Node SDK (wechatpay-axios-plugin) configured from sandbox.json calls the sandbox and verifies it', async t => {
  const sandbox = await testSandbox(t)
  const { json, path } = sandbox.identity
  const { Wechatpay } = await import('wechatpay-axios-plugin')
  const wxpay = new Wechatpay({
    mchid: json.mchid,
    serial: json.merchant_serial,
    privateKey: readFileSync(path(json.merchant_private_key_file)),
    certs: { [json.wechatpay_public_key_id]: readFileSync(path(json.wechatpay_public_key_file)) },
    baseURL: sandbox.url
  } as never) as any
  const ok = await wxpay.v3.payscore.partner.serviceorder._out_order_no_.pay.post(
    { service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' }, { out_order_no: '1234323JKHDFE1243252' })
  t.equal(ok.status, 204)
  const notify = await wxpay.v3['partner-papay'].contracts._contract_id_.notify.post(
    { sp_mchid: json.mchid, sp_appid: json.appid, sub_mchid: '12345512', estimated_amount: { amount: 1, currency: 'CNY' } }, { contract_id: '123124412412423431' })
  t.equal(notify.status, 204)
  await t.rejects(wxpay.v3.papay.contracts._contract_id_['fail-notify'].post({ mchid: json.mchid, appid: json.appid }, { contract_id: 'SANDBOX_BAD_SIGNATURE' }),
    'the SDK itself rejects a bad signature from the sandbox')
  await t.rejects(wxpay.v3.papay.contracts._contract_id_['fail-notify'].post({ mchid: json.mchid, appid: json.appid }, { contract_id: 'SANDBOX_NO_AUTH' }),
    { response: { status: 403, data: { code: 'NO_AUTH' } } } as never)
  t.equal(createLogger('silent').level, 'silent')
})
