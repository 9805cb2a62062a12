import { hostname } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import { randomBytes } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { Redis } from 'ioredis'
import { afterAttempt, keyOf, type Deliverer, type DeliveryState, type NotificationRecord, type ReceiveResult, type Relay, type RelayEvent } from './relay.js'
import type { Subscriber } from './subscribers.js'

/**
 * The relay with Redis: a notification is stored (durably: Redis's append-only file) before WeChat Pay is answered,
 * then delivered from the store. One stream entry per (notification, subscriber) in a consumer group: each entry is
 * read by one replica; an entry whose delivery failed stays pending and is claimed again (XCLAIM, which only one
 * replica can win) once it has been idle for its backoff, by any replica, so a replica that dies mid-delivery only
 * delays it. Delivery is at least once; the notification id is the subscriber's idempotency key.
 */

export interface RedisRelayOptions {
  /** First retry after this; doubling up to `retryMaxMs`. */
  retryBaseMs: number
  retryMaxMs: number
  /** Retries stop this long after the notification was received (then the delivery is `failed`). */
  retryHorizonMs: number
  /** How long a notification is remembered: duplicates, the operator API. */
  retentionMs: number
  /** The longest one delivery takes: an entry is never claimed from a replica that may still be delivering it. */
  deliveryTimeoutMs: number
  /** How often pending entries are looked at (tests use less). */
  pollMs?: number
  /** A delivery given up after the retry horizon. */
  onGiveUp?: (subscriber: string) => void
}

const PREFIX = '{wechatpay-gateway:notify}'
const QUEUE = `${PREFIX}:queue`
const RECENT = `${PREFIX}:recent`
const GROUP = 'relay'
const RECENT_MAX = 10_000
const CONCURRENCY = 16
const PENDING_PAGE = 100
const recordKey = (key: string): string => `${PREFIX}:n:${key}`

