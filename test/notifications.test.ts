import t from 'tap'
import { request } from 'undici'
import { verifyRelaySignature } from '../src/notifications/relay-signature.js'
import { signatureHeaders, signingKey } from '../src/sandbox/protocol.js'
import type { Subscriber } from '../src/notifications/subscribers.js'
import type { KeyMode } from '../src/wechat/profile.js'
import { auth, testGateway, testSandbox, TOKENS, type GatewayOptions } from './helpers.js'
import { craft, merchantOf, SECRET, send, subscriberServer, until } from './notify-helpers.js'

const FAIL = { code: 'FAIL', message: '失败' }

/** A gateway with its notification listener on a free port, relaying to `subscribers`. */
async function notifyGateway (t: Parameters<typeof testGateway>[0], subscribers: Subscriber[], config: Record<string, unknown> = {},
  more: { keyMode?: KeyMode } & Pick<GatewayOptions, 'omit'> = {}) {
  const sandbox = await testSandbox(t, more.keyMode === undefined ? {} : { keyMode: more.keyMode })
  const gateway = await testGateway(t, {
    sandbox,
    ...(more.omit !== undefined && { omit: more.omit }),
    config: { notify: { port: 0, host: '127.0.0.1', subscribers, deliveryTimeoutMs: 1000, retry: { baseMs: 50, maxMs: 200, horizonMs: 60_000 }, retentionMs: 600_000 }, ...config }
  })
  const notifyUrl = await gateway.app.notifications.listen() as string
  return { ...gateway, sandbox, notifyUrl }
}

t.test('a notification is verified, decrypted and relayed, signed for the subscriber; WeChat Pay gets 204', async t => {
  const sub = await subscriberServer(t)
  const { app, sandbox, notifyUrl, logs } = await notifyGateway(t, [sub.subscriber('billing')])
  const n = await craft(sandbox, 'partner', { resource: { mchid: '1900000100', out_order_no: 'o-1', state: 'DONE', collection: { state: 'USER_PAID', paid_amount: 500 } } })
  const answer = await send(notifyUrl, 'partner', n)
  t.same(answer, { status: 204, json: undefined })
  t.equal(sub.received.length, 1, 'delivered before WeChat Pay was answered (no Redis)')
  const [delivery] = sub.received
  t.same(delivery?.json, {
    id: n.id,
    event_type: 'PAYSCORE.USER_PAID',
    create_time: '2026-12-02T12:00:00+08:00',
    summary: '支付成功',
    merchant: 'partner',
    mchid: '1900000100',
    original_type: 'payscore',
    resource: { mchid: '1900000100', out_order_no: 'o-1', state: 'DONE', collection: { state: 'USER_PAID', paid_amount: 500 } },
    received_at: delivery?.json.received_at
  })
  t.ok(verifyRelaySignature(SECRET, delivery?.headers['wechatpay-relay-signature'] as string, delivery?.body ?? ''), 'the subscriber can check it with its secret alone')
  t.notOk(verifyRelaySignature('another-secret-0123456789abcdef-0123', delivery?.headers['wechatpay-relay-signature'] as string, delivery?.body ?? ''))
  t.match(delivery?.headers, { 'wechatpay-relay-id': n.id, 'wechatpay-relay-event': 'PAYSCORE.USER_PAID', 'wechatpay-relay-merchant': 'partner', 'wechatpay-relay-attempt': '1', 'wechatpay-relay-delivery': /^[0-9a-f]{32}$/ })
  t.match(logs.find('notification').at(-1), { merchant: 'partner', notification: `partner/${n.id}`, result: 'delivered', subscribers: ['billing'] })
  t.notOk(logs.lines.some(l => JSON.stringify(l).includes('USER_PAID') && JSON.stringify(l).includes('paid_amount')), 'the decrypted resource is not logged')

  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /wechatpay_gateway_notifications_received_total\{merchant="partner",event_type="PAYSCORE.USER_PAID",result="delivered"\} 1/)
  t.match(metrics, /wechatpay_gateway_notification_deliveries_total\{subscriber="billing",outcome="delivered"\} 1/)
  t.match(metrics, /wechatpay_gateway_notification_oldest_undelivered_seconds 0/)
})

