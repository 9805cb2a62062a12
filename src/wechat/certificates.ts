import { X509Certificate } from 'node:crypto'
import { decryptResource, type EncryptedResource } from './aead.js'
import { parseJson, type Exchange, type RawAnswer } from './client.js'
import type { CertificateEntry, KeyRing } from './keys.js'
import type { VerificationKeys } from './verifier.js'

/**
 * Platform-certificate mode (docs/wechatpay.md §5): download `GET /v3/certificates`, decrypt each certificate with the
 * APIv3 key, check the answer with the certificates it delivered, keep every unexpired one by serial. Refreshed on
 * a schedule and, rate-limited, when an answer names a serial we do not know.
 */

/** The merchant has no platform certificates: it can only use the WeChat Pay public key. */
export class NoPlatformCertificates extends Error {
  constructor (code: string) {
    super(`WeChat Pay has no platform certificates for this merchant (${code}): it uses the WeChat Pay public key. ` +
      'Configure its public key id and file (商户平台 > 账户中心 > API安全 > 微信支付公钥) and the public-key key mode.')
    this.name = 'NoPlatformCertificates'
  }
}

interface CertificateList {
  data?: Array<{ serial_no?: string, expire_time?: string, encrypt_certificate?: EncryptedResource }>
}

export interface CertificateManagerOptions {
  /** Sends the signed `GET /v3/certificates` of this merchant; `keysFor` gives the keys its answer is checked with. */
  fetch: (keysFor: (answer: RawAnswer) => VerificationKeys) => Promise<Exchange>
  /** The merchant's APIv3 key now (it may be rotated). */
  apiv3Key: () => string
  /** Where the APIv3 key was configured, for messages. */
  apiv3KeyLabel: string
  keys: KeyRing
  /** Scheduled refresh; WeChat Pay asks for less than 12 h. */
  intervalMs?: number
  /** Least time between two downloads triggered by unknown serials. */
  minGapMs?: number
  onError?: (err: Error) => void
  onRefresh?: (serials: string[]) => void
}

/** The certificates of a `GET /v3/certificates` answer, decrypted and checked; an Error says what is wrong. */
function decryptList (apiv3Key: string, label: string, answer: RawAnswer): Map<string, CertificateEntry> | Error {
  const parsed = parseJson(answer.body) as CertificateList | undefined
  const entries = new Map<string, CertificateEntry>()
  if (answer.status !== 200) return entries
  if (!Array.isArray(parsed?.data)) return new Error('GET /v3/certificates: the answer has no data list')
  for (const item of parsed.data) {
    if (item.encrypt_certificate === undefined || item.serial_no === undefined) return new Error('GET /v3/certificates: an entry lacks serial_no or encrypt_certificate')
    let pem: string
    try {
      pem = decryptResource(apiv3Key, item.encrypt_certificate)
    } catch (err) {
      return new Error(`cannot decrypt platform certificate ${item.serial_no} with the APIv3 key of ${label} (${(err as Error).message}): is it the APIv3 key set in the merchant platform?`)
    }
    const cert = new X509Certificate(pem)
    const serial = cert.serialNumber.toUpperCase()
    if (serial !== item.serial_no.toUpperCase()) return new Error(`GET /v3/certificates: serial_no ${item.serial_no} is not the certificate's serial ${serial}`)
    const expiresAt = Math.min(Date.parse(cert.validTo), Date.parse(item.expire_time ?? cert.validTo))
    if (expiresAt > Date.now()) entries.set(serial, { key: cert.publicKey, expiresAt })
  }
  return entries
}

export class CertificateManager {
  /** When the last download succeeded (ms since epoch); undefined before the first. */
  lastSuccess: number | undefined
  private lastAttempt = 0
  private inFlight: Promise<boolean> | undefined
  private timer: NodeJS.Timeout | undefined
  readonly intervalMs: number
  private readonly minGapMs: number

  constructor (private readonly options: CertificateManagerOptions) {
    this.intervalMs = options.intervalMs ?? 3600_000
    this.minGapMs = options.minGapMs ?? 60_000
  }

  /** First download: must succeed before the gateway is ready. Then a refresh every `intervalMs`. */
  async start (): Promise<void> {
    await this.refresh()
    this.timer = setInterval(() => { void this.refresh().catch(err => this.options.onError?.(err as Error)) }, this.intervalMs)
    this.timer.unref()
  }

  stop (): void {
    clearInterval(this.timer)
  }

  /** True when a download succeeded within two intervals and an unexpired certificate is held. */
  fresh (now = Date.now()): boolean {
    return this.lastSuccess !== undefined && now - this.lastSuccess < 2 * this.intervalMs && this.options.keys.hasCertificates()
  }

  /** For an unknown serial: download again, at most once per `minGapMs`; concurrent askers share one download. */
  async refreshFor (serial: string): Promise<boolean> {
    if (this.inFlight === undefined && Date.now() - this.lastAttempt < this.minGapMs) return false
    try {
      await this.refresh()
      return this.options.keys.get(serial) !== undefined
    } catch (err) {
      this.options.onError?.(err as Error)
      return false
    }
  }

  /** Downloads and installs the current certificates (single flight). */
  refresh (): Promise<boolean> {
    this.inFlight ??= this.download().finally(() => { this.inFlight = undefined })
    return this.inFlight
  }

  private async download (): Promise<boolean> {
    this.lastAttempt = Date.now()
    const { fetch, apiv3Key, apiv3KeyLabel, keys } = this.options
    // The answer must verify with the certificates it delivers (or with a key already trusted, in migration mode).
    let delivered: Map<string, CertificateEntry> | Error = new Map()
    const { answer, verification } = await fetch(raw => {
      delivered = decryptList(apiv3Key(), apiv3KeyLabel, raw)
      const entries = delivered instanceof Error ? new Map<string, CertificateEntry>() : delivered
      return {
        get: serial => entries.get(serial.toUpperCase())?.key ?? keys.get(serial),
        serials: () => [...entries.keys(), ...keys.serials()]
      }
    })
    const parsed = parseJson(answer.body) as { code?: string, message?: string } | undefined
    if (answer.status === 404 && (parsed?.code === 'RESOURCE_NOT_EXISTS' || parsed?.code === 'NOT_FOUND')) {
      throw new NoPlatformCertificates(parsed.code)
    }
    if (answer.status !== 200) {
      throw new Error(`GET /v3/certificates answered ${answer.status} ${parsed?.code ?? ''} ${parsed?.message ?? ''}`.trim())
    }
    if (delivered instanceof Error) throw delivered
    if (verification === undefined || !verification.ok) throw new Error(`GET /v3/certificates: the answer failed verification: ${verification?.message ?? 'unsigned'}`)
    const entries = delivered
    const before = keys.serials().join()
    keys.setCertificates(entries)
    this.lastSuccess = Date.now()
    const after = keys.serials()
    if (after.join() !== before) this.options.onRefresh?.(after)
    return true
  }
}
