import { createPublicKey, X509Certificate, type KeyObject } from 'node:crypto'
import { readFileSync, unwatchFile, watchFile } from 'node:fs'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Dispatcher } from 'undici'
import { CertificateManager, NoPlatformCertificates } from '../wechat/certificates.js'
import { WechatPayClient } from '../wechat/client.js'
import { MemoryNonces, RedisNonces } from '../wechat/nonces.js'
import { checkMerchantCertificate, exposedFile, KeyError, KeyRing, loadPrivateKey, loadPublicKey, sameKey } from '../wechat/keys.js'
import type { RetryPolicy } from '../wechat/retry.js'
import type { MerchantIdentity } from '../wechat/signer.js'
import type { WechatConfig } from '../config.js'

export interface KeyStatus {
  /** Problems that make the gateway not ready (empty when ready). */
  problems: string[]
  /** Seconds until the nearest platform certificate expires (certificate mode). */
  certificateExpirySeconds?: number
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The WeChat Pay client. The only holder of key material; nothing else in the app can read a key. */
    wechat: WechatPayClient
    /** The merchant's own ids, used as body defaults. Not secret. */
    merchant: { mchid: string, appid?: string }
    /** Re-reads the key files (SIGHUP, or a file change): new calls use the new keys, calls in flight finish. */
    reloadCredentials: () => boolean
    keyStatus: () => KeyStatus
  }
}

export interface CredentialsOptions {
  wechat: WechatConfig
  dispatcher?: Dispatcher
  retry?: RetryPolicy
  /** How often key files are checked for changes (0: never). */
  keyWatchMs?: number
  certificateRefreshMs?: number
  certificateMinGapMs?: number
}

interface Credentials {
  merchant: MerchantIdentity
  publicKey?: { id: string, key: KeyObject }
}

/** The serial of the merchant certificate, when one is configured: it follows the certificate on rotation. */
function certificateSerial (path: string): string | undefined {
  try {
    return new X509Certificate(readFileSync(path)).serialNumber.toUpperCase()
  } catch {
    return undefined // reported by checkMerchantCertificate
  }
}

/** Reads and checks every key file, listing every problem at once. */
export function loadCredentials (wechat: WechatConfig, serial = wechat.merchantSerial): Credentials {
  const problems: string[] = []
  const privateKey = loadPrivateKey(wechat.privateKeyFile, 'WECHATPAY_PRIVATE_KEY_FILE', problems)
  if (wechat.merchantCertFile !== undefined) checkMerchantCertificate(wechat.merchantCertFile, serial, privateKey, problems)
  let publicKey: Credentials['publicKey']
  if (wechat.publicKeyId !== undefined && wechat.publicKeyFile !== undefined) {
    const key = loadPublicKey(wechat.publicKeyFile, 'WECHATPAY_PUBLIC_KEY_FILE', problems)
    if (key !== undefined && privateKey !== undefined && sameKey(key, createPublicKey(privateKey))) {
      problems.push('WECHATPAY_PUBLIC_KEY_FILE holds the merchant\'s own public key: it must be WeChat Pay\'s public key (商户平台 > 账户中心 > API安全 > 微信支付公钥)')
    } else if (key !== undefined) {
      publicKey = { id: wechat.publicKeyId, key }
    }
  }
  if (problems.length > 0 || privateKey === undefined) throw new KeyError(problems)
  return { merchant: { mchid: wechat.mchid, serial, privateKey }, ...(publicKey !== undefined && { publicKey }) }
}