t.test('notifications signed with the platform certificate (certificate mode), and with either key in migration mode, are accepted', async t => {
  const cases = [['certificate', ['certificate']], ['migration', ['public-key', 'certificate']]] as const
  for (const [keyMode, signers] of cases) {
    const sub = await subscriberServer(t)
    const { sandbox, notifyUrl } = await notifyGateway(t, [sub.subscriber('billing')], {}, { keyMode })
    for (const signer of signers) {
      const n = await craft(sandbox, 'partner', { signer })
      t.same(await send(notifyUrl, 'partner', n), { status: 204, json: undefined }, `${keyMode} mode, signed with the ${signer === 'certificate' ? 'platform certificate' : 'public key'}`)
      t.equal(sub.received.at(-1)?.json.id, n.id, 'and relayed')
    }
    if (keyMode === 'certificate') {
      t.same(await send(notifyUrl, 'partner', await craft(sandbox, 'partner', { signer: 'public-key' })), { status: 401, json: FAIL }, 'a key this profile does not have: refused')
    }
  }
})

t.test('probes, forgeries, stale and unknown-key notifications are refused with 401 and never relayed', async t => {
  const sub = await subscriberServer(t)
  const { app, sandbox, notifyUrl, logs } = await notifyGateway(t, [sub.subscriber('billing')])
  for (const spoil of ['probe', 'bad', 'stale', 'unknown-serial', 'unsigned'] as const) {
    const answer = await send(notifyUrl, 'partner', await craft(sandbox, 'partner', { spoil }))
    t.same(answer, { status: 401, json: FAIL }, spoil)
  }
  // Signed by the other merchant's WeChat Pay key: not this profile's.
  const crossed = await craft(sandbox, 'direct')
  t.same(await send(notifyUrl, 'partner', crossed), { status: 401, json: FAIL }, 'a notification for another profile')
  // The body changed after signing: the raw bytes are what is verified.
  const n = await craft(sandbox, 'partner')
  t.same(await send(notifyUrl, 'partner', { ...n, body: n.body.replace('"summary":"支付成功"', '"summary":"支付成功" ') }), { status: 401, json: FAIL }, 'one byte more')
  t.same(await send(notifyUrl, 'partner', { ...n, headers: { ...n.headers, 'wechatpay-signature-type': 'WECHATPAY2-SM2-WITH-SM3' } }), { status: 401, json: FAIL }, 'another signature type')
  t.equal(sub.received.length, 0, 'nothing relayed')
  t.match(logs.find('notification refused: its signature does not verify (nothing relayed)').map(l => l.result), ['probe', 'unverified', 'unverified', 'unverified', 'unverified', 'unverified', 'unverified', 'unverified'])
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /wechatpay_gateway_notifications_received_total\{merchant="partner",event_type="unknown",result="probe"\} 1/)
  t.match(metrics, /wechatpay_gateway_notifications_received_total\{merchant="partner",event_type="unknown",result="unverified"\} 7/)
})

t.test('a verified notification that cannot be decrypted is a 500 (WeChat Pay resends it) and an error, never dropped silently', async t => {
  const sub = await subscriberServer(t)
  const { app, sandbox, notifyUrl, logs } = await notifyGateway(t, [sub.subscriber('billing')])
  const answer = await send(notifyUrl, 'partner', await craft(sandbox, 'partner', { apiv3Key: 'x'.repeat(32) }))
  t.same(answer, { status: 500, json: FAIL })
  t.match(logs.find('notification verified but NOT readable: answered 500 so that WeChat Pay sends it again; fix the APIv3 key of this profile'),
    [{ level: 'error', merchant: 'partner', result: 'undecryptable', reason: /authentication failed/ }])
  t.match((await app.inject({ method: 'GET', url: '/metrics' })).body, /result="undecryptable"\} 1/)
  t.equal(sub.received.length, 0)
  t.notOk(JSON.stringify(logs.lines).includes(merchantOf(sandbox, 'partner').apiv3Key), 'the APIv3 key is never logged')
})

