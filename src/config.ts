import { readFileSync } from 'node:fs'
import { z } from 'zod'
import { impliedKeyMode, keyModeProblems, loadMerchantsFile } from './merchants-file.js'
import { loadSubscribers, type Subscriber } from './notifications/subscribers.js'
import { sandboxSettings, type SandboxSettings } from './sandbox/settings.js'
import { operations } from './wechat/operations.js'
import { exposedFile, KeyError } from './wechat/keys.js'
import { loadKeys, type MerchantConfig } from './wechat/profile.js'
import { OPERATION_RETRY_POLICY } from './wechat/retry.js'

/** Time, within the shutdown grace, for the last answers to go out and the process to close. */
export const SHUTDOWN_MARGIN_MS = 1000
/** How long after a call's deadline an Idempotency-Key's holder still counts as running (app.ts). */
export const IDEMPOTENCY_CALL_MARGIN_MS = 5000

/**
 * Configuration comes from the environment only, is validated once at start and is passed to `buildApp` as a
 * typed object. Every problem is reported at once. Secret settings can also be read from a file (`NAME_FILE`),
 * which is how Docker and Kubernetes secrets arrive.
 */

export class ConfigError extends Error {
  constructor (readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map(p => `  - ${p}`).join('\n')}`)
    this.name = 'ConfigError'
  }
}

export interface CallerToken {
  name: string
  token: string
  /** Operation ids this caller may use; undefined = all. */
  operations?: string[]
  /** Merchant profiles (by name) this caller may use; undefined = all. */
  merchants?: string[]
}

export interface Config {
  /** Worth an operator's look, not worth refusing to start: logged at start. */
  warnings?: string[]
  mode: 'live' | 'sandbox'
  host: string
  port: number
  logLevel: string
  docs: boolean
  /** The merchant profiles (WECHATPAY_MERCHANTS_FILE, or the single-merchant settings); in sandbox mode, the sandbox's. */
  merchants: MerchantConfig[]
  /** Where every profile calls WeChat Pay unless it says otherwise, and the longest one attempt may take. */
  upstream: { baseUrl: string, backupBaseUrl?: string, timeoutMs: number }
  auth: { enabled: boolean, tokens: CallerToken[] }
  /** The simulator's settings, for sandbox mode (the same as `npm run sandbox` reads). */
  sandbox: SandboxSettings
  /** Shared state for several replicas (idempotency keys, rate limits); in memory when absent. */
  redisUrl?: string
  /** How long one Redis command may take before it counts as failed (a hung Redis must not hold calls). */
  redisCommandTimeoutMs?: number
  idempotencyTtlMs: number
  /** Caps of the in-memory idempotency store (no Redis): keys in all, and per caller. */
  idempotencyMemory: { maxKeys: number, maxKeysPerOwner: number }
  /** Per caller, per window; 0 turns rate limiting off. */
  rateLimit: { max: number, windowMs: number }
  /** Above this event-loop delay the gateway sheds load with 503. */
  maxEventLoopDelayMs: number
  metrics: boolean
  /** OpenTelemetry export: on when an OTLP endpoint is set (the exporter reads the OTEL_EXPORTER_OTLP_* variables). */
  tracing: boolean
  /** What one client can hold: how long a request may take to arrive, idle keep-alive, connections. */
  http: { requestTimeoutMs: number, keepAliveTimeoutMs: number, maxConnections: number, maxConnectionsPerAddress: number }
  /** SIGTERM: how long the gateway keeps taking calls while not ready (load balancers move away). */
  shutdownDrainDelayMs: number
  /** How long a graceful shutdown may take in all: the drain delay, then the longest call, and a margin. */
  shutdownGraceMs: number
  /** WeChat Pay's notifications: their listener (no port: none) and the relay to subscribers. */
  notify: NotifyConfig
}

export interface NotifyConfig {
  port?: number
  host: string
  subscribers: Subscriber[]
  deliveryTimeoutMs: number
  retry: { baseMs: number, maxMs: number, horizonMs: number }
  retentionMs: number
}

export type AppConfig = Config

/** Settings that hold secrets; each also reads from `NAME_FILE`. */
const SECRET_SETTINGS = ['WECHATPAY_APIV3_KEY', 'GATEWAY_TOKENS', 'REDIS_URL'] as const

/** What a caller token may be limited to: the operations and queries, and the notifications' operator API. */
const operationIds = new Set([...operations.map(op => op.id), 'notifications'])
const optionalText = z.string().trim().min(1).optional()
const url = z.url({ protocol: /^https?$/ }).transform(u => u.replace(/\/+$/, ''))

/**
 * GATEWAY_TOKENS: `name:token[:operations[:merchants]]`, comma or newline separated; each list `|`-separated, and
 * `*` (or nothing) for all. E.g. `billing:TOKEN:papayFailNotify|payscorePartnerCollect:brand-a|brand-b`.
 */
const tokenList = z.string().transform((value, ctx): CallerToken[] => {
  const tokens: CallerToken[] = []
  const list = (text: string | undefined): string[] | undefined => {
    const items = text?.split('|').map(s => s.trim()).filter(Boolean)
    return items === undefined || items.length === 0 || items.includes('*') ? undefined : items
  }
  for (const [i, entry] of value.split(/[,\n]/).map(e => e.trim()).filter(Boolean).entries()) {
    const [name = '', token = '', ops, merchants, ...extra] = entry.split(':')
    // Messages name the entry by position, and by caller name only when it is one: a mistyped entry may be a token.
    const validName = /^[A-Za-z0-9_.-]{1,64}$/.test(name) && entry.includes(':')
    const where = validName ? `entry ${i + 1} (${name})` : `entry ${i + 1}`
    if (!validName || extra.length > 0) ctx.addIssue({ code: 'custom', message: `${where}: expected name:token[:operations[:merchants]], the caller name 1-64 of A-Z a-z 0-9 _ . -` })
    if (token.length < 16) ctx.addIssue({ code: 'custom', message: `${where}: the token must have at least 16 characters` })
    const allowed = list(ops)
    if (allowed?.some(op => !operationIds.has(op)) === true) {
      ctx.addIssue({ code: 'custom', message: `${where}: unknown operation in the list (known: ${[...operationIds].join(', ')})` })
    }
    if (tokens.some(t => t.name === name)) ctx.addIssue({ code: 'custom', message: `${where}: caller ${name} is listed twice` })
    const profiles = list(merchants)
    tokens.push({ name, token, ...(allowed !== undefined && { operations: allowed }), ...(profiles !== undefined && { merchants: profiles }) })
  }
  return tokens
})

/** Callers limited to merchant profiles that do not exist: a start error (the sandbox's profiles are checked too). */
export function callerMerchantProblems (tokens: CallerToken[], merchants: MerchantConfig[]): string[] {
  const names = new Set(merchants.map(m => m.name))
  return tokens.flatMap(t => (t.merchants ?? []).filter(m => !names.has(m))
    .map(m => `GATEWAY_TOKENS: caller ${t.name} is limited to merchant ${m}, which is not a profile of this gateway (known: ${[...names].join(', ')})`))
}

/** Each profile's key files read and checked now, so that their problems are listed with every other one. */
export function keyFileProblems (merchants: MerchantConfig[]): string[] {
  return merchants.flatMap(config => {
    try {
      loadKeys(config)
      return []
    } catch (err) {
      if (err instanceof KeyError) return err.problems
      throw err
    }
  })
}

/** The single-merchant settings: one profile, named `default`, that serves both kinds of operation. */
const SINGLE_MERCHANT = ['WECHATPAY_MCHID', 'WECHATPAY_APPID', 'WECHATPAY_MERCHANT_SERIAL', 'WECHATPAY_PRIVATE_KEY_FILE',
  'WECHATPAY_MERCHANT_CERT_FILE', 'WECHATPAY_PUBLIC_KEY_ID', 'WECHATPAY_PUBLIC_KEY_FILE', 'WECHATPAY_APIV3_KEY', 'WECHATPAY_KEY_MODE',
  'WECHATPAY_MERCHANT_TYPE'] as const

const envSchema = sandboxSettings.extend({
  NODE_ENV: z.string().optional(),
  WECHATPAY_MODE: z.enum(['live', 'sandbox']).optional(),
  WECHATPAY_MERCHANTS_FILE: optionalText,
  WECHATPAY_MERCHANT_TYPE: z.enum(['direct', 'partner']).optional(),
  WECHATPAY_KEY_MODE: z.enum(['public-key', 'certificate', 'migration']).optional(),
  WECHATPAY_BASE_URL: url.default('https://api.mch.weixin.qq.com'),
  WECHATPAY_BACKUP_BASE_URL: url.optional(),
  WECHATPAY_MCHID: z.string().regex(/^[0-9]{1,32}$/, 'must be 1-32 digits').optional(),
  WECHATPAY_APPID: z.string().regex(/^[0-9A-Za-z_-]{1,32}$/, 'must be 1-32 letters, digits, _ or -').optional(),
  WECHATPAY_MERCHANT_SERIAL: z.string().regex(/^[0-9A-Fa-f]{1,64}$/, 'must be the hexadecimal serial of the merchant API certificate').optional(),
  WECHATPAY_PRIVATE_KEY_FILE: optionalText,
  WECHATPAY_MERCHANT_CERT_FILE: optionalText,
  WECHATPAY_PUBLIC_KEY_ID: z.string().regex(/^PUB_KEY_ID_[0-9A-Za-z]+$/, 'must look like PUB_KEY_ID_0112...').optional(),
  WECHATPAY_PUBLIC_KEY_FILE: optionalText,
  WECHATPAY_APIV3_KEY: z.string().optional().refine(v => v === undefined || Buffer.byteLength(v) === 32,
    'must be exactly 32 bytes (the APIv3 key set in the merchant platform)'),
  WECHATPAY_TIMEOUT_MS: z.coerce.number().int().min(100).max(120_000).default(10_000),
  PORT: z.coerce.number().int().min(0).max(65_535).default(3000),
  HOST: z.string().min(1).default('0.0.0.0'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  GATEWAY_DOCS: z.enum(['on', 'off']).default('on'),
  GATEWAY_AUTH: z.enum(['on', 'off']).optional(),
  GATEWAY_TOKENS: tokenList.optional(),
  SHUTDOWN_DRAIN_DELAY_MS: z.coerce.number().int().min(0).max(120_000).default(5000),
  SHUTDOWN_GRACE_MS: z.coerce.number().int().min(0).max(300_000).default(20_000),
  REDIS_URL: z.url({ protocol: /^rediss?$/ }).optional(),
  // At most 1 s: a call waits on a few Redis commands besides WeChat Pay (a nonce per verified answer), and the 5 s
  // margin after the longest call (IDEMPOTENCY_CALL_MARGIN_MS) must cover them.
  REDIS_COMMAND_TIMEOUT_MS: z.coerce.number().int().min(10).max(1000).default(1000),
  IDEMPOTENCY_TTL_S: z.coerce.number().int().min(1).max(7 * 24 * 3600).default(24 * 3600),
  IDEMPOTENCY_MAX_KEYS: z.coerce.number().int().min(1).default(100_000),
  IDEMPOTENCY_MAX_KEYS_PER_CALLER: z.coerce.number().int().min(1).optional(),
  RATE_LIMIT_MAX: z.coerce.number().int().min(0).default(100),
  RATE_LIMIT_WINDOW_MS: z.coerce.number().int().min(100).default(1000),
  MAX_EVENT_LOOP_DELAY_MS: z.coerce.number().int().min(0).default(1000),
  GATEWAY_METRICS: z.enum(['on', 'off']).default('on'),
  OTEL_EXPORTER_OTLP_ENDPOINT: url.optional(),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: url.optional(),
  HTTP_REQUEST_TIMEOUT_MS: z.coerce.number().int().min(100).max(300_000).default(10_000),
  HTTP_KEEP_ALIVE_TIMEOUT_MS: z.coerce.number().int().min(100).max(600_000).default(5000),
  HTTP_MAX_CONNECTIONS: z.coerce.number().int().min(1).default(10_000),
  HTTP_MAX_CONNECTIONS_PER_ADDRESS: z.coerce.number().int().min(0).default(512),
  NOTIFY_PORT: z.union([z.literal('off'), z.coerce.number().int().min(0).max(65_535)]).default(3001),
  NOTIFY_HOST: z.string().min(1).default('0.0.0.0'),
  NOTIFY_SUBSCRIBERS_FILE: optionalText,
  NOTIFY_DELIVERY_TIMEOUT_MS: z.coerce.number().int().min(100).max(60_000).default(4000),
  NOTIFY_RETRY_BASE_MS: z.coerce.number().int().min(10).default(10_000),
  NOTIFY_RETRY_MAX_MS: z.coerce.number().int().min(10).default(3600_000),
  NOTIFY_RETRY_HORIZON_S: z.coerce.number().int().min(1).default(25 * 3600),
  NOTIFY_RETENTION_S: z.coerce.number().int().min(1).default(7 * 24 * 3600)
})

type Env = Record<string, string | undefined>

/** Replaces `NAME_FILE` by the file's content for secret settings; both set is an error. */
function resolveSecretFiles (env: Env, problems: string[], warnings: string[]): Env {
  // Empty strings mean "not set" (Compose writes `FOO=` for unset variables).
  const out: Env = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== ''))
  for (const name of SECRET_SETTINGS) {
    const file = out[`${name}_FILE`]
    if (file === undefined) continue
    if (out[name] !== undefined) {
      problems.push(`${name} and ${name}_FILE are both set; keep one`)
      continue
    }
    try {
      out[name] = readFileSync(file, 'utf8').replace(/\r?\n$/, '')
      // The APIv3 key file is the merchant profile's to warn about (it is re-read on reload).
      const exposed = name === 'WECHATPAY_APIV3_KEY' ? undefined : exposedFile(file, `${name}_FILE`)
      if (exposed !== undefined) warnings.push(exposed)
    } catch (err) {
      problems.push(`${name}_FILE: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
    }
  }
  return out
}

