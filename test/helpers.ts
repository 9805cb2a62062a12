import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import type { Test } from 'tap'
import { buildApp, type BuildOptions } from '../src/app.js'
import { createLogger } from '../src/logger.js'
import type { AppConfig } from '../src/config.js'
import { loadMerchantsFile } from '../src/merchants-file.js'
import type { KeyMode } from '../src/sandbox/app.js'
import { startSandbox, type RunningSandbox } from '../src/sandbox/index.js'
import type { MerchantSpec } from '../src/sandbox/settings.js'
import type { MerchantConfig } from '../src/wechat/profile.js'

/** Test keys and openssl-computed vectors from shared/wechatpay/test-vectors (copied, test use only). */
export const FIXTURES = new URL('./fixtures/wechatpay/', import.meta.url).pathname
export const fixture = (name: string): string => join(FIXTURES, name)
export const vectors = JSON.parse(readFileSync(fixture('vectors.json'), 'utf8')) as {
  merchant: { mchid: string, serial_no: string }
  platform: { public_key_id: string }
  requests: Array<{ method: string, url: string, timestamp: string, nonce: string, body: string, message: string, signature: string, authorization: string }>
  responses: Array<{ status: number, headers: Record<string, string>, body: string, message?: string, valid: boolean }>
  notifications: Array<{ about: string, apiv3_key: string, headers: Record<string, string>, body: string, message: string, valid: boolean, plaintext: string }>
  official_sdk_fixtures: {
    aead: Array<{ id: string, key: string, nonce: string, associated_data: string, ciphertext: string, plaintext?: string, expect?: string, key_bits: number }>
  }
}

export const TOKENS = { billing: 'billing-token-0123456789abcdef', orders: 'orders-token-0123456789abcdef' }

/** Log lines of one app, scanned for secrets when the test ends. */
export class LogCapture extends Writable {
  readonly lines: Array<Record<string, unknown>> = []
  readonly raw: string[] = []
  override _write (chunk: Buffer, _enc: string, done: () => void): void {
    for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) {
      this.raw.push(line)
      this.lines.push(JSON.parse(line) as Record<string, unknown>)
    }
    done()
  }

  find (msg: string): Array<Record<string, unknown>> {
    return this.lines.filter(l => l.msg === msg)
  }
}

/** Strings that must never appear in a log line: key bodies, the APIv3 key, caller tokens. */
export function secretsOf (sandbox?: RunningSandbox): string[] {
  const keyBodies = (file: string): string[] => readFileSync(file, 'utf8').split('\n').filter(l => l.length > 40 && !l.startsWith('-----'))
  const secrets = [
    'PRIVATE KEY-----',
    ...keyBodies(fixture('merchant-test-key.pem')),
    ...keyBodies(fixture('platform-test-key.pem')),
    ...Object.values(TOKENS)
  ]
  for (const merchant of sandbox?.merchants.all ?? []) {
    secrets.push(merchant.apiv3Key, ...keyBodies(sandbox?.merchants.path(merchant, merchant.files.merchantKey) ?? ''))
  }
  return secrets
}

/** Throws (without repeating the secret) when a log line holds one; runs at every test gateway's teardown. */
export function assertNoSecrets (logs: LogCapture, secrets: string[]): void {
  const leaks = logs.raw.map((line, i) => secrets.some(s => line.includes(s)) ? i : -1).filter(i => i >= 0)
  if (leaks.length > 0) throw new Error(`a secret appears in log lines ${leaks.join(', ')} of ${logs.raw.length}`)
}

/**
 * A sandbox on a loopback port with keys made once per test process (a direct merchant and a service provider
 * unless `merchants` says otherwise). Its merchants file is written per key mode, so that sandboxes of several
 * modes alive at once do not overwrite each other's.
 */
let sandboxDir: Promise<string> | undefined
/** Noon in Beijing: inside the notices' 07:00-22:00 window, whatever the time of day the tests run. */
export const BEIJING_NOON = new Date('2026-12-02T04:00:00Z')

export async function testSandbox (t: Test, opts: { keyMode?: KeyMode, slowMs?: number, merchants?: MerchantSpec[], clock?: () => Date, noticeWindow?: boolean, presign?: Record<string, number> } = {}): Promise<RunningSandbox> {
  sandboxDir ??= mkdtemp(join(tmpdir(), 'wechatpay-sandbox-'))
  const dir = await sandboxDir
  const profilesFile = `merchants.${opts.keyMode ?? 'public-key'}.${(opts.merchants ?? []).map(m => m.name).join('-')}.json`
  const sandbox = await startSandbox({ dir, host: '127.0.0.1', port: 0, logger: createLogger('silent'), profilesFile, clock: () => BEIJING_NOON, ...opts })
  t.teardown(() => sandbox.close())
  return sandbox
}

/** The sandbox's merchant profiles, as the gateway reads them from its merchants file. */
export function sandboxProfiles (sandbox: RunningSandbox): MerchantConfig[] {
  const problems: string[] = []
  const profiles = loadMerchantsFile(sandbox.merchantsFile, { baseUrl: sandbox.url }, problems)
  if (problems.length > 0) throw new Error(problems.join('\n'))
  return profiles
}

