import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { ConfigError, loadConfig } from '../src/config.js'
import { fixture } from './helpers.js'

const live = {
  WECHATPAY_MODE: 'live',
  WECHATPAY_MCHID: '1230000109',
  WECHATPAY_MERCHANT_SERIAL: '5a3f0c2b9e71d4a8c6b2e0f19d3a7c5e8b4f6d21',
  WECHATPAY_PRIVATE_KEY_FILE: fixture('merchant-test-key.pem'),
  WECHATPAY_PUBLIC_KEY_ID: 'PUB_KEY_ID_0112300001092019040800000000000001',
  WECHATPAY_PUBLIC_KEY_FILE: fixture('platform-test-pub.pem'),
  GATEWAY_TOKENS: 'billing:billing-token-0123456789abcdef,orders:orders-token-0123456789abcdef:payscorePartnerCollect'
}

function problems (env: Record<string, string>): string[] {
  try {
    loadConfig(env)
  } catch (err) {
    if (err instanceof ConfigError) return err.problems
    throw err
  }
  return []
}

t.test('defaults: sandbox mode, port 3000, the real WeChat Pay host', async t => {
  const config = loadConfig({})
  t.match(config, { mode: 'sandbox', host: '0.0.0.0', port: 3000, logLevel: 'info', docs: true, auth: { enabled: false, tokens: [] }, sandbox: { SANDBOX_DIR: '.sandbox', SANDBOX_KEY_MODE: 'public-key', SANDBOX_SLOW_MS: 15_000 }, upstream: { baseUrl: 'https://api.mch.weixin.qq.com', timeoutMs: 10_000 } })
  t.same(config.merchants, [], 'merchants come from the sandbox')
  t.equal(loadConfig({ NODE_ENV: 'production', ...live, WECHATPAY_MODE: '' }).mode, 'live', 'production means live')
})

t.test('live mode: a complete configuration', async t => {
  const config = loadConfig({ ...live, WECHATPAY_APPID: 'wxd678efh567hg6787', WECHATPAY_BACKUP_BASE_URL: 'https://api2.mch.weixin.qq.com/', WECHATPAY_TIMEOUT_MS: '2500', PORT: '8081', LOG_LEVEL: 'warn', GATEWAY_DOCS: 'off' })
  t.same(config.upstream, { baseUrl: 'https://api.mch.weixin.qq.com', backupBaseUrl: 'https://api2.mch.weixin.qq.com', timeoutMs: 2500 })
  t.match(config.merchants, [{
    name: 'default',
    types: ['direct', 'partner'],
    baseUrl: 'https://api.mch.weixin.qq.com',
    backupBaseUrl: 'https://api2.mch.weixin.qq.com',
    mchid: '1230000109',
    appid: 'wxd678efh567hg6787',
    merchantSerial: '5A3F0C2B9E71D4A8C6B2E0F19D3A7C5E8B4F6D21',
    keyMode: 'public-key',
    labels: { privateKeyFile: 'WECHATPAY_PRIVATE_KEY_FILE' }
  }], 'the single-merchant settings are one profile serving both kinds of operation')
  t.same(loadConfig({ ...live, WECHATPAY_MERCHANT_TYPE: 'partner' }).merchants[0]?.types, ['partner', 'direct'])
  t.match(config, { port: 8081, logLevel: 'warn', docs: false })
  t.same(config.auth, {
    enabled: true,
    tokens: [{ name: 'billing', token: 'billing-token-0123456789abcdef' }, { name: 'orders', token: 'orders-token-0123456789abcdef', operations: ['payscorePartnerCollect'] }]
  })
})

t.test('live mode without credentials lists everything that is missing, at once', async t => {
  t.same(problems({ WECHATPAY_MODE: 'live' }), [
    'WECHATPAY_MCHID is required in live mode (or WECHATPAY_MERCHANTS_FILE)',
    'WECHATPAY_MERCHANT_SERIAL is required in live mode (or WECHATPAY_MERCHANTS_FILE)',
    'WECHATPAY_PRIVATE_KEY_FILE is required in live mode (or WECHATPAY_MERCHANTS_FILE)',
    'no way to verify WeChat Pay\'s answers: set WECHATPAY_PUBLIC_KEY_ID + WECHATPAY_PUBLIC_KEY_FILE (public-key mode), WECHATPAY_APIV3_KEY (platform-certificate mode), or both (migration)',
    'GATEWAY_TOKENS (or GATEWAY_TOKENS_FILE) is required in live mode; set GATEWAY_AUTH=off to run without caller authentication'
  ])
  t.match(new ConfigError(['a', 'b']).message, 'Invalid configuration:\n  - a\n  - b')
})

