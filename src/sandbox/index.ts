import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import { buildSandbox, type KeyMode } from './app.js'
import { DEFAULT_MERCHANTS, ensureMerchants, type SandboxMerchants } from './merchants.js'
import type { NotifyOptions } from './notifier.js'
import { PresignedAnswers } from './presigned.js'
import { signingKey } from './protocol.js'
import type { MerchantSpec } from './settings.js'

export interface StartOptions {
  dir: string
  host: string
  port: number
  logger: FastifyBaseLogger
  keyMode?: KeyMode
  slowMs?: number
  bench?: boolean
  /** Enforce the notices' 07:00-22:00 Beijing-time window (default on). */
  noticeWindow?: boolean
  /** The state's clock (tests pin it, so that the notice window does not depend on the time of day). */
  clock?: () => Date
  /** The accounts to play (default: a direct merchant and a service provider). */
  merchants?: readonly MerchantSpec[]
  /** Ids of the direct merchant, fixed when its keys are first made (Compose and SDK users set them). */
  overrides?: { [K in 'mchid' | 'appid' | 'merchantSerial' | 'publicKeyId']?: string | undefined }
  /** The merchant profiles file written in `dir` (default merchants.json). */
  profilesFile?: string
  /** Notifications of business events (also settable later: `app.sandbox.notifier.url`). */
  notify?: NotifyOptions
  /** Benchmarks: how many empty answers to sign ahead of time, per merchant name (presigned.ts). */
  presign?: Record<string, number>
}

export interface RunningSandbox {
  url: string
  merchants: SandboxMerchants
  app: FastifyInstance
  /** The merchant profiles (WECHATPAY_MERCHANTS_FILE format), written for the key mode the simulator started in. */
  merchantsFile: string
  close: () => Promise<void>
}

/** Creates or loads the sandbox's keys in `dir` and starts the simulator on `host:port` (0 = any free port). */
export async function startSandbox (options: StartOptions): Promise<RunningSandbox> {
  const overrides = Object.fromEntries(Object.entries(options.overrides ?? {}).filter(([, v]) => v !== undefined))
  const given = options.merchants ?? DEFAULT_MERCHANTS
  const direct = given.find(s => s.type === 'direct')
  const specs = given.map(spec => spec === direct ? { ...spec, ...overrides } : spec)
  const merchants = await ensureMerchants(options.dir, specs)
  const keyMode = options.keyMode ?? 'public-key'
  const presigned = options.presign === undefined ? undefined : new PresignedAnswers()
  for (const [name, count] of Object.entries(options.presign ?? {})) {
    const merchant = merchants.all.find(m => m.ids.name === name)
    if (merchant !== undefined) await presigned?.fill(name, signingKey(merchant, keyMode, merchant.ids.wechatpay_public_key_id), count)
  }
  const app = buildSandbox({
    merchants,
    logger: options.logger,
    keyMode,
    ...(options.slowMs !== undefined && { slowMs: options.slowMs }),
    ...(options.bench !== undefined && { bench: options.bench }),
    ...(options.noticeWindow !== undefined && { noticeWindow: options.noticeWindow }),
    ...(options.clock !== undefined && { clock: options.clock }),
    ...(options.notify !== undefined && { notify: options.notify }),
    ...(presigned !== undefined && { presigned })
  })
  // Written before listening: whoever waits for the simulator to answer finds the merchants file complete.
  const merchantsFile = merchants.writeProfiles(keyMode, options.profilesFile)
  await app.listen({ host: options.host, port: options.port })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : options.port
  const host = options.host.includes(':') ? `[${options.host}]` : options.host
  const url = `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`
  return { url, merchants, app, merchantsFile, close: () => app.close() }
}