t.test('without Redis: a subscriber down means 500 to WeChat Pay, whose resend delivers it once the subscriber is back; a duplicate is delivered once', async t => {
  let down = true
  const billing = await subscriberServer(t, () => down ? 503 : 204)
  const audit = await subscriberServer(t)
  const { sandbox, notifyUrl, app } = await notifyGateway(t, [billing.subscriber('billing'), audit.subscriber('audit')])
  const n = await craft(sandbox, 'partner')
  t.same(await send(notifyUrl, 'partner', n), { status: 500, json: FAIL }, 'not safe yet: WeChat Pay keeps it')
  t.equal(audit.received.length, 1, 'the subscriber that was up has it')
  t.match((await app.inject({ method: 'GET', url: '/metrics' })).body, /wechatpay_gateway_notification_oldest_undelivered_seconds [0-9.]+/)

  down = false
  // WeChat Pay's resend: the same notification, freshly signed.
  const resign = async (): Promise<typeof n> => ({ ...n, headers: { ...n.headers, ...await signatureHeaders(signingKey(merchantOf(sandbox, 'partner'), 'public-key', undefined), n.body) } })
  const resigned = await resign()
  t.same(await send(notifyUrl, 'partner', resigned), { status: 204, json: undefined })
  t.equal(billing.received.length, 1, 'delivered once the subscriber is back')
  t.equal(audit.received.length, 1, 'not again to the subscriber that had it')
  t.equal(billing.received[0]?.headers['wechatpay-relay-attempt'], '2')

  t.same(await send(notifyUrl, 'partner', await resign()), { status: 204, json: undefined }, 'a duplicate is acknowledged')
  t.equal(billing.received.length + audit.received.length, 2, 'and not relayed again')
  t.match((await app.inject({ method: 'GET', url: '/metrics' })).body, /result="duplicate"\} 1/)
})

t.test('subscriptions choose by event type pattern and merchant profile; no subscriber means 204 and a log line', async t => {
  const payscore = await subscriberServer(t)
  const contracts = await subscriberServer(t)
  const { sandbox, notifyUrl, logs } = await notifyGateway(t, [
    payscore.subscriber('payscore', { events: ['PAYSCORE.*'], merchants: ['partner'] }),
    contracts.subscriber('contracts', { events: ['ENTRUST.TERMINATE', 'ENTRUST.SIGN'] })
  ])
  await send(notifyUrl, 'partner', await craft(sandbox, 'partner', { event_type: 'PAYSCORE.USER_CONFIRM' }))
  await send(notifyUrl, 'direct', await craft(sandbox, 'direct', { event_type: 'ENTRUST.TERMINATE' }))
  await send(notifyUrl, 'direct', await craft(sandbox, 'direct', { event_type: 'PAYSCORE.USER_PAID' }))
  t.same(payscore.received.map(r => r.json.event_type), ['PAYSCORE.USER_CONFIRM'], 'PAYSCORE.* of the partner profile only')
  t.same(contracts.received.map(r => [r.json.event_type, r.json.merchant]), [['ENTRUST.TERMINATE', 'direct']])
  t.match(logs.find('notification').at(-1), { result: 'delivered', subscribers: [] })
})

t.test('the notification listener serves notifications and a health check only', async t => {
  const { notifyUrl } = await notifyGateway(t, [])
  t.equal((await request(`${notifyUrl}/healthz`)).statusCode, 200)
  for (const [method, path] of [['GET', '/docs'], ['GET', '/docs/json'], ['GET', '/metrics'], ['GET', '/readyz'], ['GET', '/notifications'],
    ['POST', '/payscore/partner/serviceorder/1/pay'], ['POST', '/contracts/1/fail-notify'], ['GET', '/wechatpay/notify/partner']] as const) {
    const res = await request(`${notifyUrl}${path}`, { method, headers: { ...auth(), 'content-type': 'application/json' }, ...(method === 'POST' && { body: '{}' }) })
    t.equal(res.statusCode, 404, `${method} ${path}`)
    t.same(await res.body.json(), FAIL)
  }
  t.equal((await request(`${notifyUrl}/wechatpay/notify/nobody`, { method: 'POST', body: '{}' })).statusCode, 404, 'not a profile')
  const big = await request(`${notifyUrl}/wechatpay/notify/partner`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: 'x'.repeat(70_000) })
  t.equal(big.statusCode, 413)
})