async function credentials (app: FastifyInstance, opts: CredentialsOptions): Promise<void> {
  const { wechat } = opts
  let current = loadCredentials(wechat)
  const warnExposed = (): void => {
    const warning = exposedFile(wechat.privateKeyFile, 'WECHATPAY_PRIVATE_KEY_FILE')
    if (warning !== undefined) app.log.warn(warning)
  }
  warnExposed()
  const keys = new KeyRing(() => current.merchant.serial)
  if (current.publicKey !== undefined) keys.setPublicKey(current.publicKey.id, current.publicKey.key)

  // Nonces of accepted answers are shared by the replicas when Redis is configured (a replay may reach any of them).
  const memory = new MemoryNonces()
  // Redis outages are logged once by the redis plugin; each fallback is a debug line.
  const nonces = app.redis === null ? memory : new RedisNonces(app.redis, memory, err => {
    app.log.debug({ reason: err.message }, 'answer nonce checked in memory: Redis cannot be reached')
  })
  const client = new WechatPayClient({
    nonces,
    baseUrl: wechat.baseUrl,
    backupBaseUrl: wechat.backupBaseUrl,
    timeoutMs: wechat.timeoutMs,
    merchant: () => current.merchant,
    keys,
    publicKeyId: wechat.publicKeyId,
    ...(opts.retry !== undefined && { retry: opts.retry }),
    ...(opts.dispatcher !== undefined && { dispatcher: opts.dispatcher })
  })
  app.decorate('wechat', client)
  app.decorate('merchant', { mchid: wechat.mchid, ...(wechat.appid !== undefined && { appid: wechat.appid }) })
  app.addHook('onClose', async () => { await client.close() })

  let certificates: CertificateManager | undefined
  if (wechat.apiv3Key !== undefined) {
    const manager = new CertificateManager({
      client,
      apiv3Key: wechat.apiv3Key,
      keys,
      ...(opts.certificateRefreshMs !== undefined && { intervalMs: opts.certificateRefreshMs }),
      ...(opts.certificateMinGapMs !== undefined && { minGapMs: opts.certificateMinGapMs }),
      onError: err => app.log.error({ reason: err.message }, 'platform certificate download failed'),
      onRefresh: serials => app.log.info({ serials }, 'platform certificates updated')
    })
    try {
      await manager.start()
      certificates = manager
      keys.refresh = serial => manager.refreshFor(serial)
      app.addHook('onClose', async () => { manager.stop() })
    } catch (err) {
      // Migration mode can go on with the public key alone; certificate mode cannot start.
      if (!(err instanceof NoPlatformCertificates) || current.publicKey === undefined) {
        client.close().catch(() => {})
        throw new KeyError([(err as Error).message])
      }
      app.log.warn(`${err.message} Going on with the public key ${current.publicKey.id} alone.`)
    }
  }

  app.decorate('reloadCredentials', () => {
    try {
      const serial = wechat.merchantCertFile !== undefined ? certificateSerial(wechat.merchantCertFile) : undefined
      const fresh = loadCredentials(wechat, serial ?? current.merchant.serial)
      if (fresh.publicKey !== undefined) keys.setPublicKey(fresh.publicKey.id, fresh.publicKey.key)
      current = fresh
      app.log.info({ merchantSerial: fresh.merchant.serial }, 'credentials reloaded')
      warnExposed()
      return true
    } catch (err) {
      app.log.error({ problems: (err as KeyError).problems }, 'credentials NOT reloaded: the new key files are invalid; still using the previous keys')
      return false
    }
  })

  app.decorate('keyStatus', (): KeyStatus => {
    const problems: string[] = []
    if (keys.serials().length === 0) problems.push('no key to verify WeChat Pay\'s answers')
    if (certificates !== undefined && !certificates.fresh()) problems.push('platform certificates are not fresh')
    const expiry = keys.nearestCertificateExpiry()
    return { problems, ...(expiry !== undefined && { certificateExpirySeconds: expiry }) }
  })

  // Key files rotate without a restart: watched here, and reloaded on SIGHUP by server.ts.
  const watchMs = opts.keyWatchMs ?? 5000
  const files = [wechat.privateKeyFile, wechat.merchantCertFile, wechat.publicKeyFile].filter((f): f is string => f !== undefined)
  if (watchMs > 0) {
    let pending: NodeJS.Timeout | undefined
    const changed = (): void => {
      // A rotation writes several files: reload once they have all landed.
      clearTimeout(pending)
      pending = setTimeout(() => app.reloadCredentials(), Math.min(watchMs, 500))
      pending.unref()
    }
    for (const file of files) watchFile(file, { interval: watchMs, persistent: false }, changed)
    app.addHook('onClose', async () => {
      clearTimeout(pending)
      for (const file of files) unwatchFile(file, changed)
    })
  }
}

export default fp(credentials, { name: 'credentials', fastify: '5.x', dependencies: ['redis'] })
