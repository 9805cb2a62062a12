import { generateKeyPairSync } from 'node:crypto'
import { copyFile, mkdtemp, rm, writeFile, chmod } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { buildApp } from '../src/app.js'
import { createLogger } from '../src/logger.js'
import { KeyError } from '../src/wechat/keys.js'
import { APIV3_KEY_OVERLAP_MS } from '../src/wechat/profile.js'
import { auth, LogCapture, sandboxProfiles, testConfig, testGateway, testSandbox } from './helpers.js'

const json = { 'content-type': 'application/json' }
const collect = { service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' }
let paid = 0
/** A fresh order each time by default: the sandbox remembers orders, and pays each once. */
const pay = (url = `/payscore/partner/serviceorder/km-${++paid}/pay`) => ({ method: 'POST' as const, url, headers: { ...json, ...auth() }, payload: collect })


t.test('platform-certificate mode: certificates downloaded before ready, decrypted, used to verify', async t => {
  const sandbox = await testSandbox(t, { keyMode: 'certificate' })
  const { app } = await testGateway(t, { sandbox })
  await app.ready()
  t.match(sandbox.app.sandbox.requests.filter(r => r.url === '/v3/certificates').map(r => r.mchid).sort(), ['1230000109', '1900000100'], 'downloaded at start, by each merchant')
  t.ok(sandbox.app.sandbox.requests.every(r => r.status === 200))
  const res = await app.inject(pay())
  t.equal(res.statusCode, 204)
  const call = sandbox.app.sandbox.requests.at(-1)!
  t.equal(call.headers['wechatpay-serial'], undefined, 'no PUB_KEY_ID to send in certificate mode')
  const status = app.merchantStatus().partner
  t.same(status?.problems, [])
  t.ok((status?.certificateExpirySeconds ?? 0) > 4 * 365 * 24 * 3600, 'expiry known')
})

t.test('certificate mode refuses to start for a merchant without platform certificates, and says what to do', async t => {
  const sandbox = await testSandbox(t) // public-key mode: /v3/certificates → 404 RESOURCE_NOT_EXISTS
  const certificateMode = sandboxProfiles(sandbox).map(p => ({ ...p, keyMode: 'certificate' as const }))
  const err = await buildApp(testConfig(certificateMode), { logger: createLogger('silent') }).catch((e: unknown) => e)
  t.ok(err instanceof KeyError)
  t.equal((err as KeyError).problems.length, 2, 'each merchant says it')
  t.match((err as KeyError).problems[0], /merchant direct: WeChat Pay has no platform certificates .*RESOURCE_NOT_EXISTS.*public key id and file/)
  const sandboxInCertMode = await testSandbox(t, { keyMode: 'certificate' })
  const bad = await buildApp(testConfig(certificateMode.map(({ apiv3KeyFile: _, ...p }) => ({ ...p, baseUrl: sandboxInCertMode.url, apiv3Key: 'x'.repeat(32) }))), { logger: createLogger('silent') }).catch((e: unknown) => e)
  t.match((bad as KeyError).problems[0], /cannot decrypt platform certificate .* with the APIv3 key of merchants\[0\] \(direct\)\.apiv3_key_file/)
})

t.test('migration mode: both keys; PUB_KEY_ID sent; answers verified by whichever key signed them', async t => {
  const sandbox = await testSandbox(t, { keyMode: 'migration' })
  const { app } = await testGateway(t, { sandbox })
  const viaPublicKey = await app.inject(pay())
  t.equal(viaPublicKey.statusCode, 204)
  t.equal(sandbox.app.sandbox.requests.at(-1)?.headers['wechatpay-serial'], sandbox.merchants.byMchid('1900000100')?.ids.wechatpay_public_key_id)
  sandbox.app.sandbox.keyMode = 'certificate' // WeChat Pay signs some answers with the platform certificate during migration
  const viaCertificate = await app.inject(pay())
  t.equal(viaCertificate.statusCode, 204)
  t.same(app.merchantStatus().partner?.problems, [])
})

t.test('migration mode for a merchant without certificates goes on with the public key, and says so', async t => {
  const sandbox = await testSandbox(t)
  const { app, logs } = await testGateway(t, { sandbox, wechat: { keyMode: 'migration' } })
  t.equal((await app.inject(pay())).statusCode, 204)
  t.match(logs.lines.find(l => l.level === 'warn')?.msg, /no platform certificates.*Going on with the public key PUB_KEY_ID_/)
})

t.test('an unknown serial triggers a certificate download, rate-limited', async t => {
  const sandbox = await testSandbox(t, { keyMode: 'certificate' })
  const downloads = () => sandbox.app.sandbox.requests.filter(r => r.url === '/v3/certificates').length
  const { app } = await testGateway(t, { sandbox, only: ['partner'], build: { merchants: { certificates: { minGapMs: 60_000 } } } })
  await app.ready()
  t.equal(downloads(), 1)
  // Within the minimum gap: no new download.
  t.equal((await app.inject(pay('/payscore/partner/serviceorder/SANDBOX_UNKNOWN_SERIAL/pay'))).statusCode, 502)
  t.equal(downloads(), 1, 'not more than once per minute')

  const { app: eager } = await testGateway(t, { sandbox, only: ['partner'], build: { merchants: { certificates: { minGapMs: 0 } } } })
  await eager.ready()
  const before = downloads()
  const res = await eager.inject(pay('/payscore/partner/serviceorder/SANDBOX_UNKNOWN_SERIAL/pay'))
  t.equal(res.statusCode, 502)
  t.match(res.json().message, /unknown Wechatpay-Serial/)
  t.equal(downloads(), before + 1, 'one download for the unknown serial')
})

t.test('certificates are refreshed on a schedule', async t => {
  const sandbox = await testSandbox(t, { keyMode: 'certificate' })
  const { app } = await testGateway(t, { sandbox, only: ['partner'], build: { merchants: { certificates: { refreshMs: 100 } } } })
  await app.ready()
  await sleep(350)
  t.ok(sandbox.app.sandbox.requests.filter(r => r.url === '/v3/certificates').length >= 3)
})

t.test('key files rotate without a restart; a bad new key is refused and the old one kept', async t => {
  const sandbox = await testSandbox(t, { slowMs: 400 })
  const dir = await mkdtemp(join(tmpdir(), 'gw-rotate-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const keyFile = join(dir, 'apiclient_key.pem')
  const sp = sandbox.merchants.byMchid('1900000100')
  const original = sp === undefined ? '' : sandbox.merchants.path(sp, sp.files.merchantKey)
  await copyFile(original, keyFile)
  await chmod(keyFile, 0o644)
  // The service provider's key is a file of its own (its certificate left out: the key will not match it).
  const profiles = sandboxProfiles(sandbox).map(({ merchantCertFile, ...p }) => p.name === 'partner' ? { ...p, privateKeyFile: keyFile } : { ...p, ...(merchantCertFile !== undefined && { merchantCertFile }) })
  const { app, logs } = await testGateway(t, { sandbox, build: { merchants: { keyWatchMs: 50 } }, config: { merchants: profiles } })
  t.equal((await app.inject(pay())).statusCode, 204)
  t.match(logs.lines.find(l => l.level === 'warn'), { merchant: 'partner', msg: /merchants\[1\] \(partner\)\.private_key_file: .* can be read by other users \(mode 0644\); chmod 600/ }, 'a key readable by everyone is worth a warning')
  await chmod(keyFile, 0o600)

  await writeFile(keyFile, 'garbage')
  t.same(app.reloadCredentials(), { reloaded: ['direct'], refused: ['partner'] }, 'one merchant\'s bad key file does not touch the others')
  t.match(logs.find('credentials NOT reloaded: the new key files are invalid; this merchant keeps its previous keys').at(-1), { level: 'error', merchant: 'partner', problems: [/not a PEM private key/] })
  t.equal((await app.inject(pay())).statusCode, 204, 'still signing with the previous key')
  t.equal((await app.inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: { ...json, ...auth() }, payload: {} })).statusCode, 204, 'the other merchant serves on')
  const refused = await app.inject({ method: 'GET', url: '/readyz' })
  t.equal(refused.statusCode, 200, 'ready: both merchants can still be used')
  t.match(refused.json().merchants, { partner: { usable: true, problems: [/new key files refused, previous keys still in use: .*not a PEM private key/] }, direct: { problems: [] } }, '/readyz shows the refused files')

  // A call in flight keeps the key it was signed with; the next call uses the new key (unknown to the sandbox).
  await copyFile(original, keyFile)
  app.reloadCredentials()
  t.same((await app.inject({ method: 'GET', url: '/readyz' })).json().merchants.partner.problems, [], 'a good reload clears it')
  const inFlight = app.inject(pay('/payscore/partner/serviceorder/SANDBOX_SLOW/pay'))
  await sleep(50)
  await writeFile(keyFile, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }))
  t.same(app.reloadCredentials().refused, [])
  t.equal((await inFlight).statusCode, 204, 'the call in flight finished')
  t.match((await app.inject(pay())).json(), { code: 'UPSTREAM_UNVERIFIED_ERROR', detail: { unverified: { code: 'SIGN_ERROR' } } }, 'new calls use the new key')

  // The file watcher picks up a change by itself.
  await copyFile(original, keyFile)
  for (let i = 0; i < 40 && (await app.inject(pay())).statusCode !== 204; i++) await sleep(50)
  t.equal((await app.inject(pay())).statusCode, 204, 'reloaded after the file changed')
  t.ok(logs.find('credentials reloaded').length >= 2)
})