/** Stores a notification and queues one delivery per subscriber, unless it is already stored (a duplicate). */
const STORE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'event', ARGV[1])
for i = 5, #ARGV do
  redis.call('HSET', KEYS[1], 'd:' .. ARGV[i], cjson.encode({subscriber = ARGV[i], state = 'pending', attempts = 0}))
  redis.call('XADD', KEYS[2], '*', 'key', ARGV[4], 'subscriber', ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -${RECENT_MAX + 1})
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3] - ARGV[2])
return 1`

type StreamEntry = [id: string, fields: string[]]

function field (fields: string[], name: string): string | undefined {
  const i = fields.indexOf(name)
  return i >= 0 && i % 2 === 0 ? fields[i + 1] : undefined
}

export class RedisRelay implements Relay {
  private readonly consumer = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`
  /** A connection of its own for the blocking read, made by start(). */
  private reader: Redis | undefined
  private renewReader = (): void => {}
  private running = false
  private loop: Promise<void> | undefined
  private readonly active = new Set<Promise<void>>()
  /** Ends the pauses between attempts to reach Redis, and a blocked read, at once on close(). */
  private readonly stopped = new AbortController()

  constructor (private readonly redis: Redis, private readonly deliverer: Deliverer,
    private readonly subscribers: ReadonlyMap<string, Subscriber>, private readonly options: RedisRelayOptions,
    private readonly log: FastifyBaseLogger) {
  }

  async receive (event: RelayEvent, subscribers: Subscriber[]): Promise<ReceiveResult> {
    const key = keyOf(event)
    const stored = await this.redis.eval(STORE, 3, recordKey(key), QUEUE, RECENT,
      JSON.stringify(event), this.options.retentionMs, Date.now(), key, ...subscribers.map(s => s.name)) as number
    return stored === 1 ? 'stored' : 'duplicate'
  }

  async list (limit: number, merchants?: readonly string[]): Promise<NotificationRecord[]> {
    const records: NotificationRecord[] = []
    // Keys are `<merchant>/<id>`: a caller's merchants are filtered before the limit, page by page.
    for (let start = 0; records.length < limit; start += limit) {
      const keys = await this.redis.zrevrange(RECENT, start, start + limit - 1)
      const wanted = keys.filter(key => merchants === undefined || merchants.includes(key.slice(0, key.indexOf('/'))))
      for (const record of await Promise.all(wanted.map(async key => await this.get(key)))) if (record !== undefined && records.length < limit) records.push(record)
      if (keys.length < limit) break
    }
    return records
  }

  async get (key: string): Promise<NotificationRecord | undefined> {
    const hash = await this.redis.hgetall(recordKey(key))
    if (hash.event === undefined) return undefined
    const deliveries = Object.entries(hash).filter(([f]) => f.startsWith('d:')).map(([, v]) => JSON.parse(v) as DeliveryState)
    return { key, event: JSON.parse(hash.event) as RelayEvent, deliveries }
  }

  async redeliver (key: string, subscriber?: string): Promise<NotificationRecord | undefined> {
    const record = await this.get(key)
    if (record === undefined) return undefined
    for (const d of record.deliveries) {
      // A delivery still pending is already queued: a second entry would let two replicas send it at once.
      if ((subscriber !== undefined && d.subscriber !== subscriber) || d.state === 'pending') continue
      // Together or not at all: a delivery marked pending without its queue entry would never be sent.
      await this.redis.multi()
        .hset(recordKey(key), `d:${d.subscriber}`, JSON.stringify({ ...d, state: 'pending' }))
        .xadd(QUEUE, '*', 'key', key, 'subscriber', d.subscriber)
        .exec()
    }
    return await this.get(key)
  }

  async oldestUndeliveredSeconds (): Promise<number> {
    // Entries are deleted once settled: the first one left is the oldest waiting; its id starts with its time.
    const [first] = await this.redis.xrange(QUEUE, '-', '+', 'COUNT', 1)
    return first === undefined ? 0 : Math.max(0, (Date.now() - Number(first[0].split('-')[0])) / 1000)
  }

  /** Starts delivering (reads new entries, claims stalled ones), in the background: Redis may not be up yet. */
  start (): void {
    if (this.subscribers.size === 0) return // nothing is ever queued: no worker polls Redis
    // Fails fast like the shared connection; its outages are logged once, by the shared connection. Its reads block
    // for up to `pollMs` on purpose: the shared connection's command timeout would cut them off; a read is given up
    // on a second after that instead (a connection left half-open by a partition never answers).
    const pollMs = this.options.pollMs ?? 1000
    const reader = this.redis.duplicate({ commandTimeout: undefined, blockingTimeout: pollMs, blockingTimeoutGrace: 1000 })
    reader.on('error', () => {})
    this.reader = reader
    // The shared connection is back after a loss or a hang (plugins/redis.ts): the reader's may be just as dead
    // without knowing it, so it takes a new one too.
    this.renewReader = () => { if (reader.status === 'ready') reader.disconnect(true) }
    this.redis.on('ready', this.renewReader)
    this.running = true
    this.loop = this.run(reader)
  }

  async close (): Promise<void> {
    this.redis.off('ready', this.renewReader)
    this.running = false
    this.stopped.abort()
    this.reader?.disconnect()
    await this.loop
    await Promise.allSettled(this.active)
  }

  private async run (reader: Redis): Promise<void> {
    let lastClaim = 0
    let group = false
    while (this.running) {
      try {
        if (!group) {
          await this.redis.xgroup('CREATE', QUEUE, GROUP, '0', 'MKSTREAM').catch((err: Error) => {
            if (!err.message.includes('BUSYGROUP')) throw err
          })
          group = true
        }
        const pollMs = this.options.pollMs ?? 1000
        if (reader.status !== 'ready') {
          await sleep(Math.min(pollMs, 100), undefined, { signal: this.stopped.signal }).catch(() => {})
          continue
        }
        if (this.active.size < CONCURRENCY) {
          const reading = reader.xreadgroup('GROUP', GROUP, this.consumer, 'COUNT', CONCURRENCY - this.active.size,
            'BLOCK', pollMs, 'STREAMS', QUEUE, '>') as Promise<Array<[string, StreamEntry[]]> | null>
          const read = await this.untilStopped(reading)
          for (const entry of read?.[0]?.[1] ?? []) this.track(this.process(entry, 1))
        } else {
          await Promise.race(this.active)
        }
        if (Date.now() - lastClaim >= pollMs) {
          lastClaim = Date.now()
          await this.claimStalled()
        }
      } catch (err) {
        if (!this.running) return
        // The stream was lost (a Redis without its append-only file restarted, a failover): make the group again.
        if ((err as Error).message.includes('NOGROUP')) group = false
        // An outage is logged once by the shared connection (plugins/redis.ts), and a renewed reader's read is cut
        // off on purpose; anything else is worth a line.
        if (this.redis.status === 'ready' && !(err as Error).message.includes('Connection is closed')) this.log.warn({ reason: (err as Error).message }, 'notification relay: a Redis command failed; trying again')
        await sleep(this.options.pollMs ?? 1000, undefined, { signal: this.stopped.signal }).catch(() => {})
      }
    }
  }

  /** `work`'s result, or null at once on close(): a read blocked when Redis went away may never settle. */
  private untilStopped<T> (work: Promise<T>): Promise<T | null> {
    const { signal } = this.stopped
    let onStop = (): void => {}
    const stop = new Promise<null>(resolve => { onStop = () => { resolve(null) }; signal.addEventListener('abort', onStop, { once: true }) })
    work.catch(() => {}) // settled or not, it is awaited through the race below
    return Promise.race([work, stop]).finally(() => { signal.removeEventListener('abort', onStop) })
  }

  private track (work: Promise<void>): void {
    this.active.add(work)
    void work.finally(() => this.active.delete(work))
  }

  private backoffMs (attempts: number): number {
    return Math.min(this.options.retryMaxMs, this.options.retryBaseMs * 2 ** Math.max(0, attempts - 1))
  }

  /**
   * Entries whose last attempt failed (or whose replica died) and whose backoff has passed: claimed, then retried.
   * Every pending entry is looked at, page by page: a subscriber long down must not hide another's due retries.
   */
  private async claimStalled (): Promise<void> {
    const lease = this.options.deliveryTimeoutMs + 1000
    let from = '-'
    for (;;) {
      const page = await this.redis.xpending(QUEUE, GROUP, 'IDLE', Math.min(lease, this.options.retryBaseMs), from, '+', PENDING_PAGE) as Array<[string, string, number, number]>
      for (const [id, , idle, deliveries] of page) {
        if (this.active.size >= CONCURRENCY) return
        const wait = Math.max(lease, this.backoffMs(deliveries))
        if (idle < wait) continue
        // Only one replica's XCLAIM succeeds: the entry's idle time restarts for everyone else.
        const claimed = await this.redis.xclaim(QUEUE, GROUP, this.consumer, wait, id) as StreamEntry[]
        for (const entry of claimed) this.track(this.process(entry, deliveries + 1))
      }
      const last = page.at(-1)
      if (page.length < PENDING_PAGE || last === undefined) return
      from = `(${last[0]}`
    }
  }

  private async process ([entryId, fields]: StreamEntry, attempt: number): Promise<void> {
    const key = field(fields, 'key') ?? ''
    const name = field(fields, 'subscriber') ?? ''
    const settle = async (): Promise<void> => { await this.redis.multi().xack(QUEUE, GROUP, entryId).xdel(QUEUE, entryId).exec() }
    try {
      const [stored, delivery] = await this.redis.hmget(recordKey(key), 'event', `d:${name}`)
      if (stored == null || delivery == null) return await settle() // expired: nothing left to deliver
      const state = JSON.parse(delivery) as DeliveryState
      if (state.state === 'delivered') return await settle()
      const event = JSON.parse(stored) as RelayEvent
      const expired = Date.now() - Date.parse(event.received_at) > this.options.retryHorizonMs
      const subscriber = this.subscribers.get(name)
      let next: DeliveryState
      if (subscriber === undefined) {
        // Another replica's configuration (a rolling change): left for a replica that knows it, until the horizon.
        if (!expired) return
        next = { ...state, last_error: 'NOT_CONFIGURED' }
      } else {
        const outcome = await this.deliverer.send(subscriber, event, attempt)
        next = afterAttempt(state, outcome, attempt)
        if (outcome.ok || !expired) {
          await this.redis.hset(recordKey(key), `d:${name}`, JSON.stringify(next))
          if (outcome.ok) await settle()
          return
        }
      }
      next = { ...next, state: 'failed' }
      this.options.onGiveUp?.(name)
      this.log.error({ notification: key, subscriber: name, attempts: next.attempts, reason: next.last_error ?? next.last_status },
        'notification NOT delivered: the subscriber failed every attempt within NOTIFY_RETRY_HORIZON_S; redeliver it from the operator API once the subscriber is fixed')
      await this.redis.hset(recordKey(key), `d:${name}`, JSON.stringify(next))
      await settle()
    } catch (err) {
      // Left pending: claimed again after its backoff.
      this.log.warn({ notification: key, subscriber: name, reason: (err as Error).message }, 'notification delivery interrupted; it will be retried')
    }
  }
}
