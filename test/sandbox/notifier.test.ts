import { createDecipheriv, createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import t from 'tap'
import type { Test } from 'tap'
import { request } from 'undici'
import { createLogger } from '../../src/logger.js'
import { startSandbox, type RunningSandbox } from '../../src/sandbox/index.js'
import type { SandboxMerchant } from '../../src/sandbox/merchants.js'
import { RESEND_SECONDS, type NotificationRecord } from '../../src/sandbox/notifier.js'
import { sandboxOptions, sandboxSettings } from '../../src/sandbox/settings.js'
import { KeyRing } from '../../src/wechat/keys.js'
import { signRequest } from '../../src/wechat/signer.js'
import { verifyResponse } from '../../src/wechat/verifier.js'
import { BEIJING_NOON, freePort, testSandbox } from '../helpers.js'

/**
 * The sandbox's notifications, checked from the receiving end over real HTTP: signatures with the gateway's own
 * verifier, resources decrypted here with node:crypto, independently of the sandbox's code.
 */

type Answer = number | 'hang'
interface Received { path: string, headers: IncomingHttpHeaders, raw: Buffer, at: number }

/** A notification receiver that answers `answers` in turn (then 204); 'hang' never answers. */
async function receiver (t: Test, answers: Answer[] = []) {
  const received: Received[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      received.push({ path: req.url ?? '', headers: req.headers, raw: Buffer.concat(chunks), at: performance.now() })
      const answer = answers.shift() ?? 204
      if (answer !== 'hang') res.writeHead(answer, { 'content-type': 'application/json' }).end(answer === 204 ? undefined : '{"code":"FAIL","message":"失败"}')
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => { server.closeAllConnections(); server.close(() => resolve()) }))
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, received }
}

/** Polls `done` every few milliseconds; fails the test after `ms`. */
async function until (t: Test, done: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms
  while (!done()) {
    if (Date.now() > end) {
      t.fail(`timed out waiting: ${what}`)
      return
    }
    await new Promise(resolve => setTimeout(resolve, 5))
  }
}

const merchant = (sandbox: RunningSandbox, name: string): SandboxMerchant => sandbox.merchants.all.find(m => m.ids.name === name) as SandboxMerchant

/** The keys that verify merchant `name`'s notifications in public-key mode. */
function publicKeyRing (sandbox: RunningSandbox, name: string): KeyRing {
  const m = merchant(sandbox, name)
  const keys = new KeyRing(m.ids.merchant_serial)
  keys.setPublicKey(m.ids.wechatpay_public_key_id, createPublicKey(readFileSync(sandbox.merchants.path(m, m.files.publicKey))))
  return keys
}

const verify = (keys: KeyRing, r: Received, now?: number) => verifyResponse(keys, r.headers as Record<string, string>, r.raw, now)

interface Envelope { id: string, create_time: string, event_type: string, summary: string, resource: { original_type: string, algorithm: string, ciphertext: string, associated_data: string, nonce: string } }
const envelope = (r: Received): Envelope => JSON.parse(r.raw.toString('utf8')) as Envelope

/** AEAD_AES_256_GCM as docs/wechatpay.md §8 says: 32-byte APIv3 key, 12-byte nonce, 16-byte tag. */
function decrypt (apiv3Key: string, resource: Envelope['resource']): any {
  const sealed = Buffer.from(resource.ciphertext, 'base64')
  const decipher = createDecipheriv('aes-256-gcm', Buffer.from(apiv3Key), Buffer.from(resource.nonce), { authTagLength: 16 })
  decipher.setAAD(Buffer.from(resource.associated_data))
  decipher.setAuthTag(sealed.subarray(-16))
  return JSON.parse(Buffer.concat([decipher.update(sealed.subarray(0, -16)), decipher.final()]).toString('utf8'))
}

const PAY_BODY = '{"service_id":"2002000000000558128851361561536","sub_mchid":"1900000109"}'