type Parsed = z.infer<typeof envSchema>

/** The profile the WECHATPAY_* single-merchant settings describe (what one deployment held before profiles). */
function singleMerchant (e: Parsed, upstream: Config['upstream'], problems: string[], apiv3KeyFile: string | undefined): MerchantConfig | undefined {
  const before = problems.length
  const required = ['WECHATPAY_MCHID', 'WECHATPAY_MERCHANT_SERIAL', 'WECHATPAY_PRIVATE_KEY_FILE'] as const
  for (const name of required) if (e[name] === undefined) problems.push(`${name} is required in live mode (or WECHATPAY_MERCHANTS_FILE)`)
  if ((e.WECHATPAY_PUBLIC_KEY_ID === undefined) !== (e.WECHATPAY_PUBLIC_KEY_FILE === undefined)) {
    problems.push('WECHATPAY_PUBLIC_KEY_ID and WECHATPAY_PUBLIC_KEY_FILE go together: set both or neither')
  }
  const has = { publicKey: e.WECHATPAY_PUBLIC_KEY_ID !== undefined, apiv3Key: e.WECHATPAY_APIV3_KEY !== undefined }
  const keyMode = e.WECHATPAY_KEY_MODE ?? impliedKeyMode(has.publicKey, has.apiv3Key)
  problems.push(...keyModeProblems('', keyMode, has, {
    publicKey: 'WECHATPAY_PUBLIC_KEY_ID + WECHATPAY_PUBLIC_KEY_FILE', apiv3Key: 'WECHATPAY_APIV3_KEY', keyMode: 'WECHATPAY_KEY_MODE'
  }))
  if (e.WECHATPAY_PUBLIC_KEY_ID !== undefined && e.WECHATPAY_PUBLIC_KEY_ID === e.WECHATPAY_MERCHANT_SERIAL) {
    problems.push('WECHATPAY_PUBLIC_KEY_ID equals the merchant serial: the merchant\'s own key cannot verify WeChat Pay\'s answers')
  }
  if (problems.length > before || e.WECHATPAY_MCHID === undefined || e.WECHATPAY_MERCHANT_SERIAL === undefined ||
    e.WECHATPAY_PRIVATE_KEY_FILE === undefined || keyMode === undefined) return undefined
  return {
    name: 'default',
    // Type `direct` unless WECHATPAY_MERCHANT_TYPE says otherwise, but both kinds of operation, as before profiles.
    types: e.WECHATPAY_MERCHANT_TYPE === 'partner' ? ['partner', 'direct'] : ['direct', 'partner'],
    mchid: e.WECHATPAY_MCHID,
    ...(e.WECHATPAY_APPID !== undefined && { appid: e.WECHATPAY_APPID }),
    merchantSerial: e.WECHATPAY_MERCHANT_SERIAL.toUpperCase(),
    privateKeyFile: e.WECHATPAY_PRIVATE_KEY_FILE,
    ...(e.WECHATPAY_MERCHANT_CERT_FILE !== undefined && { merchantCertFile: e.WECHATPAY_MERCHANT_CERT_FILE }),
    keyMode,
    ...(e.WECHATPAY_PUBLIC_KEY_ID !== undefined && { publicKeyId: e.WECHATPAY_PUBLIC_KEY_ID }),
    ...(e.WECHATPAY_PUBLIC_KEY_FILE !== undefined && { publicKeyFile: e.WECHATPAY_PUBLIC_KEY_FILE }),
    ...(e.WECHATPAY_APIV3_KEY !== undefined && { apiv3Key: e.WECHATPAY_APIV3_KEY }),
    ...(apiv3KeyFile !== undefined && { apiv3KeyFile }),
    baseUrl: upstream.baseUrl,
    ...(upstream.backupBaseUrl !== undefined && { backupBaseUrl: upstream.backupBaseUrl }),
    labels: {
      privateKeyFile: 'WECHATPAY_PRIVATE_KEY_FILE',
      merchantCertFile: 'WECHATPAY_MERCHANT_CERT_FILE',
      merchantSerial: 'WECHATPAY_MERCHANT_SERIAL',
      publicKeyFile: 'WECHATPAY_PUBLIC_KEY_FILE',
      apiv3Key: apiv3KeyFile !== undefined ? 'WECHATPAY_APIV3_KEY_FILE' : 'WECHATPAY_APIV3_KEY'
    }
  }
}

