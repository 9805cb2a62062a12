import { createHash } from 'node:crypto'
import { request, type Dispatcher } from 'undici'
import { NAME, VERSION } from '../version.js'
import { signRelay, RELAY_SIGNATURE_HEADER } from './relay-signature.js'
import type { Subscriber } from './subscribers.js'

/**
 * What the relay sends and remembers, and one delivery over HTTP. Two stores keep the promise "never lost":
 * memory-relay.ts (no Redis: deliver before WeChat Pay is answered) and redis-relay.ts (store, answer, deliver).
 */

/** The body POSTed to a subscriber (README, "Notifications"): WeChat's envelope, decrypted, and which profile. */
export interface RelayEvent {
  /** WeChat's notification id: the subscriber's idempotency key (a delivery may come more than once). */
  id: string
  event_type: string
  create_time: string
  summary: string
  /** The merchant profile it came for, and its merchant id. */
  merchant: string
  mchid: string
  original_type?: string
  /** The decrypted business object. */
  resource: Record<string, unknown>
  received_at: string
}

export interface DeliveryState {
  subscriber: string
  state: 'pending' | 'delivered' | 'failed'
  attempts: number
  last_attempt_at?: string
  /** The subscriber's HTTP status, or why there was none. */
  last_status?: number
  last_error?: string
  delivered_at?: string
  /** The latest attempts, oldest first (at most `ATTEMPTS_KEPT`): what an operator reads when a subscriber fails. */
  history?: AttemptRecord[]
}

export interface AttemptRecord { at: string, status?: number, error?: string }

/** Attempts kept per delivery: enough to see a pattern, bounded however long the retries go on. */
export const ATTEMPTS_KEPT = 10

export interface NotificationRecord {
  /** `<merchant>/<id>`: unique, since ids are WeChat's per merchant. */
  key: string
  event: RelayEvent
  deliveries: DeliveryState[]
}

/** What receiving a notification came to, which decides WeChat Pay's answer (204, or 500 to get it again). */
export type ReceiveResult = 'delivered' | 'stored' | 'duplicate' | 'failed'

export interface Relay {
  /** Makes the notification safe for `subscribers` (the ones whose patterns match it). */
  receive (event: RelayEvent, subscribers: Subscriber[]): Promise<ReceiveResult>
  /** The newest first; only those of `merchants` when given (a caller limited to some profiles). */
  list (limit: number, merchants?: readonly string[]): Promise<NotificationRecord[]>
  get (key: string): Promise<NotificationRecord | undefined>
  /** Sends a stored notification again to one subscriber or all of its own; undefined when it is not known. */
  redeliver (key: string, subscriber?: string): Promise<NotificationRecord | undefined>
  /** Seconds since the oldest notification still waiting for a subscriber was received (0: none). */
  oldestUndeliveredSeconds (): Promise<number>
  /** Starts delivering in the background, where the relay has deliveries of its own to make. */
  start (): void
  close (): Promise<void>
}

export const keyOf = (event: Pick<RelayEvent, 'merchant' | 'id'>): string => `${event.merchant}/${event.id}`

export interface AttemptOutcome { ok: boolean, status?: number, error?: string }

export interface DelivererOptions {
  timeoutMs: number
  dispatcher?: Dispatcher
  /** Every attempt's outcome, for metrics and logs. */
  onAttempt?: (subscriber: Subscriber, event: RelayEvent, outcome: AttemptOutcome, attempt: number) => void
}

const USER_AGENT = `${NAME}/${VERSION} relay`

/** POSTs one event to one subscriber: 2xx is delivered, anything else (or nothing within the timeout) is not. */
export class Deliverer {
  constructor (private readonly options: DelivererOptions) {}

  async send (subscriber: Subscriber, event: RelayEvent, attempt: number): Promise<AttemptOutcome> {
    const body = JSON.stringify(event)
    let outcome: AttemptOutcome
    try {
      const response = await request(subscriber.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': USER_AGENT,
          [RELAY_SIGNATURE_HEADER]: signRelay(subscriber.secret, body),
          'wechatpay-relay-id': event.id,
          'wechatpay-relay-event': event.event_type,
          'wechatpay-relay-merchant': event.merchant,
          // The same for every attempt of this notification to this subscriber.
          'wechatpay-relay-delivery': createHash('sha256').update(`${keyOf(event)}\n${subscriber.name}`).digest('hex').slice(0, 32),
          'wechatpay-relay-attempt': String(attempt)
        },
        body,
        signal: AbortSignal.timeout(this.options.timeoutMs),
        ...(this.options.dispatcher !== undefined && { dispatcher: this.options.dispatcher })
      })
      await response.body.dump({ limit: 64 * 1024 })
      const ok = response.statusCode >= 200 && response.statusCode < 300
      outcome = { ok, status: response.statusCode }
    } catch (err) {
      const e = err as { name?: string, code?: string }
      outcome = { ok: false, error: e.name === 'TimeoutError' ? 'TIMEOUT' : e.code ?? e.name ?? 'ERROR' }
    }
    this.options.onAttempt?.(subscriber, event, outcome, attempt)
    return outcome
  }
}

/** The delivery state after an attempt. */
export function afterAttempt (state: DeliveryState, outcome: AttemptOutcome, attempt: number, now = new Date()): DeliveryState {
  const at = now.toISOString()
  const { last_status: _s, last_error: _e, ...rest } = state
  const record: AttemptRecord = { at, ...(outcome.status !== undefined && { status: outcome.status }), ...(outcome.error !== undefined && { error: outcome.error }) }
  return {
    ...rest,
    state: outcome.ok ? 'delivered' : state.state,
    attempts: attempt,
    last_attempt_at: at,
    ...(outcome.status !== undefined && { last_status: outcome.status }),
    ...(outcome.error !== undefined && { last_error: outcome.error }),
    ...(outcome.ok && { delivered_at: at }),
    history: [...(state.history ?? []), record].slice(-ATTEMPTS_KEPT)
  }
}