/** A `pay` of order `no`, signed by the service provider. */
async function pay (sandbox: RunningSandbox, no: string): Promise<number> {
  const m = merchant(sandbox, 'partner')
  const path = `/v3/payscore/partner/serviceorder/${no}/pay`
  const signed = await signRequest({ mchid: m.ids.mchid, serial: m.ids.merchant_serial, privateKey: createPrivateKey(readFileSync(sandbox.merchants.path(m, m.files.merchantKey))) }, 'POST', path, PAY_BODY)
  const res = await request(sandbox.url + path, {
    method: 'POST',
    headers: { accept: 'application/json', 'content-type': 'application/json', 'user-agent': 't', authorization: signed.authorization },
    body: PAY_BODY
  })
  await res.body.dump()
  return res.statusCode
}

async function control (sandbox: RunningSandbox, path: string, body?: unknown) {
  const res = await request(`${sandbox.url}${path}`, body === undefined ? {} : { method: 'POST', body: JSON.stringify(body) })
  return { status: res.statusCode, json: await res.body.json() as any }
}

const record = (sandbox: RunningSandbox, id: string): NotificationRecord | undefined => sandbox.app.sandbox.notifier.records.find(r => r.id === id)

t.test('a pay carried out sends PAYSCORE.USER_PAID to the service provider, signed and encrypted as WeChat Pay does', async t => {
  const sandbox = await testSandbox(t)
  const hook = await receiver(t)
  sandbox.app.sandbox.notifier.url = `${hook.url}/wechatpay/notify/{merchant}`
  t.equal(await pay(sandbox, 'n-1'), 204)
  await until(t, () => hook.received.length === 1, 'USER_PAID')
  const [got] = hook.received as [Received]
  t.equal(got.path, '/wechatpay/notify/partner', '{merchant} is the merchant\'s name')
  t.match(got.headers, {
    'wechatpay-serial': merchant(sandbox, 'partner').ids.wechatpay_public_key_id,
    'wechatpay-signature-type': 'WECHATPAY2-SHA256-RSA2048',
    'wechatpay-nonce': /^\w{16,}$/,
    'request-id': /^\w+$/,
    'content-type': 'application/json',
    'user-agent': /./
  })
  t.match(await verify(publicKeyRing(sandbox, 'partner'), got), { ok: true })
  t.match(await verify(publicKeyRing(sandbox, 'direct'), got), { ok: false, reason: 'UNKNOWN_SERIAL' }, 'the service provider\'s key, not the direct merchant\'s')

  const body = envelope(got)
  t.same(Object.keys(body), ['id', 'create_time', 'resource_type', 'event_type', 'summary', 'resource'], 'the envelope\'s fields, in WeChat\'s order')
  t.match(body, { resource_type: 'encrypt-resource', event_type: 'PAYSCORE.USER_PAID', summary: '支付成功', create_time: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00$/ })
  t.ok(body.id.length > 0 && body.id.length <= 36)
  t.same(Object.keys(body.resource), ['original_type', 'algorithm', 'ciphertext', 'associated_data', 'nonce'])
  t.match(body.resource, { original_type: 'payscore', algorithm: 'AEAD_AES_256_GCM', associated_data: 'payscore', nonce: /^.{12}$/ })
  const order = decrypt(merchant(sandbox, 'partner').apiv3Key, body.resource)
  t.match(order, {
    mchid: '1900000100',
    appid: merchant(sandbox, 'partner').ids.appid,
    sub_mchid: '1900000109',
    service_id: '2002000000000558128851361561536',
    out_order_no: 'n-1',
    order_id: /^sbx/,
    state: 'DONE',
    total_amount: 50_000,
    need_collection: true,
    service_introduction: /./,
    collection: { state: 'USER_PAID', total_amount: 50_000, paying_amount: 0, paid_amount: 50_000, details: [{ seq: 1, amount: 50_000, paid_type: 'NEWTON', paid_time: '20261202120000' }] } // noon in Beijing: the pinned clock
  })
  t.notOk('sp_mchid' in order, 'PayScore partner notifications name the service provider mchid')
  await until(t, () => record(sandbox, body.id)?.state === 'delivered', 'recorded as delivered')
  t.match(record(sandbox, body.id), { event_type: 'PAYSCORE.USER_PAID', merchant: 'partner', url: `${hook.url}/wechatpay/notify/partner`, attempts: [{ at: /Z$/, status: 204 }] })

  t.equal(await pay(sandbox, 'n-1'), 400, 'a second pay is refused')
  await new Promise(resolve => setTimeout(resolve, 100))
  t.equal(hook.received.length, 1, 'and notifies nothing')
})

