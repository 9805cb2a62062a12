import { unwatchFile, watchFile } from 'node:fs'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Dispatcher } from 'undici'
import { WechatPayClient } from '../wechat/client.js'
import { KeyError } from '../wechat/keys.js'
import { MemoryNonces, RedisNonces } from '../wechat/nonces.js'
import { MerchantProfile, type CertificateTimings, type MerchantConfig, type ProfileStatus } from '../wechat/profile.js'
import { MerchantProfiles } from '../wechat/profiles.js'
import { READ_RETRY_POLICY, type RetryPolicy } from '../wechat/retry.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The WeChat Pay client. It holds no key: each call takes the merchant profile that signs it. */
    wechat: WechatPayClient
    /** The merchant profiles: the only holders of key material; nothing else in the app can read a key. */
    merchants: MerchantProfiles
    /**
     * Re-reads every profile's key files (SIGHUP, or a file change): new calls use the new keys, calls in flight
     * finish. A profile whose new files are invalid keeps its previous keys, without touching the others.
     */
    reloadCredentials: () => { reloaded: string[], refused: string[] }
    merchantStatus: () => Record<string, ProfileStatus>
  }
}

export interface MerchantsOptions {
  merchants: MerchantConfig[]
  /** The longest one attempt at WeChat Pay may take. */
  timeoutMs: number
  dispatcher?: Dispatcher
  retry?: RetryPolicy
  /** How often key files are checked for changes (0: never). */
  keyWatchMs?: number
  certificates?: CertificateTimings
}

/** Loads every profile, listing every problem of every profile at once. */
function loadProfiles (configs: MerchantConfig[]): MerchantProfile[] {
  const problems: string[] = []
  const profiles = configs.flatMap(config => {
    try {
      return [new MerchantProfile(config)]
    } catch (err) {
      problems.push(...(err as KeyError).problems)
      return []
    }
  })
  if (problems.length > 0) throw new KeyError(problems)
  return profiles
}

async function merchants (app: FastifyInstance, opts: MerchantsOptions): Promise<void> {
  const profiles = loadProfiles(opts.merchants)
  for (const profile of profiles) for (const warning of profile.warnings()) app.log.warn({ merchant: profile.name }, warning)

  // Nonces of accepted answers are shared by the replicas when Redis is configured (a replay may reach any of them).
  // Redis outages are logged once by the redis plugin; each fallback is a debug line.
  const memory = new MemoryNonces()
  const nonces = app.redis === null ? memory : new RedisNonces(app.redis, memory, err => {
    app.log.debug({ reason: err.message }, 'answer nonce checked in memory: Redis cannot be reached')
  })
  const client = new WechatPayClient({
    timeoutMs: opts.timeoutMs,
    nonces,
    ...(opts.retry !== undefined && { retry: opts.retry }),
    ...(opts.dispatcher !== undefined && { dispatcher: opts.dispatcher })
  })
  const registry = new MerchantProfiles(profiles)
  app.decorate('wechat', client)
  app.decorate('merchants', registry)
  app.addHook('onClose', async () => {
    registry.close()
    await client.close()
  })

  // Platform certificates, for the profiles that use them: downloaded before the gateway is ready.
  const started = await Promise.allSettled(profiles.map(profile => profile.startCertificates(
    keysFor => client.exchange(profile, 'GET', '/v3/certificates', '', { policy: READ_RETRY_POLICY, keysFor }),
    {
      error: err => { app.log.error({ merchant: profile.name, reason: err.message }, 'platform certificate download failed') },
      refreshed: serials => { app.log.info({ merchant: profile.name, serials }, 'platform certificates updated') },
      publicKeyOnly: why => { app.log.warn({ merchant: profile.name }, why) }
    },
    opts.certificates
  )))
  const failed = started.flatMap(r => r.status === 'rejected' ? (r.reason as KeyError).problems ?? [(r.reason as Error).message] : [])
  if (failed.length > 0) {
    registry.close()
    await client.close()
    throw new KeyError(failed)
  }

  const reload = (profile: MerchantProfile): boolean => {
    try {
      profile.reload()
      app.log.info({ merchant: profile.name, merchantSerial: profile.identity().serial }, 'credentials reloaded')
      for (const warning of profile.warnings()) app.log.warn({ merchant: profile.name }, warning)
      return true
    } catch (err) {
      app.log.error({ merchant: profile.name, problems: (err as KeyError).problems },
        'credentials NOT reloaded: the new key files are invalid; this merchant keeps its previous keys')
      return false
    }
  }
  app.decorate('reloadCredentials', () => {
    const reloaded: string[] = []
    const refused: string[] = []
    for (const profile of profiles) (reload(profile) ? reloaded : refused).push(profile.name)
    return { reloaded, refused }
  })
  app.decorate('merchantStatus', () => Object.fromEntries(profiles.map(p => [p.name, p.status()])))

  // Key files rotate without a restart: each profile's files are watched (and all are reloaded on SIGHUP).
  const watchMs = opts.keyWatchMs ?? 5000
  if (watchMs > 0) {
    for (const profile of profiles) {
      let pending: NodeJS.Timeout | undefined
      const changed = (): void => {
        // A rotation writes several files: reload once they have all landed.
        clearTimeout(pending)
        pending = setTimeout(() => reload(profile), Math.min(watchMs, 500))
        pending.unref()
      }
      const files = profile.files()
      for (const file of files) watchFile(file, { interval: watchMs, persistent: false }, changed)
      app.addHook('onClose', async () => {
        clearTimeout(pending)
        for (const file of files) unwatchFile(file, changed)
      })
    }
  }
}

export default fp(merchants, { name: 'merchants', fastify: '5.x', dependencies: ['redis'] })