t.test('malformed values are named', async t => {
  const found = problems({ ...live, WECHATPAY_MCHID: '12ab', WECHATPAY_BASE_URL: 'ftp://x', PORT: 'eighty', WECHATPAY_APIV3_KEY: 'short', LOG_LEVEL: 'loud', WECHATPAY_PUBLIC_KEY_ID: 'abc' })
  for (const name of ['WECHATPAY_MCHID', 'WECHATPAY_BASE_URL', 'PORT', 'WECHATPAY_APIV3_KEY', 'LOG_LEVEL', 'WECHATPAY_PUBLIC_KEY_ID']) {
    t.ok(found.some(p => p.startsWith(`${name}:`)), name)
  }
  t.match(problems({ ...live, WECHATPAY_PUBLIC_KEY_FILE: '' }), ['WECHATPAY_PUBLIC_KEY_ID and WECHATPAY_PUBLIC_KEY_FILE go together: set both or neither'])
  t.match(problems({ ...live, WECHATPAY_PUBLIC_KEY_ID: 'PUB_KEY_ID_1', WECHATPAY_MERCHANT_SERIAL: 'PUB_KEY_ID_1' }), [/WECHATPAY_MERCHANT_SERIAL/])
})

t.test('caller tokens: format, length, known operations, no duplicates; never echoed', async t => {
  const found = problems({ ...live, GATEWAY_TOKENS: 'a:short,bad name:0123456789abcdef0,c:0123456789abcdefg:nope,c:0123456789abcdefh,Sup3rSecretBareToken,d:0123456789abcdefi:Sup3rSecretTail' })
  t.match(found.join('\n'), /entry 1 \(a\): the token must have at least 16 characters/)
  t.match(found.join('\n'), /entry 2: expected name:token/)
  t.match(found.join('\n'), /entry 3 \(c\): unknown operation in the list/)
  t.match(found.join("\n"), /entry 4 \(c\): caller c is listed twice/)
  t.match(found.join('\n'), /entry 5: expected name:token/)
  t.notMatch(found.join('\n'), /0123456789abcdef|Sup3rSecret|nope/, 'nothing of an entry but a valid caller name is echoed')
  t.match(problems({ ...live, GATEWAY_TOKENS: '' }), [/GATEWAY_TOKENS/])
  t.equal(loadConfig({ ...live, GATEWAY_TOKENS: '', GATEWAY_AUTH: 'off' }).auth.enabled, false, 'explicitly off')
  t.match(problems({ GATEWAY_AUTH: 'on' }), ['GATEWAY_AUTH=on needs GATEWAY_TOKENS'])
})

t.test('secrets can come from files (*_FILE), not both ways at once', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'gw-config-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await writeFile(join(dir, 'tokens'), 'billing:billing-token-0123456789abcdef\n')
  await writeFile(join(dir, 'apiv3'), 'ByKx4oAddhUsLDUPKHGol0WYXtSBckjT\n')
  const { GATEWAY_TOKENS: _, ...rest } = live
  const config = loadConfig({ ...rest, GATEWAY_TOKENS_FILE: join(dir, 'tokens'), WECHATPAY_APIV3_KEY_FILE: join(dir, 'apiv3') })
  t.same(config.auth.tokens, [{ name: 'billing', token: 'billing-token-0123456789abcdef' }])
  t.match(config.merchants[0], { apiv3Key: 'ByKx4oAddhUsLDUPKHGol0WYXtSBckjT', keyMode: 'migration' }, 'both kinds of key: the migration')
  t.match(problems({ ...live, GATEWAY_TOKENS_FILE: join(dir, 'tokens') }), ['GATEWAY_TOKENS and GATEWAY_TOKENS_FILE are both set; keep one'])
  t.match(problems({ ...rest, GATEWAY_TOKENS_FILE: join(dir, 'missing') }), [/GATEWAY_TOKENS_FILE: cannot read .*missing \(ENOENT\)/])
  // Compose writes `REDIS_URL: ${REDIS_URL:-}` as an empty variable: it must not shadow REDIS_URL_FILE.
  await writeFile(join(dir, 'redis'), 'redis://:secret@redis:6379\n')
  t.equal(loadConfig({ ...live, REDIS_URL: '', REDIS_URL_FILE: join(dir, 'redis') }).redisUrl, 'redis://:secret@redis:6379')
})