process.once('exit', () => { if (sandboxDir !== undefined) void sandboxDir.then(dir => rm(dir, { recursive: true, force: true })) })

export function testConfig (merchants: MerchantConfig[], overrides: Partial<AppConfig> = {}): AppConfig {
  return {
    mode: 'live',
    host: '127.0.0.1',
    port: 0,
    logLevel: 'info',
    docs: true,
    merchants,
    upstream: { baseUrl: 'http://127.0.0.1:1', timeoutMs: 2000 },
    auth: { enabled: true, tokens: [{ name: 'billing', token: TOKENS.billing }, { name: 'orders', token: TOKENS.orders, operations: ['payscorePartnerCollect'] }] },
    sandbox: { SANDBOX_DIR: '.sandbox', SANDBOX_PORT: 8080, SANDBOX_HOST: '127.0.0.1', SANDBOX_KEY_MODE: 'public-key', SANDBOX_SLOW_MS: 15_000, SANDBOX_BENCH: '0', SANDBOX_BENCH_PRESIGN: undefined, SANDBOX_NOTICE_WINDOW: 'on' },
    shutdownDrainDelayMs: 0,
    shutdownGraceMs: 20_000,
    idempotencyTtlMs: 60_000,
    idempotencyMemory: { maxKeys: 1000, maxKeysPerOwner: 1000 },
    rateLimit: { max: 0, windowMs: 1000 },
    maxEventLoopDelayMs: 0,
    metrics: true,
    tracing: false,
    http: { requestTimeoutMs: 10_000, keepAliveTimeoutMs: 5000, maxConnections: 10_000, maxConnectionsPerAddress: 512 },
    // No notification listener unless a test asks for one (port 0: any free port).
    notify: { host: '127.0.0.1', subscribers: [], deliveryTimeoutMs: 2000, retry: { baseMs: 50, maxMs: 200, horizonMs: 60_000 }, retentionMs: 600_000 },
    ...overrides
  }
}

/** The gateway against a real sandbox on loopback; its logs are captured and scanned for secrets at the end. */
export interface GatewayOptions {
  sandbox?: RunningSandbox
  config?: Partial<AppConfig>
  /** Applied to every merchant profile; `timeoutMs` is the upstream timeout (2 s by default in tests). */
  wechat?: Partial<MerchantConfig> & { timeoutMs?: number }
  /** Fields removed from every merchant profile. */
  omit?: Array<keyof MerchantConfig>
  /** Only these profiles of the sandbox (by name). */
  only?: string[]
  build?: Omit<BuildOptions, 'logger'>
}

export async function testGateway (t: Test, opts: GatewayOptions = {}) {
  const sandbox = opts.sandbox ?? await testSandbox(t)
  const logs = new LogCapture()
  const { timeoutMs = 2000, ...common } = opts.wechat ?? {}
  const merchants = sandboxProfiles(sandbox).filter(p => opts.only?.includes(p.name) ?? true).map(profile => {
    const merged: Partial<MerchantConfig> = { ...profile, ...common }
    for (const key of opts.omit ?? []) delete merged[key]
    return merged as MerchantConfig
  })
  const config = testConfig(merchants, { upstream: { baseUrl: sandbox.url, timeoutMs }, ...opts.config })
  const app = await buildApp(config, { logger: createLogger('debug', logs), ...opts.build })
  await redisReady(app)
  t.teardown(async () => {
    await app.close()
    assertNoSecrets(logs, secretsOf(sandbox))
  })
  return { app, sandbox, logs, config }
}

/** The gateway starts without waiting for Redis (it is not ready until then); tests go on once it is connected. */
export async function redisReady (app: { redis: { status: string, once: (event: 'ready', listener: () => void) => unknown } | null }): Promise<void> {
  const { redis } = app
  if (redis !== null && redis.status !== 'ready') await new Promise<void>(resolve => redis.once('ready', resolve))
}

export const auth = (token: string = TOKENS.billing): Record<string, string> => ({ authorization: `Bearer ${token}` })