t.test('a POST for a profile this gateway does not have (a wrong notify_url) is a 404, a warning and a metric, with bounded fields', async t => {
  const { app, sandbox, notifyUrl, logs } = await notifyGateway(t, [])
  const n = await craft(sandbox, 'partner')
  t.same(await send(notifyUrl, 'partnr', n), { status: 404, json: FAIL })
  t.same(await send(notifyUrl, 'x'.repeat(90), n), { status: 404, json: FAIL })
  const lines = logs.find('notification for a merchant profile this gateway does not have: answered 404; check the notify_url given to WeChat Pay (one such line a minute at most; the metric counts each)')
  t.match(lines, [{ level: 'warn', profile: 'partnr', client: '127.0.0.1', profiles: ['direct', 'partner'] }], 'one line a minute at most')
  const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /wechatpay_gateway_notifications_received_total\{merchant="OTHER",event_type="unknown",result="unknown_profile"\} 2/, 'each one counted')
  t.notMatch(metrics, /partnr|xxxx/, 'never the path as a label')
})

t.test('a classic papay v2 XML callback is not handled: refused with 401 like anything unsigned, nothing relayed', async t => {
  const sub = await subscriberServer(t)
  const { notifyUrl } = await notifyGateway(t, [sub.subscriber('billing')])
  const xml = '<xml><return_code><![CDATA[SUCCESS]]></return_code><change_type><![CDATA[DELETE]]></change_type><sign><![CDATA[0123]]></sign></xml>'
  const res = await request(`${notifyUrl}/wechatpay/notify/partner`, { method: 'POST', headers: { 'content-type': 'text/xml' }, body: xml })
  t.equal(res.statusCode, 401)
  t.same(await res.body.json(), FAIL)
  t.equal(sub.attempts(), 0)
})

t.test('a profile without an APIv3 key is named in a warning at start while the listener is on: its notifications cannot be read', async t => {
  const { sandbox, notifyUrl, logs } = await notifyGateway(t, [], {}, { omit: ['apiv3Key', 'apiv3KeyFile'] })
  const warnings = logs.lines.filter(l => String(l.msg).includes('has no APIv3 key'))
  t.match(warnings, [{ level: 'warn', merchant: 'direct', msg: /^merchant profile direct has no APIv3 key \(merchants\[\d\] \(direct\)\.apiv3_key_file\): every notification for it will be answered 500/ }, { merchant: 'partner' }])
  t.same(await send(notifyUrl, 'partner', await craft(sandbox, 'partner')), { status: 500, json: FAIL }, 'as it says')
  t.notOk(logs.lines.some(l => String(l.msg).includes('NOTIFY_RETRY_HORIZON_S')), 'no horizon warning without Redis: WeChat Pay\'s own resends carry the retries')
  const off = await testGateway(t, { sandbox, omit: ['apiv3Key', 'apiv3KeyFile'] })
  t.notOk(off.logs.lines.some(l => String(l.msg).includes('has no APIv3 key')), 'no warning when there is no notification listener (NOTIFY_PORT=off)')
})

