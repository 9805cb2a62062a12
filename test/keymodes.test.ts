import { generateKeyPairSync } from 'node:crypto'
import { copyFile, mkdtemp, rm, writeFile, chmod } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { buildApp } from '../src/app.js'
import { createLogger } from '../src/logger.js'
import type { RunningSandbox } from '../src/sandbox/index.js'
import { decryptResource } from '../src/wechat/certificates.js'
import { KeyError } from '../src/wechat/keys.js'
import { auth, LogCapture, testConfig, testGateway, testSandbox } from './helpers.js'

const json = { 'content-type': 'application/json' }
const collect = { service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' }
const pay = (url = '/payscore/partner/serviceorder/1/pay') => ({ method: 'POST' as const, url, headers: { ...json, ...auth() }, payload: collect })

/** Gateway settings for platform-certificate mode: the APIv3 key, no public key. */
const certificateMode = (sandbox: RunningSandbox) => ({ wechat: { apiv3Key: sandbox.identity.json.apiv3_key }, omit: ['publicKeyId', 'publicKeyFile'] as Array<'publicKeyId' | 'publicKeyFile'> })

t.test('platform-certificate mode: certificates downloaded before ready, decrypted, used to verify', async t => {
  const sandbox = await testSandbox(t, { keyMode: 'certificate' })
  const { app } = await testGateway(t, { sandbox, ...certificateMode(sandbox) })
  await app.ready()
  t.match(sandbox.app.sandbox.requests[0], { method: 'GET', url: '/v3/certificates', status: 200 }, 'downloaded at start')
  const res = await app.inject(pay())
  t.equal(res.statusCode, 204)
  const call = sandbox.app.sandbox.requests.at(-1)!
  t.equal(call.headers['wechatpay-serial'], undefined, 'no PUB_KEY_ID to send in certificate mode')
  const status = app.keyStatus()
  t.same(status.problems, [])
  t.ok((status.certificateExpirySeconds ?? 0) > 4 * 365 * 24 * 3600, 'expiry known')
})

t.test('certificate mode refuses to start for a merchant without platform certificates, and says what to do', async t => {
  const sandbox = await testSandbox(t) // public-key mode: /v3/certificates → 404 RESOURCE_NOT_EXISTS
  const { wechat, omit } = certificateMode(sandbox)
  const settings = { ...sandbox.gatewaySettings(2000), ...wechat }
  for (const key of omit) delete settings[key]
  const err = await buildApp(testConfig(settings), { logger: createLogger('silent') }).catch((e: unknown) => e)
  t.ok(err instanceof KeyError)
  t.match((err as KeyError).problems[0], /no platform certificates .*RESOURCE_NOT_EXISTS.*WECHATPAY_PUBLIC_KEY_ID and WECHATPAY_PUBLIC_KEY_FILE/)
  const wrongKey = await buildApp(testConfig({ ...settings, apiv3Key: 'x'.repeat(32) }), { logger: createLogger('silent') }).catch((e: unknown) => e)
  t.equal(wrongKey instanceof Error, true)
  const sandboxInCertMode = await testSandbox(t, { keyMode: 'certificate' })
  const bad = await buildApp(testConfig({ ...settings, baseUrl: sandboxInCertMode.url, apiv3Key: 'x'.repeat(32) }), { logger: createLogger('silent') }).catch((e: unknown) => e)
  t.match((bad as KeyError).problems[0], /cannot decrypt platform certificate .* with WECHATPAY_APIV3_KEY/)
})

t.test('migration mode: both keys; PUB_KEY_ID sent; answers verified by whichever key signed them', async t => {
  const sandbox = await testSandbox(t, { keyMode: 'migration' })
  const { app } = await testGateway(t, { sandbox, wechat: { apiv3Key: sandbox.identity.json.apiv3_key } })
  const viaPublicKey = await app.inject(pay())
  t.equal(viaPublicKey.statusCode, 204)
  t.equal(sandbox.app.sandbox.requests.at(-1)?.headers['wechatpay-serial'], sandbox.identity.json.wechatpay_public_key_id)
  sandbox.app.sandbox.keyMode = 'certificate' // WeChat Pay signs some answers with the platform certificate during migration
  const viaCertificate = await app.inject(pay())
  t.equal(viaCertificate.statusCode, 204)
  t.same(app.keyStatus().problems, [])
})

t.test('migration mode for a merchant without certificates goes on with the public key, and says so', async t => {
  const sandbox = await testSandbox(t)
  const { app, logs } = await testGateway(t, { sandbox, wechat: { apiv3Key: sandbox.identity.json.apiv3_key } })
  t.equal((await app.inject(pay())).statusCode, 204)
  t.match(logs.lines.find(l => l.level === 'warn')?.msg, /no platform certificates.*Going on with the public key PUB_KEY_ID_/)
})

t.test('an unknown serial triggers a certificate download, rate-limited', async t => {
  const sandbox = await testSandbox(t, { keyMode: 'certificate' })
  const downloads = () => sandbox.app.sandbox.requests.filter(r => r.url === '/v3/certificates').length
  const { app } = await testGateway(t, { sandbox, ...certificateMode(sandbox), build: { credentials: { certificateMinGapMs: 60_000 } } })
  await app.ready()
  t.equal(downloads(), 1)
  // Within the minimum gap: no new download.
  t.equal((await app.inject(pay('/payscore/partner/serviceorder/SANDBOX_UNKNOWN_SERIAL/pay'))).statusCode, 502)
  t.equal(downloads(), 1, 'not more than once per minute')

  const { app: eager } = await testGateway(t, { sandbox, ...certificateMode(sandbox), build: { credentials: { certificateMinGapMs: 0 } } })
  await eager.ready()
  const before = downloads()
  const res = await eager.inject(pay('/payscore/partner/serviceorder/SANDBOX_UNKNOWN_SERIAL/pay'))
  t.equal(res.statusCode, 502)
  t.match(res.json().message, /unknown Wechatpay-Serial/)
  t.equal(downloads(), before + 1, 'one download for the unknown serial')
})

t.test('certificates are refreshed on a schedule', async t => {
  const sandbox = await testSandbox(t, { keyMode: 'certificate' })
  const { app } = await testGateway(t, { sandbox, ...certificateMode(sandbox), build: { credentials: { certificateRefreshMs: 100 } } })
  await app.ready()
  await sleep(350)
  t.ok(sandbox.app.sandbox.requests.filter(r => r.url === '/v3/certificates').length >= 3)
})

t.test('key files rotate without a restart; a bad new key is refused and the old one kept', async t => {
  const sandbox = await testSandbox(t, { slowMs: 400 })
  const dir = await mkdtemp(join(tmpdir(), 'gw-rotate-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const keyFile = join(dir, 'apiclient_key.pem')
  const original = sandbox.identity.path(sandbox.identity.json.merchant_private_key_file)
  await copyFile(original, keyFile)
  await chmod(keyFile, 0o644)
  const { app, logs } = await testGateway(t, { sandbox, wechat: { privateKeyFile: keyFile }, omit: ['merchantCertFile'], build: { credentials: { keyWatchMs: 50 } } })
  t.equal((await app.inject(pay())).statusCode, 204)
  t.match(logs.lines.find(l => l.level === 'warn'), { msg: /WECHATPAY_PRIVATE_KEY_FILE: .* can be read by other users \(mode 0644\); chmod 600/ }, 'a key readable by everyone is worth a warning')
  await chmod(keyFile, 0o600)

  await writeFile(keyFile, 'garbage')
  t.equal(app.reloadCredentials(), false)
  t.match(logs.lines.at(-1), { level: 'error', msg: /NOT reloaded/, problems: [/not a PEM private key/] })
  t.equal((await app.inject(pay())).statusCode, 204, 'still signing with the previous key')

  // A call in flight keeps the key it was signed with; the next call uses the new key (unknown to the sandbox).
  await copyFile(original, keyFile)
  app.reloadCredentials()
  const inFlight = app.inject(pay('/payscore/partner/serviceorder/SANDBOX_SLOW/pay'))
  await sleep(50)
  await writeFile(keyFile, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }))
  t.equal(app.reloadCredentials(), true)
  t.equal((await inFlight).statusCode, 204, 'the call in flight finished')
  t.match((await app.inject(pay())).json(), { code: 'UPSTREAM_UNVERIFIED_ERROR', detail: { unverified: { code: 'SIGN_ERROR' } } }, 'new calls use the new key')

  // The file watcher picks up a change by itself.
  await copyFile(original, keyFile)
  for (let i = 0; i < 40 && (await app.inject(pay())).statusCode !== 204; i++) await sleep(50)
  t.equal((await app.inject(pay())).statusCode, 204, 'reloaded after the file changed')
  t.ok(logs.find('credentials reloaded').length >= 2)
})

t.test('decryptResource is AEAD_AES_256_GCM only', async t => {
  t.throws(() => decryptResource('k'.repeat(32), { algorithm: 'AES_CBC', nonce: 'n', ciphertext: '' }), /unsupported algorithm AES_CBC/)
  t.ok(new LogCapture())
})