t.test('a pay carried out then lost to a reset connection still notifies: the gateway learns of it that way', async t => {
  const sandbox = await testSandbox(t)
  const hook = await receiver(t)
  sandbox.app.sandbox.notifier.url = `${hook.url}/{merchant}`
  await request(`${sandbox.url}/sandbox/faults`, { method: 'POST', body: JSON.stringify({ fault: 'RESET_AFTER', operation: 'payscorePartnerCollect' }) })
  await t.rejects(pay(sandbox, 'n-reset'), 'the caller gets no answer')
  await until(t, () => hook.received.length === 1, 'USER_PAID after RESET_AFTER')
  t.match(decrypt(merchant(sandbox, 'partner').apiv3Key, envelope(hook.received[0] as Received).resource), { out_order_no: 'n-reset', state: 'DONE' })
})

t.test('no URL: nothing is sent; the control call needs one', async t => {
  const sandbox = await testSandbox(t)
  const hook = await receiver(t)
  t.equal(await pay(sandbox, 'n-quiet'), 204)
  t.equal((await control(sandbox, '/sandbox/contracts', { plan_id: 1, out_contract_code: 'quiet', state: 'TERMINATED' })).status, 201)
  await new Promise(resolve => setTimeout(resolve, 100))
  t.same((await control(sandbox, '/sandbox/notifications')).json, { notifications: [] })
  t.match(await control(sandbox, '/sandbox/notifications', { event_type: 'PAYSCORE.USER_PAID' }), { status: 400, json: { message: /^url: / } })
  t.equal(hook.received.length, 0)
})

t.test('resends: any answer but 200/204 fails; each resend is freshly signed, with the same id and body', async t => {
  const sandbox = await testSandbox(t)
  const hook = await receiver(t, [500, 201, 204])
  const { notifier } = sandbox.app.sandbox
  notifier.url = `${hook.url}/{merchant}`
  notifier.scale = 1 / 15 // the first resend after 1 s, so that its timestamp differs
  t.equal(await pay(sandbox, 'n-resend'), 204)
  await until(t, () => hook.received.length === 3, 'two resends', 4000)
  const [first, second, third] = hook.received as [Received, Received, Received]
  t.ok(second.at - first.at >= 999, `15 s x scale after the first (${Math.round(second.at - first.at)} ms)`)
  t.ok(third.at - second.at >= 999 && third.at - second.at < 1500, '15 s x scale after the second')
  for (const got of [second, third]) t.equal(got.raw.toString(), first.raw.toString(), 'the same body (same id)')
  t.not(second.headers['wechatpay-nonce'], first.headers['wechatpay-nonce'], 'a new nonce')
  t.ok(Number(second.headers['wechatpay-timestamp']) > Number(first.headers['wechatpay-timestamp']), 'a new timestamp')
  t.not(second.headers['wechatpay-signature'], first.headers['wechatpay-signature'])
  const keys = publicKeyRing(sandbox, 'partner')
  for (const got of hook.received) t.match(await verify(keys, got), { ok: true })
  const { id } = envelope(first)
  await until(t, () => record(sandbox, id)?.state === 'delivered', 'delivered')
  t.match(record(sandbox, id)?.attempts, [{ status: 500 }, { status: 201 }, { status: 204 }], 'a 201 is a failure too')
})