t.test('operators list, read and redeliver notifications on the internal listener, with a token allowed to', async t => {
  const sub = await subscriberServer(t)
  const { app, sandbox, notifyUrl } = await notifyGateway(t, [sub.subscriber('billing')], {
    auth: { enabled: true, tokens: [{ name: 'ops', token: TOKENS.billing, operations: ['notifications'] }, { name: 'orders', token: TOKENS.orders, operations: ['payscorePartnerCollect'] }, { name: 'direct-ops', token: 'direct-ops-token-0123456789', operations: ['notifications'], merchants: ['direct'] }] }
  })
  const n = await craft(sandbox, 'partner')
  await send(notifyUrl, 'partner', n)
  const list = await app.inject({ method: 'GET', url: '/notifications', headers: auth() })
  t.equal(list.statusCode, 200)
  t.match(list.json().notifications, [{ key: `partner/${n.id}`, event: { id: n.id }, deliveries: [{ subscriber: 'billing', state: 'delivered', attempts: 1, last_status: 204 }] }])
  const one = await app.inject({ method: 'GET', url: `/notifications/partner/${n.id}`, headers: auth() })
  t.match(one.json(), { key: `partner/${n.id}`, event: { resource: { state: 'DONE' } } })
  const again = await app.inject({ method: 'POST', url: `/notifications/partner/${n.id}/redeliver`, headers: auth() })
  t.match(again.json().deliveries, [{ state: 'delivered', attempts: 2, history: [{ status: 204 }, { status: 204 }] }])
  t.equal(sub.received.length, 2, 'delivered again on request')
  t.match((await app.inject({ method: 'GET', url: '/notifications/partner/nope', headers: auth() })).json(), { code: 'NOTIFICATION_NOT_FOUND' })
  t.match((await app.inject({ method: 'POST', url: `/notifications/partner/${n.id}/redeliver?subscriber=other`, headers: auth() })).json(), { code: 'VALIDATION_ERROR', detail: { field: '/subscriber' } })
  const directOnly = { authorization: 'Bearer direct-ops-token-0123456789' }
  t.same((await app.inject({ method: 'GET', url: '/notifications', headers: directOnly })).json(), { notifications: [] }, 'a caller limited to another profile sees none of these')
  t.equal((await app.inject({ method: 'GET', url: `/notifications/partner/${n.id}`, headers: directOnly })).statusCode, 404)
  t.equal((await app.inject({ method: 'GET', url: '/notifications' })).statusCode, 401)
  t.equal((await app.inject({ method: 'GET', url: '/notifications', headers: auth(TOKENS.orders) })).statusCode, 403)
})

t.test('end to end: the sandbox notifies the gateway after a pay, as WeChat Pay does; its faulty notifications are refused or retried', async t => {
  const sub = await subscriberServer(t)
  const { app, sandbox, notifyUrl } = await notifyGateway(t, [sub.subscriber('billing')])
  const { notifier } = sandbox.app.sandbox
  notifier.url = `${notifyUrl}/wechatpay/notify/{merchant}`
  notifier.scale = 0.0001 // PayScore's three hours of resends in about a second
  const pay = await app.inject({
    method: 'POST', url: '/payscore/partner/serviceorder/e2e-1/pay', headers: { 'content-type': 'application/json', ...auth() },
    payload: { service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' }
  })
  t.equal(pay.statusCode, 204)
  t.ok(await until(() => sub.received.length === 1), 'the subscriber learns the payment')
  t.match(sub.received[0]?.json, { event_type: 'PAYSCORE.USER_PAID', merchant: 'partner', resource: { out_order_no: 'e2e-1', state: 'DONE', collection: { state: 'USER_PAID' } } })

  const partner = merchantOf(sandbox, 'partner')
  const event = { event_type: 'PAYSCORE.USER_CONFIRM', summary: '确认订单', resource: { out_order_no: 'e2e-2', state: 'DOING' } }
  const url = notifier.url
  for (const fault of ['SIGNTEST', 'BAD_SIGNATURE', 'STALE_TIMESTAMP', 'UNKNOWN_SERIAL'] as const) notifier.send(partner, event, { url, fault })
  const undecryptable = notifier.send(partner, event, { url, fault: 'UNDECRYPTABLE' })
  const duplicate = notifier.send(partner, event, { url, fault: 'DUPLICATE' })
  t.ok(await until(() => notifier.records.every(r => r.state !== 'delivering'), 10_000), 'every notification settled at the sandbox')
  t.same(sub.received.map(r => r.json.id), [sub.received[0]?.json.id, duplicate.id], 'only the genuine ones, the duplicate once')
  t.match(notifier.records.find(r => r.id === undecryptable.id), { state: 'gave_up', attempts: [{ status: 500 }] }, 'undecryptable: 500, resent by WeChat Pay until it gives up')
  for (const r of notifier.records.filter(r => ['SIGNTEST', 'BAD_SIGNATURE', 'STALE_TIMESTAMP', 'UNKNOWN_SERIAL'].includes(r.fault ?? ''))) {
    t.equal(r.attempts[0]?.status, 401, `${r.fault ?? ''}: 401`)
  }
})