t.test('WECHATPAY_MERCHANTS_FILE: profiles, paths relative to the file, every problem named by profile and field', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'gw-merchants-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await writeFile(join(dir, 'apiv3_key'), 'ByKx4oAddhUsLDUPKHGol0WYXtSBckjT\n')
  await writeFile(join(dir, 'short_key'), 'tooShort\n')
  await mkdir(join(dir, 'keys'))
  await copyFile(fixture('merchant-test-key.pem'), join(dir, 'keys/a.pem'))
  await copyFile(fixture('merchant-test-key.pem'), join(dir, 'sp.pem'))
  const publicKeyFile = fixture('platform-test-pub.pem') // absolute
  const direct = { name: 'brand-a', type: 'direct', mchid: '1230000109', appid: 'wxd678efh567hg6787', merchant_serial: '5a3f0c2b9e71d4a8', private_key_file: 'keys/a.pem', public_key_id: 'PUB_KEY_ID_01', public_key_file: publicKeyFile, apiv3_key_file: 'apiv3_key', key_mode: 'public-key' }
  const partner = { name: 'sp', type: 'partner', mchid: '1900000100', merchant_serial: 'ABCDEF', private_key_file: 'sp.pem', apiv3_key_file: 'apiv3_key', base_url: 'https://api2.mch.weixin.qq.com/' }
  const file = join(dir, 'merchants.json')
  await writeFile(file, JSON.stringify([direct, partner]))
  const { WECHATPAY_MCHID: _m, WECHATPAY_MERCHANT_SERIAL: _s, WECHATPAY_PRIVATE_KEY_FILE: _p, WECHATPAY_PUBLIC_KEY_ID: _i, WECHATPAY_PUBLIC_KEY_FILE: _f, ...base } = live
  const config = loadConfig({ ...base, WECHATPAY_MERCHANTS_FILE: file, GATEWAY_TOKENS: 'billing:billing-token-0123456789abcdef:*:sp' })
  t.match(config.merchants, [
    { name: 'brand-a', types: ['direct'], privateKeyFile: join(dir, 'keys/a.pem'), publicKeyFile, keyMode: 'public-key', apiv3Key: 'ByKx4oAddhUsLDUPKHGol0WYXtSBckjT', merchantSerial: '5A3F0C2B9E71D4A8', baseUrl: 'https://api.mch.weixin.qq.com', labels: { privateKeyFile: 'merchants[0] (brand-a).private_key_file' } },
    { name: 'sp', types: ['partner'], keyMode: 'certificate', baseUrl: 'https://api2.mch.weixin.qq.com' }
  ])
  t.same(config.auth.tokens, [{ name: 'billing', token: 'billing-token-0123456789abcdef', merchants: ['sp'] }], 'name:token:*:merchants')

  t.match(problems({ ...live, WECHATPAY_MERCHANTS_FILE: file }), [/WECHATPAY_MERCHANTS_FILE and the single-merchant settings \(WECHATPAY_MCHID, .*\) are both set/])
  t.match(problems({ ...base, WECHATPAY_MERCHANTS_FILE: file, WECHATPAY_MERCHANT_TYPE: 'partner' }), [/WECHATPAY_MERCHANTS_FILE and the single-merchant settings \(WECHATPAY_MERCHANT_TYPE\) are both set/], 'a profile\'s type is said in the file')
  t.match(problems({ ...base, WECHATPAY_MERCHANTS_FILE: file, GATEWAY_TOKENS: 'billing:billing-token-0123456789abcdef::nobody' }),
    [/caller billing is limited to merchant nobody, which is not a profile of this gateway \(known: brand-a, sp\)/])
  t.match(problems({ ...base, WECHATPAY_MERCHANTS_FILE: join(dir, 'absent.json') }), [/WECHATPAY_MERCHANTS_FILE: cannot read .*absent\.json \(ENOENT\)/])
  await writeFile(join(dir, 'bad.json'), JSON.stringify([
    { ...direct, name: 'Bad Name', mchid: '12ab', extra: 1 },
    { ...partner, public_key_id: 'PUB_KEY_ID_9', apiv3_key_file: 'short_key' },
    { ...partner, name: 'sp2', key_mode: 'public-key' },
    { ...direct, private_key_file: undefined }
  ]))
  const found = problems({ ...base, WECHATPAY_MERCHANTS_FILE: join(dir, 'bad.json') })
  t.match(found.join('\n'), /merchants\[0\] \(Bad Name\)\.name: must be 1-32 of a-z 0-9 _ -/)
  t.match(found.join('\n'), /merchants\[0\] \(Bad Name\)\.mchid: must be 1-32 digits/)
  t.match(found.join('\n'), /merchants\[0\] \(Bad Name\)\.extra: unknown field/)
  t.match(found.join('\n'), /merchants\[1\] \(sp\): public_key_id and public_key_file go together/)
  t.match(found.join('\n'), /merchants\[1\] \(sp\)\.apiv3_key_file: must hold exactly 32 bytes/)
  t.match(found.join('\n'), /merchants\[2\] \(sp2\): key_mode public-key needs public_key_id \+ public_key_file/)
  t.match(found.join('\n'), /merchants\[3\] \(brand-a\)\.private_key_file: /)
  t.ok(found.every(p => p.startsWith('WECHATPAY_MERCHANTS_FILE: ')), 'each names the setting')
  t.notMatch(found.join('\n'), /ByKx4oAddhUsLDUPKHGol0WYXtSBckjT|tooShort/, 'never a key')
  await writeFile(join(dir, 'twice.json'), JSON.stringify([direct, { ...direct, mchid: '1230000110' }, { ...partner, name: 'sp3', mchid: '1230000110' }]))
  t.match(problems({ ...base, WECHATPAY_MERCHANTS_FILE: join(dir, 'twice.json') }), [
    'WECHATPAY_MERCHANTS_FILE: the name brand-a is used by 2 profiles: each must be unique',
    'WECHATPAY_MERCHANTS_FILE: the merchant id 1230000110 is used by 2 profiles: each must be unique'
  ])
  // Every problem at once: the file's, the callers', and each profile's key files (read now, not later at start).
  await writeFile(join(dir, 'keys/wrong.pem'), 'not a key')
  await writeFile(join(dir, 'rounds.json'), JSON.stringify([
    { ...direct, mchid: '12ab' },
    { ...partner, private_key_file: 'keys/missing.pem' },
    { ...direct, name: 'brand-c', mchid: '1230000111', public_key_file: 'keys/a.pem' },
    { ...direct, name: 'brand-d', mchid: '1230000112', private_key_file: 'keys/wrong.pem' }
  ]))
  const all = problems({ ...base, WECHATPAY_MERCHANTS_FILE: join(dir, 'rounds.json'), GATEWAY_TOKENS: 'billing:billing-token-0123456789abcdef::nobody' })
  t.match(all, [
    /merchants\[0\] \(brand-a\)\.mchid: must be 1-32 digits/,
    /caller billing is limited to merchant nobody/,
    /WECHATPAY_MERCHANTS_FILE: merchants\[1\] \(sp\)\.private_key_file: cannot read .*missing\.pem \(ENOENT\)/,
    /WECHATPAY_MERCHANTS_FILE: merchants\[2\] \(brand-c\)\.public_key_file .*merchant's own public key/,
    /WECHATPAY_MERCHANTS_FILE: merchants\[3\] \(brand-d\)\.private_key_file: /
  ])
  t.equal(all.length, 5)
  await writeFile(join(dir, 'object.json'), '{"merchants":[]}')
  t.match(problems({ ...base, WECHATPAY_MERCHANTS_FILE: join(dir, 'object.json') }), [/must be a JSON list of merchant profiles/])
  await writeFile(join(dir, 'notjson.json'), '[{')
  t.match(problems({ ...base, WECHATPAY_MERCHANTS_FILE: join(dir, 'notjson.json') }), [/is not JSON/])
})