/** A loopback port nobody listens on (free when asked). */
export async function freePort (): Promise<number> {
  const { createServer } = await import('node:net')
  return await new Promise(resolve => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

/**
 * A real redis-server on a free loopback port for this test (TEST_REDIS_URL uses an existing one instead).
 * CI installs Debian's redis-server; nothing is skipped when it is missing: the test fails and says so.
 * With `persist`, it keeps an append-only file in its own folder: `stop` shuts it down cleanly (as
 * `redis-cli shutdown` does) and `start` brings it back on the same port and data.
 */
export interface TestRedis {
  url: string
  stop: () => Promise<void>
  start: () => Promise<void>
  /** SIGSTOP / SIGCONT: Redis hangs with its connections open, as behind a network partition. */
  pause: () => void
  resume: () => void
  commands: () => Promise<number>
}
export async function testRedis (t: Test, opts: { persist?: boolean } = {}): Promise<TestRedis> {
  const { spawn } = await import('node:child_process')
  const { Redis } = await import('ioredis')
  const commands = async (url: string): Promise<number> => {
    const client = new Redis(url, { lazyConnect: true })
    await client.connect()
    const info = await client.info('commandstats')
    client.disconnect()
    // Every command run, but INFO (these counts, ready checks) and PING (the gateway's watchdog, once a second).
    return [...info.matchAll(/^cmdstat_([a-z|]+):calls=(\d+)/gm)].filter(([, name]) => name !== 'info' && name !== 'ping').reduce((sum, [, , calls]) => sum + Number(calls), 0)
  }
  if (process.env.TEST_REDIS_URL !== undefined) {
    const url = process.env.TEST_REDIS_URL
    const unsupported = (): never => { throw new Error('pausing needs a redis-server started by the test (unset TEST_REDIS_URL)') }
    return { url, stop: async () => {}, start: async () => {}, pause: unsupported, resume: unsupported, commands: () => commands(url) }
  }
  const port = await freePort()
  const dir = await mkdtemp(join(tmpdir(), 'redis-'))
  let child: ReturnType<typeof spawn> | undefined
  const start = async (): Promise<void> => {
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir, '--appendonly', opts.persist === true ? 'yes' : 'no']
    const started = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] })
    child = started
    await new Promise<void>((resolve, reject) => {
      started.once('error', err => reject(new Error(`cannot start redis-server (${err.message}): install it (apt-get install redis-server) or set TEST_REDIS_URL`)))
      started.stdout?.on('data', (chunk: Buffer) => { if (chunk.toString().includes('Ready to accept connections')) resolve() })
    })
  }
  const stop = async (): Promise<void> => {
    const running = child
    child = undefined
    if (running === undefined || running.exitCode !== null) return
    const exited = new Promise(resolve => running.once('exit', resolve))
    running.kill('SIGCONT') // a paused server would not act on SIGTERM
    running.kill(opts.persist === true ? 'SIGTERM' : 'SIGKILL')
    await exited
  }
  await start()
  t.teardown(async () => {
    await stop()
    await rm(dir, { recursive: true, force: true })
  })
  const url = `redis://127.0.0.1:${port}`
  return { url, stop, start, pause: () => child?.kill('SIGSTOP'), resume: () => child?.kill('SIGCONT'), commands: () => commands(url) }
}

/**
 * A proxy between the gateway and the sandbox that misbehaves on demand, as a hostile network or a broken proxy
 * would. `forwarded` counts the calls it passed on (each one carried out by the sandbox). With `sign`, its own
 * answers ('odd-codes', and 'answer': `state.answer`'s status and code) carry valid WeChat Pay signatures, as if WeChat
 * Pay had sent them.
 */
export type ProxyMode = 'forward' | 'html504' | 'unsigned500' | 'replay' | 'odd-codes' | 'answer'
export async function hostileProxy (t: Test, target: string, sign?: (body: string) => Promise<Record<string, string>>) {
  const { createServer } = await import('node:http')
  const { request: send } = await import('undici')
  const state = { mode: 'forward' as ProxyMode, forwarded: 0, captured: undefined as undefined | { status: number, headers: Record<string, string>, body: string }, n: 0, answer: { status: 400, code: 'PARAM_ERROR' } }
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      void (async () => {
        if (state.mode === 'replay' && state.captured !== undefined) {
          res.writeHead(state.captured.status, state.captured.headers).end(state.captured.body)
          return
        }
        const headers = Object.fromEntries(Object.entries(req.headers).filter(([k]) => !['host', 'connection', 'content-length'].includes(k))) as Record<string, string>
        const answer = await send(target + (req.url ?? '/'), { method: req.method as 'POST', headers, body: Buffer.concat(chunks) })
        const body = await answer.body.text()
        state.forwarded++
        const signed = Object.fromEntries(Object.entries(answer.headers).filter(([k]) => k.startsWith('wechatpay-') || k === 'request-id')) as Record<string, string>
        if (answer.statusCode === 204) state.captured = { status: 204, headers: signed, body }
        if (state.mode === 'html504') {
          res.writeHead(504, { 'content-type': 'text/html' }).end('<html><head><title>504 Gateway Time-out</title></head><body>nginx</body></html>')
        } else if (state.mode === 'unsigned500') {
          res.writeHead(500, { 'content-type': 'application/json' }).end('{"code":"SYSTEM_ERROR","message":"系统繁忙，请稍后重试"}')
        } else if (state.mode === 'answer') {
          const said = JSON.stringify({ code: state.answer.code, message: 'x' })
          res.writeHead(state.answer.status, { 'content-type': 'application/json', ...await sign?.(said) }).end(said)
        } else if (state.mode === 'odd-codes') {
          const odd = JSON.stringify({ code: `ODD_CODE_${state.n++}`, message: 'x' })
          res.writeHead(400, { 'content-type': 'application/json', ...await sign?.(odd) }).end(odd)
        } else {
          res.writeHead(answer.statusCode, { ...signed, ...(body !== '' && { 'content-type': 'application/json' }) }).end(body)
        }
      })()
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => { server.closeAllConnections(); server.close(() => resolve()) }))
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, state }
}
