import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { verifyRelaySignature } from '../src/notifications/relay-signature.js'
import { SECRET, subscriberServer, until } from './notify-helpers.js'
import { post, start } from './process.js'

/** `npm start` in sandbox mode wires notifications up: simulator → gateway's listener → the configured subscriber. */

t.test('sandbox mode: a pay through the gateway reaches a subscriber as a signed PAYSCORE.USER_PAID', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'gw-notify-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const sub = await subscriberServer(t)
  await writeFile(join(dir, 'receiver.secret'), SECRET)
  await writeFile(join(dir, 'subscribers.json'), JSON.stringify([{ name: 'receiver', url: sub.url, events: ['PAYSCORE.*'], secret_file: 'receiver.secret' }]))
  const server = start(t, { SANDBOX_DIR: join(dir, 'sandbox'), NOTIFY_SUBSCRIBERS_FILE: join(dir, 'subscribers.json') })
  const url = await server.listening
  t.ok(await until(() => server.out.some(l => l.includes('WeChat Pay notifications: listening'))), 'the notification listener is up')
  t.match(server.out.find(l => l.includes('WeChat Pay notifications: listening')), /"subscribers":\["receiver"\]/)
  t.equal((await post(url, '/payscore/partner/serviceorder/tour-1/pay', { service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' })).statusCode, 204)
  t.ok(await until(() => sub.received.length === 1, 10_000), 'the subscriber has it')
  const [delivery] = sub.received
  t.match(delivery?.json, { event_type: 'PAYSCORE.USER_PAID', merchant: 'partner', resource: { out_order_no: 'tour-1', state: 'DONE' } })
  t.ok(verifyRelaySignature(SECRET, delivery?.headers['wechatpay-relay-signature'] as string, delivery?.body ?? ''))
  t.notOk(server.out.some(l => l.includes(SECRET)), 'the subscriber\'s secret is never logged')
})

t.test('a subscribers file naming an unknown profile stops the start, naming the field', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'gw-notify-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await writeFile(join(dir, 'subscribers.json'), JSON.stringify([{ name: 'x', url: 'http://127.0.0.1:1/', events: ['*'], merchants: ['nobody'], secret: SECRET }]))
  const server = start(t, { SANDBOX_DIR: join(dir, 'sandbox'), NOTIFY_SUBSCRIBERS_FILE: join(dir, 'subscribers.json') })
  await t.rejects(server.listening)
  t.equal(await server.exited, 1)
  t.match(server.stderr(), /NOTIFY_SUBSCRIBERS_FILE \(x\)\.merchants: nobody is not a merchant profile \(direct, partner\)/)
})

t.test('the README\'s example receiver checks the relay\'s signature and acts once per notification id', async t => {
  const { spawn } = await import('node:child_process')
  const { freePort, testGateway, testSandbox } = await import('./helpers.js')
  const { craft, send } = await import('./notify-helpers.js')
  const port = await freePort()
  const receiver = spawn(process.execPath, ['examples/receiver.mjs'], { env: { ...process.env, RECEIVER_SECRET: SECRET, RECEIVER_PORT: String(port) }, stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { receiver.kill() })
  const out: string[] = []
  await new Promise<void>(resolve => receiver.stdout.on('data', (c: Buffer) => { out.push(c.toString()); if (c.toString().includes('listening')) resolve() }))
  const sandbox = await testSandbox(t)
  const url = `http://127.0.0.1:${port}/`
  const subscribers = [{ name: 'good', url, events: ['*'], secret: SECRET }, { name: 'forged', url, events: ['*'], secret: 'not-the-receiver-secret-0123456789abcdef' }]
  const { app } = await testGateway(t, { sandbox, config: { notify: { port: 0, host: '127.0.0.1', subscribers, deliveryTimeoutMs: 2000, retry: { baseMs: 50, maxMs: 200, horizonMs: 60_000 }, retentionMs: 600_000 } } })
  const notifyUrl = await app.notifications.listen() as string
  const n = await craft(sandbox, 'partner', { resource: { out_order_no: 'r-1', state: 'DONE' } })
  t.equal((await send(notifyUrl, 'partner', n)).status, 500, 'one subscriber refused: WeChat Pay will resend')
  const record = await app.notifications.relay.get(`partner/${n.id}`)
  t.match(record?.deliveries, [{ subscriber: 'good', state: 'delivered', last_status: 204 }, { subscriber: 'forged', state: 'pending', last_status: 401 }])
  await app.notifications.relay.redeliver(`partner/${n.id}`, 'good')
  t.ok(await until(() => out.join('').includes('PAYSCORE.USER_PAID partner {"out_order_no":"r-1","state":"DONE"}')))
  t.equal(out.join('').split('PAYSCORE.USER_PAID').length - 1, 1, 'acted on once, though delivered twice')
})
