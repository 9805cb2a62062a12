import { randomBytes, randomUUID } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import { Agent, request } from 'undici'
import type { KeyMode } from '../wechat/profile.js'
import type { SandboxMerchant } from './merchants.js'
import { beijingTime, encryptResource, signatureHeaders, signingKey, type Spoil } from './protocol.js'

/**
 * WeChat Pay's notifications (回调通知) as the simulator sends them (docs/wechatpay.md §8): a JSON
 * envelope whose resource is encrypted with the merchant's APIv3 key, signed with its WeChat Pay key, POSTed to the
 * merchant's URL and resent on PayScore's schedule until answered 200 or 204.
 */

export interface NotifyOptions {
  /** Where notifications go; `{merchant}` is replaced by the merchant's name. None: nothing is sent by itself. */
  url?: string
  /** Multiplies the resend schedule (tests use tiny values). */
  scale?: number
}

/** What happened, before it is sealed in an envelope. */
export interface NotificationEvent {
  event_type: string
  summary: string
  resource: Record<string, unknown>
}

/** Ways to spoil a notification on purpose, each a mistake a receiver must catch. */
export const NOTIFICATION_FAULTS = {
  SIGNTEST: 'Wechatpay-Signature is a WECHATPAY/SIGNTEST/ probe (WeChat sends a few to check that merchants verify)',
  BAD_SIGNATURE: 'a valid-looking signature over other bytes: verification fails',
  STALE_TIMESTAMP: 'signed with a timestamp 10 minutes old (outside the 5-minute window)',
  UNKNOWN_SERIAL: 'signed by a fresh key under a Wechatpay-Serial nobody knows',
  UNDECRYPTABLE: 'correctly signed, but the resource is encrypted with another 32-byte key',
  DUPLICATE: 'after a 200/204, the same notification (same id and body) is sent once more, freshly signed'
} as const
export type NotificationFault = keyof typeof NOTIFICATION_FAULTS

const SPOILS: Partial<Record<NotificationFault, Spoil>> = { SIGNTEST: 'probe', STALE_TIMESTAMP: 'stale', UNKNOWN_SERIAL: 'unknown-serial' }

/** PayScore's resend intervals after a failed delivery, in seconds (docs/wechatpay.md §8). */
export const RESEND_SECONDS = [15, 15, 30, 180, 1800, 1800, 1800, 1800, 3600] as const
/** WeChat Pay expects an answer within 5 s (docs/wechatpay.md §8). */
const TIMEOUT_MS = 5000
const MAX_RECORDED = 500
// [UNCONFIRMED] WeChat's own User-Agent for notifications: receivers must not depend on it.
const USER_AGENT = 'Mozilla/4.0 (WeChat Pay sandbox notifier)'

export interface Attempt { at: string, status?: number, error?: string }

export interface NotificationRecord {
  id: string
  event_type: string
  merchant: string
  url: string
  fault?: NotificationFault
  state: 'delivering' | 'delivered' | 'gave_up'
  attempts: Attempt[]
}

interface Delivery { record: NotificationRecord, merchant: SandboxMerchant, body: string, fault: NotificationFault | undefined }

/** Only 200 and 204 are success: any other answer, 2xx included, is "not as the rules say" (docs/wechatpay.md §8). */
const delivered = (attempt: Attempt): boolean => attempt.status === 200 || attempt.status === 204

/** The envelope, as WeChat Pay writes it (field order included); `key` encrypts the resource. */
function envelope (id: string, event: NotificationEvent, key: string): string {
  const kind = event.event_type.replace(/\..*$/, '').toLowerCase()
  // ENTRUST.* carry an empty associated_data, PayScore its original_type (the shared vectors).
  const sealed = encryptResource(key, JSON.stringify(event.resource), kind === 'entrust' ? '' : kind)
  return JSON.stringify({
    id,
    create_time: beijingTime(new Date()),
    resource_type: 'encrypt-resource',
    event_type: event.event_type,
    summary: event.summary,
    resource: { original_type: kind, algorithm: sealed.algorithm, ciphertext: sealed.ciphertext, associated_data: sealed.associated_data, nonce: sealed.nonce }
  })
}

export class Notifier {
  /** The URL template; settable at run time (a gateway learns its own port only once listening). */
  url: string | undefined
  scale: number
  readonly records: NotificationRecord[] = []
  private readonly timers = new Set<NodeJS.Timeout>()
  private readonly closing = new AbortController()
  private readonly agent = new Agent()