t.test('notifications: listener on by default, off on request, its own port; a delivery must fit WeChat Pay\'s 5 s without Redis', async t => {
  t.match(loadConfig({}).notify, { port: 3001, host: '0.0.0.0', subscribers: [], deliveryTimeoutMs: 4000, retry: { baseMs: 10_000, maxMs: 3_600_000, horizonMs: 90_000_000 }, retentionMs: 604_800_000 })
  t.equal(loadConfig({ NOTIFY_PORT: 'off' }).notify.port, undefined)
  t.match(problems({ PORT: '3001' }), [/NOTIFY_PORT \(3001\) is PORT: the notification listener .* needs a port of its own/])
  t.same(problems({ PORT: '0', NOTIFY_PORT: '0' }), [], 'both on free ports (tests)')
  t.match(problems({ NOTIFY_DELIVERY_TIMEOUT_MS: '5000' }), [/NOTIFY_DELIVERY_TIMEOUT_MS \(5000\) must be at most 4500 without REDIS_URL/])
  t.same(problems({ NOTIFY_DELIVERY_TIMEOUT_MS: '5000', REDIS_URL: 'redis://127.0.0.1:6379' }), [])
  t.match(problems({ NOTIFY_RETENTION_S: '60', NOTIFY_RETRY_HORIZON_S: '120' }), [/NOTIFY_RETENTION_S must be at least NOTIFY_RETRY_HORIZON_S/])
  t.match(problems({ NOTIFY_SUBSCRIBERS_FILE: '/nonexistent/subscribers.json' }), [/NOTIFY_SUBSCRIBERS_FILE \/nonexistent\/subscribers.json: cannot be read as JSON \(ENOENT\)/])
})

