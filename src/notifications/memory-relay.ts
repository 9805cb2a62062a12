import { afterAttempt, keyOf, type Deliverer, type NotificationRecord, type ReceiveResult, type Relay, type RelayEvent } from './relay.js'
import type { Subscriber } from './subscribers.js'

/**
 * The relay without Redis: synchronous, because nothing outlives this process. A notification is delivered to
 * every subscriber before WeChat Pay is answered; if one fails, WeChat Pay is answered 500 and its own resends
 * (hours of them) carry the notification until the subscriber is back. Resends only go to subscribers that have
 * not had it yet. The last notifications are kept in memory for the operator API and for recognising duplicates.
 */

const MAX_RECORDS = 10_000

export class MemoryRelay implements Relay {
  private readonly records = new Map<string, NotificationRecord>()
  /** Deliveries under way, so that a duplicate arriving meanwhile waits for them instead of delivering again. */
  private readonly inFlight = new Map<string, Promise<boolean>>()

  constructor (private readonly deliverer: Deliverer, private readonly subscribers: ReadonlyMap<string, Subscriber>) {}

  async receive (event: RelayEvent, subscribers: Subscriber[]): Promise<ReceiveResult> {
    const key = keyOf(event)
    const running = this.inFlight.get(key)
    if (running !== undefined) return await running ? 'duplicate' : 'failed'
    let record = this.records.get(key)
    if (record !== undefined && record.deliveries.every(d => d.state === 'delivered')) return 'duplicate'
    record ??= this.remember({ key, event, deliveries: subscribers.map(s => ({ subscriber: s.name, state: 'pending', attempts: 0 })) })
    const delivered = await this.deliver(record)
    return delivered ? 'delivered' : 'failed'
  }

  async list (limit: number, merchants?: readonly string[]): Promise<NotificationRecord[]> {
    const records = [...this.records.values()].filter(r => merchants === undefined || merchants.includes(r.event.merchant))
    return records.slice(-limit).reverse()
  }

  async get (key: string): Promise<NotificationRecord | undefined> {
    return this.records.get(key)
  }

  async redeliver (key: string, subscriber?: string): Promise<NotificationRecord | undefined> {
    const record = this.records.get(key)
    if (record === undefined) return undefined
    await this.inFlight.get(key) // one delivery of a notification at a time
    for (const d of record.deliveries) if (subscriber === undefined || d.subscriber === subscriber) d.state = 'pending'
    await this.deliver(record)
    return record
  }

  async oldestUndeliveredSeconds (): Promise<number> {
    const oldest = [...this.records.values()].find(r => r.deliveries.some(d => d.state === 'pending'))
    return oldest === undefined ? 0 : Math.max(0, (Date.now() - Date.parse(oldest.event.received_at)) / 1000)
  }

  start (): void {} // deliveries are made as notifications arrive

  async close (): Promise<void> {
    await Promise.allSettled(this.inFlight.values())
  }

  /** Delivers to each subscriber still pending, in parallel; true when none is left. */
  private async deliver (record: NotificationRecord): Promise<boolean> {
    const run = (async () => {
      await Promise.all(record.deliveries.map(async (state, i) => {
        const subscriber = this.subscribers.get(state.subscriber)
        if (state.state === 'delivered' || subscriber === undefined) return
        const outcome = await this.deliverer.send(subscriber, record.event, state.attempts + 1)
        record.deliveries[i] = afterAttempt(state, outcome, state.attempts + 1)
      }))
      return record.deliveries.every(d => d.state === 'delivered')
    })()
    this.inFlight.set(record.key, run)
    try {
      return await run
    } finally {
      this.inFlight.delete(record.key)
    }
  }

  private remember (record: NotificationRecord): NotificationRecord {
    if (this.records.size >= MAX_RECORDS) this.records.delete(this.records.keys().next().value as string)
    this.records.set(record.key, record)
    return record
  }
}