  /** `auto`: whether business events (a pay, a termination) notify by themselves; `keyMode` is read at each signing. */
  constructor (options: NotifyOptions, private readonly auto: boolean, private readonly keyMode: () => KeyMode, private readonly logger: FastifyBaseLogger) {
    this.url = options.url
    this.scale = options.scale ?? 1
  }

  /** A business event: sent to the configured URL, if there is one. */
  notify (merchant: SandboxMerchant, event: NotificationEvent): NotificationRecord | undefined {
    if (!this.auto || this.url === undefined) return undefined
    return this.send(merchant, event, { url: this.url })
  }

  /** Sends `event` to `url` (a template) and resends it until answered or the schedule runs out. */
  send (merchant: SandboxMerchant, event: NotificationEvent, options: { url: string, id?: string, fault?: NotificationFault }): NotificationRecord {
    const { fault } = options
    const record: NotificationRecord = {
      id: options.id ?? randomUUID(),
      event_type: event.event_type,
      merchant: merchant.ids.name,
      url: options.url.replaceAll('{merchant}', merchant.ids.name),
      ...(fault !== undefined && { fault }),
      state: 'delivering',
      attempts: []
    }
    const key = fault === 'UNDECRYPTABLE' ? randomBytes(16).toString('hex') : merchant.apiv3Key
    if (this.records.length >= MAX_RECORDED) this.records.shift()
    this.records.push(record)
    void this.deliver({ record, merchant, body: envelope(record.id, event, key), fault }, 0)
    return record
  }

  /** Stops every resend and aborts deliveries in flight (the sandbox is closing). */
  close (): Promise<void> {
    this.closing.abort()
    for (const timer of this.timers) clearTimeout(timer)
    this.timers.clear()
    return this.agent.destroy()
  }

  private async deliver (d: Delivery, resends: number): Promise<void> {
    const attempt = await this.post(d)
    d.record.attempts.push(attempt)
    if (delivered(attempt)) {
      if (d.fault === 'DUPLICATE') d.record.attempts.push(await this.post(d))
      d.record.state = 'delivered'
      return
    }
    const wait = RESEND_SECONDS[resends]
    if (wait === undefined) {
      d.record.state = 'gave_up'
      this.logger.warn({ id: d.record.id, event_type: d.record.event_type, url: d.record.url, attempts: d.record.attempts.length }, 'sandbox notification: gave up')
      return
    }
    this.later(() => { void this.deliver(d, resends + 1) }, wait * 1000 * this.scale)
  }

  private later (fn: () => void, ms: number): void {
    if (this.closing.signal.aborted) return
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      fn()
    }, ms)
    timer.unref()
    this.timers.add(timer)
  }

  /** One delivery, freshly signed (a new timestamp and nonce each time, as a 5-minute window needs). */
  private async post (d: Delivery): Promise<Attempt> {
    const at = new Date().toISOString()
    try {
      const res = await request(d.record.url, {
        method: 'POST',
        headers: await this.headers(d),
        body: d.body,
        dispatcher: this.agent,
        signal: AbortSignal.any([this.closing.signal, AbortSignal.timeout(TIMEOUT_MS)])
      })
      await res.body.dump()
      this.logger.debug({ id: d.record.id, url: d.record.url, status: res.statusCode }, 'sandbox notification answered')
      return { at, status: res.statusCode }
    } catch (err) {
      const error = err instanceof Error && err.name === 'TimeoutError' ? `no answer within ${TIMEOUT_MS} ms` : String(err)
      this.logger.debug({ id: d.record.id, url: d.record.url, error }, 'sandbox notification failed')
      return { at, error }
    }
  }

  private async headers (d: Delivery): Promise<Record<string, string>> {
    // Asked for the public key: it signs in public-key and migration modes, the platform certificate otherwise.
    const signer = signingKey(d.merchant, this.keyMode(), d.merchant.ids.wechatpay_public_key_id)
    const signed = d.fault === 'BAD_SIGNATURE' ? `${d.body} ` : d.body
    return {
      ...await signatureHeaders(signer, signed, d.fault === undefined ? undefined : SPOILS[d.fault]),
      'request-id': randomUUID().replaceAll('-', ''),
      'content-type': 'application/json',
      'user-agent': USER_AGENT
    }
  }
}