export function loadConfig (rawEnv: Env = process.env): Config {
  const problems: string[] = []
  const warnings: string[] = []
  const env = resolveSecretFiles(rawEnv, problems, warnings)
  const parsed = envSchema.safeParse(env)
  if (!parsed.success) {
    for (const issue of parsed.error.issues) problems.push(`${issue.path.join('.')}: ${issue.message}`)
    throw new ConfigError(problems)
  }
  const e = parsed.data
  const mode = e.WECHATPAY_MODE ?? (e.NODE_ENV === 'production' ? 'live' : 'sandbox')

  const upstream = {
    baseUrl: e.WECHATPAY_BASE_URL,
    ...(e.WECHATPAY_BACKUP_BASE_URL !== undefined && { backupBaseUrl: e.WECHATPAY_BACKUP_BASE_URL }),
    timeoutMs: e.WECHATPAY_TIMEOUT_MS
  }
  const single = SINGLE_MERCHANT.filter(name => e[name] !== undefined)
  let merchants: MerchantConfig[] = []
  if (mode === 'live') {
    if (e.WECHATPAY_MERCHANTS_FILE !== undefined && single.length > 0) {
      problems.push(`WECHATPAY_MERCHANTS_FILE and the single-merchant settings (${single.join(', ')}) are both set: describe the merchants in one place`)
    } else if (e.WECHATPAY_MERCHANTS_FILE !== undefined) {
      merchants = loadMerchantsFile(e.WECHATPAY_MERCHANTS_FILE, upstream, problems)
    } else {
      const profile = singleMerchant(e, upstream, problems, env.WECHATPAY_APIV3_KEY_FILE)
      if (profile !== undefined) merchants = [profile]
    }
  }

  const tokens = e.GATEWAY_TOKENS ?? []
  const authOff = e.GATEWAY_AUTH === 'off'
  if (mode === 'live' && tokens.length === 0 && !authOff) {
    problems.push('GATEWAY_TOKENS (or GATEWAY_TOKENS_FILE) is required in live mode; set GATEWAY_AUTH=off to run without caller authentication')
  }
  if (e.GATEWAY_AUTH === 'on' && tokens.length === 0) problems.push('GATEWAY_AUTH=on needs GATEWAY_TOKENS')
  // A call in flight at SIGTERM must be able to finish within the grace period.
  const longestCall = OPERATION_RETRY_POLICY.budgetMs + e.WECHATPAY_TIMEOUT_MS
  const needed = e.SHUTDOWN_DRAIN_DELAY_MS + longestCall + SHUTDOWN_MARGIN_MS
  if (e.SHUTDOWN_GRACE_MS < needed) {
    problems.push(`SHUTDOWN_GRACE_MS (${e.SHUTDOWN_GRACE_MS}) must be at least ${needed}: SHUTDOWN_DRAIN_DELAY_MS (${e.SHUTDOWN_DRAIN_DELAY_MS}) + the longest call ` +
      `(${longestCall} ms: WECHATPAY_TIMEOUT_MS ${e.WECHATPAY_TIMEOUT_MS} + the ${OPERATION_RETRY_POLICY.budgetMs} ms retry budget) + ${SHUTDOWN_MARGIN_MS} ms to answer; ` +
      'otherwise a call in flight at shutdown could be cut off. Set the orchestrator\'s stop timeout above it too')
  }
  // A key must outlive the call that holds it, or a duplicate arriving after it expired would run the call again.
  if (e.IDEMPOTENCY_TTL_S * 1000 < longestCall + IDEMPOTENCY_CALL_MARGIN_MS) {
    problems.push(`IDEMPOTENCY_TTL_S (${e.IDEMPOTENCY_TTL_S}) must be at least ${Math.ceil((longestCall + IDEMPOTENCY_CALL_MARGIN_MS) / 1000)}: an Idempotency-Key must outlive the longest call (${longestCall} ms) it can hold`)
  }
  // Without Redis a notification is delivered before WeChat Pay is answered, which it expects within 5 s.
  if (e.REDIS_URL === undefined && e.NOTIFY_DELIVERY_TIMEOUT_MS > 4500) {
    problems.push(`NOTIFY_DELIVERY_TIMEOUT_MS (${e.NOTIFY_DELIVERY_TIMEOUT_MS}) must be at most 4500 without REDIS_URL: deliveries are made before WeChat Pay, which waits 5 s, is answered`)
  }
  if (e.NOTIFY_PORT !== 'off' && e.NOTIFY_PORT !== 0 && e.NOTIFY_PORT === e.PORT) {
    problems.push(`NOTIFY_PORT (${e.NOTIFY_PORT}) is PORT: the notification listener (the one WeChat Pay reaches) needs a port of its own, or NOTIFY_PORT=off`)
  }
  if (e.NOTIFY_RETENTION_S < e.NOTIFY_RETRY_HORIZON_S) problems.push('NOTIFY_RETENTION_S must be at least NOTIFY_RETRY_HORIZON_S: a notification is kept while it is retried')
  // In sandbox mode the profiles are the simulator's, known at start: server.ts checks the subscribers' then.
  const subscribers = e.NOTIFY_SUBSCRIBERS_FILE === undefined
    ? []
    : loadSubscribers(e.NOTIFY_SUBSCRIBERS_FILE, mode === 'live' ? merchants.map(m => m.name) : undefined, problems, warnings)
  // It may hold subscribers' secrets inline.
  const exposedSubscribers = e.NOTIFY_SUBSCRIBERS_FILE === undefined ? undefined : exposedFile(e.NOTIFY_SUBSCRIBERS_FILE, 'NOTIFY_SUBSCRIBERS_FILE')
  if (exposedSubscribers !== undefined) warnings.push(exposedSubscribers)
  // Credentials without live mode are easy to miss: the calls would go to the simulator.
  if (mode === 'sandbox' && (e.WECHATPAY_MERCHANTS_FILE !== undefined || single.length > 0)) {
    const ignored = [...(e.WECHATPAY_MERCHANTS_FILE !== undefined ? ['WECHATPAY_MERCHANTS_FILE'] : []), ...single]
    warnings.push(`sandbox mode ignores ${ignored.join(', ')}: calls go to the built-in simulator with its own merchants. Set WECHATPAY_MODE=live (or NODE_ENV=production) to use them`)
  }
  if (mode === 'live') {
    const inFile = (p: string): string => e.WECHATPAY_MERCHANTS_FILE !== undefined ? `WECHATPAY_MERCHANTS_FILE: ${p}` : p
    problems.push(...callerMerchantProblems(tokens, merchants), ...keyFileProblems(merchants).map(inFile))
  }
  if (problems.length > 0) throw new ConfigError(problems)

  return {
    warnings,
    mode,
    host: e.HOST,
    port: e.PORT,
    logLevel: e.LOG_LEVEL,
    docs: e.GATEWAY_DOCS === 'on',
    merchants,
    upstream,
    auth: { enabled: !authOff && tokens.length > 0, tokens },
    sandbox: Object.fromEntries(Object.entries(e).filter(([k]) => k.startsWith('SANDBOX_'))) as SandboxSettings,
    ...(e.REDIS_URL !== undefined && { redisUrl: e.REDIS_URL }),
    redisCommandTimeoutMs: e.REDIS_COMMAND_TIMEOUT_MS,
    idempotencyTtlMs: e.IDEMPOTENCY_TTL_S * 1000,
    // By default each caller gets an equal share, so that one caller cannot fill the store for all.
    idempotencyMemory: {
      maxKeys: e.IDEMPOTENCY_MAX_KEYS,
      maxKeysPerOwner: e.IDEMPOTENCY_MAX_KEYS_PER_CALLER ?? Math.max(1, Math.floor(e.IDEMPOTENCY_MAX_KEYS / Math.max(1, tokens.length)))
    },
    rateLimit: { max: e.RATE_LIMIT_MAX, windowMs: e.RATE_LIMIT_WINDOW_MS },
    maxEventLoopDelayMs: e.MAX_EVENT_LOOP_DELAY_MS,
    metrics: e.GATEWAY_METRICS === 'on',
    tracing: e.OTEL_EXPORTER_OTLP_ENDPOINT !== undefined || e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT !== undefined,
    http: {
      requestTimeoutMs: e.HTTP_REQUEST_TIMEOUT_MS,
      keepAliveTimeoutMs: e.HTTP_KEEP_ALIVE_TIMEOUT_MS,
      maxConnections: e.HTTP_MAX_CONNECTIONS,
      maxConnectionsPerAddress: e.HTTP_MAX_CONNECTIONS_PER_ADDRESS
    },
    shutdownDrainDelayMs: e.SHUTDOWN_DRAIN_DELAY_MS,
    shutdownGraceMs: e.SHUTDOWN_GRACE_MS,
    notify: {
      ...(e.NOTIFY_PORT !== 'off' && { port: e.NOTIFY_PORT }),
      host: e.NOTIFY_HOST,
      subscribers,
      deliveryTimeoutMs: e.NOTIFY_DELIVERY_TIMEOUT_MS,
      retry: { baseMs: e.NOTIFY_RETRY_BASE_MS, maxMs: e.NOTIFY_RETRY_MAX_MS, horizonMs: e.NOTIFY_RETRY_HORIZON_S * 1000 },
      retentionMs: e.NOTIFY_RETENTION_S * 1000
    }
  }
}