t.test('after the PayScore schedule (scaled) the sandbox gives up; connection errors are failures', async t => {
  const sandbox = await testSandbox(t)
  const hook = await receiver(t, Array<Answer>(20).fill(503))
  const { notifier } = sandbox.app.sandbox
  notifier.scale = 2e-4
  const { json } = await control(sandbox, '/sandbox/notifications', { event_type: 'PAYSCORE.USER_PAID', url: hook.url })
  await until(t, () => record(sandbox, json.id)?.state === 'gave_up', 'gave up', 6000)
  t.equal(hook.received.length, RESEND_SECONDS.length + 1, 'the first delivery and 9 resends')
  t.same(RESEND_SECONDS, [15, 15, 30, 180, 1800, 1800, 1800, 1800, 3600])
  hook.received.slice(1).forEach((got, i) => {
    const gap = got.at - (hook.received[i] as Received).at
    const expected = (RESEND_SECONDS[i] as number) * 1000 * 2e-4
    t.ok(gap >= expected - 1 && gap < expected + 150, `resend ${i + 1}: ${Math.round(gap)} ms, expected ${expected} ms`)
  })
  t.equal(record(sandbox, json.id)?.attempts.length, 10)

  notifier.scale = 1e-5
  const port = await freePort()
  const refused = await control(sandbox, '/sandbox/notifications', { event_type: 'ENTRUST.SIGN', url: `http://127.0.0.1:${port}/x` })
  t.equal(refused.status, 202)
  await until(t, () => record(sandbox, refused.json.id)?.state === 'gave_up', 'gave up on a closed port')
  t.match(record(sandbox, refused.json.id)?.attempts, Array(10).fill({ error: /ECONNREFUSED|connect/ }))
})

t.test('a receiver that does not answer within 5 s is a failure, and the notification is resent', async t => {
  const sandbox = await testSandbox(t)
  const hook = await receiver(t, ['hang'])
  sandbox.app.sandbox.notifier.scale = 1e-5
  const { json } = await control(sandbox, '/sandbox/notifications', { event_type: 'PAYSCORE.USER_CONFIRM', url: hook.url })
  await until(t, () => record(sandbox, json.id)?.state === 'delivered', 'delivered after the timeout', 8000)
  t.match(record(sandbox, json.id)?.attempts, [{ error: /5000 ms/ }, { status: 204 }])
  t.equal(hook.received.length, 2)
})

