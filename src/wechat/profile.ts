import { createPublicKey, X509Certificate, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { CertificateManager, NoPlatformCertificates } from './certificates.js'
import type { Exchange, RawAnswer } from './client.js'
import { checkMerchantCertificate, exposedFile, KeyError, KeyRing, loadPrivateKey, loadPublicKey, readApiv3Key, sameKey, type KeyLabels } from './keys.js'
import type { MerchantIdentity } from './signer.js'
import type { VerificationKeys } from './verifier.js'

/**
 * One WeChat Pay account (a merchant profile): its ids, its signing key, the keys that verify WeChat Pay's answers
 * to it, and its APIv3 key. Profiles are values passed along the call path; nothing here knows of Fastify or of how
 * a profile was chosen for a call.
 */

/** 普通商户 (direct merchant, `mchid`) or 服务商 (service provider, `sp_mchid`). */
export type MerchantType = 'direct' | 'partner'

/**
 * How WeChat Pay's answers are verified (docs/wechatpay.md §5): its public key; platform certificates, downloaded with
 * the APIv3 key; or both, during the migration from certificates to the public key.
 */
export type KeyMode = 'public-key' | 'certificate' | 'migration'

export interface MerchantConfig {
  /** Used in logs, metrics, caller permissions and notification URLs. */
  name: string
  /** The kinds of operation it serves: one, or both for the profile of the single-merchant settings. */
  types: MerchantType[]
  mchid: string
  appid?: string
  merchantSerial: string
  privateKeyFile: string
  merchantCertFile?: string
  keyMode: KeyMode
  publicKeyId?: string
  publicKeyFile?: string
  /** The APIv3 key (32 bytes): platform certificates, and notifications in every key mode. */
  apiv3Key?: string
  /** The file it was read from, if any: re-read with the other key files on reload. */
  apiv3KeyFile?: string
  baseUrl: string
  backupBaseUrl?: string
  /** Where each key setting came from, for messages. */
  labels: KeyLabels
}

/** What a profile can do now. Problems are worth an operator's look; `usable` false means calls must not be sent. */
export interface ProfileStatus {
  usable: boolean
  problems: string[]
  /** Seconds until its nearest platform certificate expires (only where it has platform certificates). */
  certificateExpirySeconds?: number
}

interface Keys {
  identity: MerchantIdentity
  publicKey?: { id: string, key: KeyObject }
  apiv3Key?: string
}

/** The serial of the merchant certificate, when one is configured: it follows the certificate on rotation. */
function certificateSerial (path: string): string | undefined {
  try {
    return new X509Certificate(readFileSync(path)).serialNumber.toUpperCase()
  } catch {
    return undefined // reported by checkMerchantCertificate
  }
}

/** Reads and checks every key file of a profile, listing every problem at once (never a key's bytes). */
export function loadKeys (config: MerchantConfig, serial = config.merchantSerial): Keys {
  const { labels } = config
  const problems: string[] = []
  const privateKey = loadPrivateKey(config.privateKeyFile, labels.privateKeyFile, problems)
  if (config.merchantCertFile !== undefined) checkMerchantCertificate(config.merchantCertFile, serial, privateKey, problems, labels)
  let publicKey: Keys['publicKey']
  if (config.publicKeyId !== undefined && config.publicKeyFile !== undefined) {
    const key = loadPublicKey(config.publicKeyFile, labels.publicKeyFile, problems)
    if (key !== undefined && privateKey !== undefined && sameKey(key, createPublicKey(privateKey))) {
      problems.push(`${labels.publicKeyFile} holds the merchant's own public key: it must be WeChat Pay's public key (商户平台 > 账户中心 > API安全 > 微信支付公钥)`)
    } else if (key !== undefined) {
      publicKey = { id: config.publicKeyId, key }
    }
  }
  // Read from its file when it has one (a reload picks up a rotated key); else the configured value.
  const apiv3Key = config.apiv3KeyFile !== undefined ? readApiv3Key(config.apiv3KeyFile, labels.apiv3Key, problems) : config.apiv3Key
  if (problems.length > 0 || privateKey === undefined) throw new KeyError(problems)
  return { identity: { mchid: config.mchid, serial, privateKey }, ...(publicKey !== undefined && { publicKey }), ...(apiv3Key !== undefined && { apiv3Key }) }
}

/** How long a replaced APIv3 key still decrypts notifications: WeChat Pay's resends (about 24 h) and a margin. */
export const APIV3_KEY_OVERLAP_MS = 25 * 3600_000

export interface CertificateTimings {
  refreshMs?: number
  minGapMs?: number
}

export class MerchantProfile {
  readonly name: string
  readonly types: readonly MerchantType[]
  readonly mchid: string
  readonly appid: string | undefined
  /** Sent as `Wechatpay-Serial` so that WeChat Pay signs its answers with the public key (docs/wechatpay.md §5). */
  readonly publicKeyId: string | undefined
  readonly keys: KeyRing
  private current: Keys
  private certificates: CertificateManager | undefined
  /** The problems of the last reload, if it was refused. */
  private refused: string[] = []
  /** The APIv3 key a reload replaced, and until when notifications may still be decrypted with it. */
  private replacedApiv3: { key: string, until: number } | undefined

  constructor (readonly config: MerchantConfig) {
    this.name = config.name
    this.types = config.types
    this.mchid = config.mchid
    this.appid = config.appid
    this.publicKeyId = config.keyMode === 'certificate' ? undefined : config.publicKeyId
    this.current = loadKeys(config)
    this.keys = new KeyRing(() => this.current.identity.serial)
    if (this.current.publicKey !== undefined && config.keyMode !== 'certificate') this.keys.setPublicKey(this.current.publicKey.id, this.current.publicKey.key)
  }

  /** The signing identity now; a call takes it once, so a rotation applies to the next call. */
  identity (): MerchantIdentity {
    return this.current.identity
  }

  /** The APIv3 key now (notifications, platform certificates); a rotated key file applies after a reload. */
  apiv3Key (): string | undefined {
    return this.current.apiv3Key
  }

  /**
   * The APIv3 key before the last rotation, for `APIV3_KEY_OVERLAP_MS`: WeChat Pay resends a notification for up to
   * 24 h, and one encrypted before the rotation must still be read.
   */
  previousApiv3Key (now = Date.now()): string | undefined {
    return this.replacedApiv3 !== undefined && now < this.replacedApiv3.until ? this.replacedApiv3.key : undefined
  }

  /** It can verify WeChat Pay's answers now: a call may be sent. */
  usable (): boolean {
    return !this.keys.isEmpty()
  }

  serves (type: MerchantType): boolean {
    return this.types.includes(type)
  }

  /** Key files that rotate (watched for changes). */
  files (): string[] {
    const { privateKeyFile, merchantCertFile, publicKeyFile, apiv3KeyFile } = this.config
    return [privateKeyFile, merchantCertFile, publicKeyFile, apiv3KeyFile].filter((f): f is string => f !== undefined)
  }

  /** Warnings about its secret files (readable by other users). */
  warnings (): string[] {
    const { privateKeyFile, apiv3KeyFile, labels } = this.config
    return [
      exposedFile(privateKeyFile, labels.privateKeyFile),
      ...(apiv3KeyFile !== undefined ? [exposedFile(apiv3KeyFile, labels.apiv3Key)] : [])
    ].filter((w): w is string => w !== undefined)
  }

  /**
   * Platform certificates (certificate and migration modes): the first download must succeed before the gateway is
   * ready, except in migration mode for a merchant that has none (then it goes on with the public key, and says so).
   */
  async startCertificates (fetch: (keysFor: (answer: RawAnswer) => VerificationKeys) => Promise<Exchange>, log: {
    error: (err: Error) => void
    refreshed: (serials: string[]) => void
    publicKeyOnly: (why: string) => void
  }, timings: CertificateTimings = {}): Promise<void> {
    const { keyMode } = this.config
    if (keyMode === 'public-key' || this.apiv3Key() === undefined) return
    const manager = new CertificateManager({
      fetch,
      apiv3Key: () => this.apiv3Key() ?? '',
      apiv3KeyLabel: this.config.labels.apiv3Key,
      keys: this.keys,
      ...(timings.refreshMs !== undefined && { intervalMs: timings.refreshMs }),
      ...(timings.minGapMs !== undefined && { minGapMs: timings.minGapMs }),
      onError: log.error,
      onRefresh: log.refreshed
    })
    try {
      await manager.start()
      this.certificates = manager
      this.keys.refresh = serial => manager.refreshFor(serial)
    } catch (err) {
      if (!(err instanceof NoPlatformCertificates) || keyMode !== 'migration') {
        throw new KeyError([`merchant ${this.name}: ${(err as Error).message}`])
      }
      log.publicKeyOnly(`${err.message} Going on with the public key ${this.publicKeyId ?? ''} alone.`)
    }
  }

  /** Re-reads the key files: the new keys apply to the next call; bad files are refused and the old keys kept. */
  reload (): void {
    const serial = this.config.merchantCertFile !== undefined ? certificateSerial(this.config.merchantCertFile) : undefined
    let fresh: Keys
    try {
      fresh = loadKeys(this.config, serial ?? this.current.identity.serial)
    } catch (err) {
      // Shown by /readyz until a reload succeeds: the files on disk are not what this profile signs with.
      this.refused = (err as KeyError).problems ?? [(err as Error).message]
      throw err
    }
    this.refused = []
    const before = this.current.apiv3Key
    if (before !== undefined && fresh.apiv3Key !== before) this.replacedApiv3 = { key: before, until: Date.now() + APIV3_KEY_OVERLAP_MS }
    if (fresh.publicKey !== undefined && this.config.keyMode !== 'certificate') this.keys.setPublicKey(fresh.publicKey.id, fresh.publicKey.key)
    this.current = fresh
  }

  status (): ProfileStatus {
    const problems: string[] = []
    const usable = this.usable()
    if (!usable) problems.push('no key to verify WeChat Pay\'s answers')
    if (this.certificates !== undefined && !this.certificates.fresh()) problems.push('platform certificates are not fresh')
    if (this.refused.length > 0) problems.push(`new key files refused, previous keys still in use: ${this.refused.join('; ')}`)
    const expiry = this.keys.nearestCertificateExpiry()
    return { usable, problems, ...(expiry !== undefined && { certificateExpirySeconds: expiry }) }
  }

  close (): void {
    this.certificates?.stop()
  }
}
