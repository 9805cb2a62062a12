import { mkdtemp, rm, writeFile } from 'node:fs/promises'
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
  t.match(config, { mode: 'sandbox', host: '0.0.0.0', port: 3000, logLevel: 'info', docs: true, auth: { enabled: false, tokens: [] }, sandbox: { SANDBOX_DIR: '.sandbox', SANDBOX_KEY_MODE: 'public-key', SANDBOX_SLOW_MS: 15_000 }, upstreamTimeoutMs: 10_000 })
  t.equal(config.wechat, undefined, 'credentials come from the sandbox')
  t.equal(loadConfig({ NODE_ENV: 'production', ...live, WECHATPAY_MODE: '' }).mode, 'live', 'production means live')
})

t.test('live mode: a complete configuration', async t => {
  const config = loadConfig({ ...live, WECHATPAY_APPID: 'wxd678efh567hg6787', WECHATPAY_BACKUP_BASE_URL: 'https://api2.mch.weixin.qq.com/', WECHATPAY_TIMEOUT_MS: '2500', PORT: '8081', LOG_LEVEL: 'warn', GATEWAY_DOCS: 'off' })
  t.match(config.wechat, {
    baseUrl: 'https://api.mch.weixin.qq.com',
    backupBaseUrl: 'https://api2.mch.weixin.qq.com',
    mchid: '1230000109',
    appid: 'wxd678efh567hg6787',
    merchantSerial: '5A3F0C2B9E71D4A8C6B2E0F19D3A7C5E8B4F6D21',
    timeoutMs: 2500
  })
  t.match(config, { port: 8081, logLevel: 'warn', docs: false })
  t.same(config.auth, {
    enabled: true,
    tokens: [{ name: 'billing', token: 'billing-token-0123456789abcdef' }, { name: 'orders', token: 'orders-token-0123456789abcdef', operations: ['payscorePartnerCollect'] }]
  })
})

t.test('live mode without credentials lists everything that is missing, at once', async t => {
  t.same(problems({ WECHATPAY_MODE: 'live' }), [
    'WECHATPAY_MCHID is required in live mode',
    'WECHATPAY_MERCHANT_SERIAL is required in live mode',
    'WECHATPAY_PRIVATE_KEY_FILE is required in live mode',
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
  t.equal(config.wechat?.apiv3Key, 'ByKx4oAddhUsLDUPKHGol0WYXtSBckjT')
  t.match(problems({ ...live, GATEWAY_TOKENS_FILE: join(dir, 'tokens') }), ['GATEWAY_TOKENS and GATEWAY_TOKENS_FILE are both set; keep one'])
  t.match(problems({ ...rest, GATEWAY_TOKENS_FILE: join(dir, 'missing') }), [/GATEWAY_TOKENS_FILE: cannot read .*missing \(ENOENT\)/])
  // Compose writes `REDIS_URL: ${REDIS_URL:-}` as an empty variable: it must not shadow REDIS_URL_FILE.
  await writeFile(join(dir, 'redis'), 'redis://:secret@redis:6379\n')
  t.equal(loadConfig({ ...live, REDIS_URL: '', REDIS_URL_FILE: join(dir, 'redis') }).redisUrl, 'redis://:secret@redis:6379')
})