t.test('a rotated APIv3 key file is read again on reload (notifications and certificates use the new key); a bad one is refused', async t => {
  const sandbox = await testSandbox(t)
  const dir = await mkdtemp(join(tmpdir(), 'gw-apiv3-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const keyFile = join(dir, 'apiv3_key')
  await writeFile(keyFile, 'A'.repeat(32) + '\n', { mode: 0o644 })
  const profiles = sandboxProfiles(sandbox).map(p => p.name === 'partner' ? { ...p, apiv3Key: 'unused', apiv3KeyFile: keyFile } : p)
  const { app, logs } = await testGateway(t, { sandbox, build: { merchants: { keyWatchMs: 0 } }, config: { merchants: profiles } })
  const partner = app.merchants.all.find(p => p.name === 'partner')
  t.equal(partner?.apiv3Key(), 'A'.repeat(32), 'read from its file')
  t.match(logs.lines.find(l => l.level === 'warn' && /apiv3_key_file/.test(String(l.msg))), { msg: /can be read by other users \(mode 0644\)/ }, 'an APIv3 key file readable by everyone is worth a warning')
  await writeFile(keyFile, 'B'.repeat(32))
  t.same(app.reloadCredentials().refused, [])
  t.equal(partner?.apiv3Key(), 'B'.repeat(32), 'the rotated key applies after the reload')
  t.equal(partner?.previousApiv3Key(), 'A'.repeat(32), 'the replaced key still decrypts notifications sent before the rotation')
  t.equal(partner?.previousApiv3Key(Date.now() + APIV3_KEY_OVERLAP_MS), undefined, 'for WeChat Pay\'s resends, not for ever')
  await writeFile(keyFile, 'short')
  t.same(app.reloadCredentials().refused, ['partner'])
  t.equal(partner?.apiv3Key(), 'B'.repeat(32), 'a bad file is refused; the previous key is kept')
  t.notOk(JSON.stringify(logs.lines).includes('B'.repeat(32)), 'never logged')
})