t.test('faults: each spoils the notification in the way a receiver must catch, and is resent like any other', async t => {
  const sandbox = await testSandbox(t)
  const hook = await receiver(t)
  sandbox.app.sandbox.notifier.scale = 1e-5
  const keys = publicKeyRing(sandbox, 'partner')
  const apiv3Key = merchant(sandbox, 'partner').apiv3Key
  const send = async (fault: string): Promise<Received[]> => {
    hook.received.length = 0
    const sent = await control(sandbox, '/sandbox/notifications', { event_type: 'PAYSCORE.USER_PAID', url: hook.url, fault })
    t.equal(sent.status, 202, fault)
    await until(t, () => record(sandbox, sent.json.id)?.state === 'delivered', `${fault} delivered`)
    t.match(record(sandbox, sent.json.id), { fault })
    return [...hook.received]
  }

  const [probe] = await send('SIGNTEST') as [Received]
  t.match(probe.headers['wechatpay-signature'], /^WECHATPAY\/SIGNTEST\//)
  t.match(await verify(keys, probe), { ok: false, reason: 'SIGNTEST_PROBE' })

  const [bad] = await send('BAD_SIGNATURE') as [Received]
  t.match(await verify(keys, bad), { ok: false, reason: 'BAD_SIGNATURE' })
  t.match(bad.headers['wechatpay-signature'], /^[A-Za-z0-9+/]{342}==$/, 'looks like an RSA-2048 signature')
  t.match(decrypt(apiv3Key, envelope(bad).resource), { state: 'DONE' }, 'only the signature is wrong')

  const [stale] = await send('STALE_TIMESTAMP') as [Received]
  const age = Date.now() / 1000 - Number(stale.headers['wechatpay-timestamp'])
  t.ok(age >= 599 && age <= 605, `signed ${Math.round(age)} s ago`)
  t.match(await verify(keys, stale), { ok: false, reason: 'STALE_TIMESTAMP' })
  t.match(await verify(keys, stale, Number(stale.headers['wechatpay-timestamp']) * 1000), { ok: true }, 'a genuine signature, 10 minutes old')

  const [unknown] = await send('UNKNOWN_SERIAL') as [Received]
  t.not(unknown.headers['wechatpay-serial'], merchant(sandbox, 'partner').ids.wechatpay_public_key_id)
  t.match(await verify(keys, unknown), { ok: false, reason: 'UNKNOWN_SERIAL' })

  const [sealed] = await send('UNDECRYPTABLE') as [Received]
  t.match(await verify(keys, sealed), { ok: true }, 'correctly signed')
  t.throws(() => decrypt(apiv3Key, envelope(sealed).resource), 'but not encrypted with the APIv3 key')

  const twice = await send('DUPLICATE')
  t.equal(twice.length, 2, 'sent once more after the 204')
  const [one, two] = twice as [Received, Received]
  t.equal(two.raw.toString(), one.raw.toString(), 'the same id and body')
  t.not(two.headers['wechatpay-nonce'], one.headers['wechatpay-nonce'], 'freshly signed')
  for (const got of twice) t.match(await verify(keys, got), { ok: true })

  // A receiver refusing the probe (as it must) gets it again on the schedule.
  hook.received.length = 0
  const refusing = await receiver(t, [401, 401])
  const probeAgain = await control(sandbox, '/sandbox/notifications', { event_type: 'PAYSCORE.USER_PAID', url: refusing.url, fault: 'SIGNTEST' })
  await until(t, () => record(sandbox, probeAgain.json.id)?.state === 'delivered', 'a refused probe is resent')
  t.match(record(sandbox, probeAgain.json.id)?.attempts, [{ status: 401 }, { status: 401 }, { status: 204 }])
})

t.test('a contract terminated through the control API sends ENTRUST.TERMINATE to its merchant', async t => {
  const sandbox = await testSandbox(t)
  const hook = await receiver(t)
  sandbox.app.sandbox.notifier.url = `${hook.url}/notify/{merchant}`
  const direct = await control(sandbox, '/sandbox/contracts', { plan_id: 7, out_contract_code: 'k-1', state: 'TERMINATED' })
  t.equal(direct.status, 201)
  await until(t, () => hook.received.length === 1, 'ENTRUST.TERMINATE')
  const got = hook.received[0] as Received
  t.equal(got.path, '/notify/direct')
  t.match(await verify(publicKeyRing(sandbox, 'direct'), got), { ok: true })
  const body = envelope(got)
  t.match(body, { event_type: 'ENTRUST.TERMINATE', summary: '委托代扣解约通知', resource: { original_type: 'entrust', associated_data: '' } })
  t.match(decrypt(merchant(sandbox, 'direct').apiv3Key, body.resource), {
    mchid: '1230000109',
    contract_id: direct.json.contract_id,
    plan_id: 7,
    out_contract_code: 'k-1',
    contract_state: 'TERMINATED',
    contract_signed_time: /\+08:00$/,
    contract_terminate_info: { contract_termination_mode: 'USER_TERMINATE', contract_terminated_time: '2026-12-02T12:00:00+08:00' }
  })

  await control(sandbox, '/sandbox/contracts', { sub_mchid: '1900000109', plan_id: 7, out_contract_code: 'k-2', state: 'TERMINATED' })
  await until(t, () => hook.received.length === 2, 'the service provider\'s')
  const partner = hook.received[1] as Received
  t.equal(partner.path, '/notify/partner')
  t.match(decrypt(merchant(sandbox, 'partner').apiv3Key, envelope(partner).resource), { sp_mchid: '1900000100', sub_mchid: '1900000109', out_contract_code: 'k-2', contract_state: 'TERMINATED' })

  await control(sandbox, '/sandbox/contracts', { plan_id: 7, out_contract_code: 'k-3', state: 'SIGNED' })
  await until(t, () => hook.received.length === 3, 'a signed contract: ENTRUST.SIGN')
  const signed = hook.received[2] as Received
  t.equal(signed.path, '/notify/direct')
  t.match(envelope(signed), { event_type: 'ENTRUST.SIGN' })
  t.match(decrypt(merchant(sandbox, 'direct').apiv3Key, envelope(signed).resource), { mchid: '1230000109', out_contract_code: 'k-3', contract_state: 'SIGNED' })
  await control(sandbox, '/sandbox/contracts', { plan_id: 7, out_contract_code: 'k-4', state: 'SIGN_FAILED' })
  await new Promise(resolve => setTimeout(resolve, 100))
  t.equal(hook.received.length, 3, 'a failed signing sends nothing')

})

t.test('the control call: defaults, samples found by a query, key modes, and validation', async t => {
  const sandbox = await testSandbox(t)
  const hook = await receiver(t)
  const send = async (body: Record<string, unknown>): Promise<{ got: Received, body: Envelope, id: string }> => {
    const sent = await control(sandbox, '/sandbox/notifications', { url: `${hook.url}/{merchant}`, ...body })
    t.equal(sent.status, 202)
    await until(t, () => hook.received.some(r => envelope(r).id === sent.json.id), `${String(body.event_type)} received`)
    const got = hook.received.find(r => envelope(r).id === sent.json.id) as Received
    return { got, body: envelope(got), id: sent.json.id }
  }

  const confirm = await send({ event_type: 'PAYSCORE.USER_CONFIRM' })
  t.equal(confirm.got.path, '/partner', 'PayScore: the service provider by default')
  const order = decrypt(merchant(sandbox, 'partner').apiv3Key, confirm.body.resource)
  t.match(order, { mchid: '1900000100', state: 'DOING', state_description: 'USER_CONFIRM' })
  t.match(confirm.body, { summary: '确认订单' })
  t.match((await control(sandbox, '/sandbox/orders')).json.orders, [{ out_order_no: order.out_order_no, state: 'DOING' }], 'the sample order is in the state')

  const sign = await send({ event_type: 'ENTRUST.SIGN' })
  t.equal(sign.got.path, '/direct', 'otherwise the first merchant')
  t.match(decrypt(merchant(sandbox, 'direct').apiv3Key, sign.body.resource), { mchid: '1230000109', contract_state: 'SIGNED' })
  const terminate = await send({ event_type: 'ENTRUST.TERMINATE', merchant: '1900000100' })
  t.match(decrypt(merchant(sandbox, 'partner').apiv3Key, terminate.body.resource), { sp_mchid: '1900000100', contract_state: 'TERMINATED', contract_terminate_info: {} }, 'a merchant named by mchid')

  const custom = await send({ event_type: 'TRANSACTION.SUCCESS', merchant: 'direct', summary: '支付成功', resource: { out_trade_no: 'x' }, id: 'EV-0001' })
  t.equal(custom.id, 'EV-0001')
  t.match(custom.body, { id: 'EV-0001', summary: '支付成功', resource: { original_type: 'transaction', associated_data: 'transaction' } })
  t.same(decrypt(merchant(sandbox, 'direct').apiv3Key, custom.body.resource), { out_trade_no: 'x' })
  const other = await send({ event_type: 'REFUND.SUCCESS' })
  t.same(decrypt(merchant(sandbox, 'direct').apiv3Key, other.body.resource), {}, 'an unknown event: an empty resource unless given')

  const setMode = (mode: string) => request(`${sandbox.url}/sandbox/key-mode`, { method: 'PUT', body: mode })
  const m = merchant(sandbox, 'partner')
  await setMode('migration')
  const migration = await send({ event_type: 'PAYSCORE.USER_PAID' })
  t.equal(migration.got.headers['wechatpay-serial'], m.ids.wechatpay_public_key_id, 'migration: the public key signs')
  await setMode('certificate')
  const certificate = await send({ event_type: 'PAYSCORE.USER_PAID' })
  t.equal(certificate.got.headers['wechatpay-serial'], m.ids.platform_cert_serial, 'certificate: the platform certificate signs')
  const cert = new X509Certificate(readFileSync(sandbox.merchants.path(m, m.files.platformCert)))
  const ring = new KeyRing(m.ids.merchant_serial)
  ring.setCertificates(new Map([[m.ids.platform_cert_serial, { key: cert.publicKey, expiresAt: Date.parse(cert.validTo) }]]))
  t.match(await verify(ring, certificate.got), { ok: true })

  const listed = (await control(sandbox, '/sandbox/notifications')).json.notifications
  t.match(listed.find((n: NotificationRecord) => n.id === 'EV-0001'), { id: 'EV-0001', event_type: 'TRANSACTION.SUCCESS', merchant: 'direct', url: `${hook.url}/direct`, state: 'delivered', attempts: [{ status: 204 }] })

  const refusals: Array<[unknown, RegExp]> = [
    [{}, /^event_type: /],
    [{ event_type: 7 }, /^event_type: /],
    [{ event_type: 'payscore user paid' }, /^event_type: /],
    [{ event_type: 'PAYSCORE.USER_PAID', nope: 1 }, /nope/],
    [{ event_type: 'PAYSCORE.USER_PAID', fault: 'LOUD' }, /^fault: /],
    [{ event_type: 'PAYSCORE.USER_PAID', url: 'ftp://x/y' }, /^url: /],
    [{ event_type: 'PAYSCORE.USER_PAID', url: hook.url, resource: 'x' }, /^resource: /],
    [{ event_type: 'PAYSCORE.USER_PAID', url: hook.url, id: 'x'.repeat(37) }, /^id: /],
    [{ event_type: 'PAYSCORE.USER_PAID', url: hook.url, merchant: 'nobody' }, /^merchant: .*nobody/]
  ]
  for (const [body, message] of refusals) {
    t.match(await control(sandbox, '/sandbox/notifications', body), { status: 400, json: { code: 'PARAM_ERROR', message } }, JSON.stringify(body))
  }
  t.equal((await request(`${sandbox.url}/sandbox/notifications`, { method: 'POST', body: 'not json{' })).statusCode, 400)
})

t.test('settings: SANDBOX_NOTIFY_URL and SANDBOX_NOTIFY_SCALE reach the notifier; bench mode sends nothing by itself', async t => {
  const hook = await receiver(t)
  t.match(sandboxSettings.safeParse({ SANDBOX_NOTIFY_SCALE: '0' }), { success: false })
  t.match(sandboxSettings.safeParse({ SANDBOX_NOTIFY_URL: 'not a url' }), { success: false })
  t.same(sandboxOptions(sandboxSettings.parse({})).notify, {}, 'no URL by default')
  const settings = sandboxSettings.parse({ SANDBOX_NOTIFY_URL: `${hook.url}/n/{merchant}`, SANDBOX_NOTIFY_SCALE: '0.5', SANDBOX_BENCH: '1' })
  const options = sandboxOptions(settings)
  t.same(options.notify, { url: `${hook.url}/n/{merchant}`, scale: 0.5 })

  const keys = await testSandbox(t)
  const bench = await startSandbox({ ...options, dir: keys.merchants.dir, host: '127.0.0.1', port: 0, logger: createLogger('silent'), profilesFile: 'merchants.bench.json', clock: () => BEIJING_NOON })
  t.teardown(() => bench.close())
  t.equal(bench.app.sandbox.notifier.url, `${hook.url}/n/{merchant}`)
  t.equal(bench.app.sandbox.notifier.scale, 0.5)
  t.equal(await pay(bench, 'n-bench'), 204)
  await control(bench, '/sandbox/contracts', { plan_id: 1, out_contract_code: 'bench', state: 'TERMINATED' })
  await new Promise(resolve => setTimeout(resolve, 100))
  t.equal(hook.received.length, 0, 'bench mode: no notification')
  t.equal((await control(bench, '/sandbox/notifications', { event_type: 'ENTRUST.SIGN' })).status, 202, 'but the control call still sends')
  await until(t, () => hook.received.length === 1, 'the explicit one')
  t.equal(hook.received[0]?.path, '/n/direct')
})

t.test('closing the sandbox stops resends and aborts a delivery in flight', async t => {
  const sandbox = await testSandbox(t)
  const hook = await receiver(t, ['hang'])
  const failing = await receiver(t, [500])
  const { json } = await control(sandbox, '/sandbox/notifications', { event_type: 'PAYSCORE.USER_PAID', url: hook.url })
  const waiting = (await control(sandbox, '/sandbox/notifications', { event_type: 'PAYSCORE.USER_PAID', url: failing.url })).json
  await until(t, () => hook.received.length === 1 && record(sandbox, waiting.id)?.attempts.length === 1, 'one in flight, one waiting 15 s to be resent')
  const started = Date.now()
  await sandbox.close()
  await new Promise(resolve => setTimeout(resolve, 50))
  t.ok(Date.now() - started < 1000, 'closed at once')
  t.match(record(sandbox, json.id), { state: 'delivering', attempts: [{ error: /abort/i }] }, 'aborted, and no resend scheduled')
  t.match(record(sandbox, waiting.id), { state: 'delivering', attempts: [{ status: 500 }] })
})