t.test('Redis and Idempotency-Key settings: a key outlives the longest call; a hung Redis fails a command after a bound', async t => {
  t.equal(loadConfig({}).redisCommandTimeoutMs, 1000)
  t.equal(loadConfig({ REDIS_COMMAND_TIMEOUT_MS: '250' }).redisCommandTimeoutMs, 250)
  t.match(problems({ REDIS_COMMAND_TIMEOUT_MS: '0' }), [/REDIS_COMMAND_TIMEOUT_MS/])
  t.match(problems({ REDIS_COMMAND_TIMEOUT_MS: '5000' }), [/REDIS_COMMAND_TIMEOUT_MS/], 'at most 1 s: the margin after the longest call covers it')
  // 13 s longest call (10 s timeout + 3 s retry budget) + 5 s margin: a 1 s key would expire while its call runs.
  t.match(problems({ IDEMPOTENCY_TTL_S: '1' }), [/IDEMPOTENCY_TTL_S \(1\) must be at least 18: an Idempotency-Key must outlive the longest call \(13000 ms\)/])
  t.same(problems({ IDEMPOTENCY_TTL_S: '18' }), [])
})

t.test('warnings: secret files others may read; credentials that sandbox mode ignores', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'gw-warn-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await writeFile(join(dir, 'tokens'), 'billing:billing-token-0123456789abcdef\n', { mode: 0o644 })
  await writeFile(join(dir, 'redis'), 'redis://:secret@redis:6379\n', { mode: 0o600 })
  const { GATEWAY_TOKENS: _, ...rest } = live
  const warnings = loadConfig({ ...rest, GATEWAY_TOKENS_FILE: join(dir, 'tokens'), REDIS_URL_FILE: join(dir, 'redis') }).warnings
  t.match(warnings, [/GATEWAY_TOKENS_FILE: .*tokens can be read by other users \(mode 0644\); chmod 600 it/])
  t.equal(warnings?.length, 1, 'a file only its owner reads is fine')
  // The APIv3 key file is its merchant profile's to warn about (once, at start and on reload), not the config's.
  await writeFile(join(dir, 'apiv3'), 'ByKx4oAddhUsLDUPKHGol0WYXtSBckjT\n', { mode: 0o644 })
  t.same(loadConfig({ ...live, WECHATPAY_APIV3_KEY_FILE: join(dir, 'apiv3') }).warnings, [])
  t.notMatch(JSON.stringify(warnings), /billing-token|secret@/, 'never its content')
  t.match(loadConfig({ WECHATPAY_MCHID: '1230000109', WECHATPAY_MERCHANTS_FILE: '/m.json' }).warnings,
    [/sandbox mode ignores WECHATPAY_MERCHANTS_FILE, WECHATPAY_MCHID: calls go to the built-in simulator .* Set WECHATPAY_MODE=live/])
  t.same(loadConfig({}).warnings, [])
})
