import { setTimeout as sleep } from 'node:timers/promises'
import type { Redis } from 'ioredis'

/**
 * Where answers to `Idempotency-Key` requests are kept: in memory (one process), or in Redis (several replicas
 * behind a load balancer share it). A key is claimed before the call and completed with its answer, or released
 * when the call did not happen (so that a retry with the same key may try again).
 */

export interface StoredAnswer {
  status: number
  headers: Record<string, string>
  body: string
}

export type Claim =
  | { kind: 'claimed' }
  | { kind: 'replay', answer: StoredAnswer }
  /** The key was used with another request. */
  | { kind: 'conflict' }
  /** Another call with this key is still running after `waitMs`. */
  | { kind: 'busy' }

export interface IdempotencyStore {
  /** Claims `key` for `fingerprint`, or waits (up to `waitMs`) for the call that holds it, then shares its answer. */
  claim (key: string, fingerprint: string, waitMs: number): Promise<Claim>
  complete (key: string, fingerprint: string, answer: StoredAnswer, ttlMs: number): Promise<void>
  release (key: string): Promise<void>
  close (): Promise<void>
}

interface Entry {
  fingerprint: string
  answer?: StoredAnswer
  expiresAt: number
  /** Resolves when the call holding the key completes or releases it. */
  settled: Promise<void>
  settle: () => void
}

export class MemoryStore implements IdempotencyStore {
  private readonly entries = new Map<string, Entry>()
  private readonly sweeper: NodeJS.Timeout

  constructor (private readonly maxEntries = 100_000, private readonly now: () => number = Date.now) {
    this.sweeper = setInterval(() => this.sweep(), 60_000)
    this.sweeper.unref()
  }

  async claim (key: string, fingerprint: string, waitMs: number): Promise<Claim> {
    const deadline = Date.now() + waitMs
    for (;;) {
      const entry = this.entries.get(key)
      if (entry === undefined || entry.expiresAt <= this.now()) {
        let settle!: () => void
        const settled = new Promise<void>(resolve => { settle = resolve })
        // While the call runs, the key is held for at most `waitMs` (a crashed call frees it).
        this.set(key, { fingerprint, expiresAt: this.now() + waitMs, settled, settle })
        return { kind: 'claimed' }
      }
      if (entry.fingerprint !== fingerprint) return { kind: 'conflict' }
      if (entry.answer !== undefined) return { kind: 'replay', answer: entry.answer }
      const left = deadline - Date.now()
      if (left <= 0) return { kind: 'busy' }
      let timer: NodeJS.Timeout | undefined
      await Promise.race([entry.settled, new Promise<void>(resolve => { timer = setTimeout(resolve, left) })])
      clearTimeout(timer)
    }
  }

  async complete (key: string, fingerprint: string, answer: StoredAnswer, ttlMs: number): Promise<void> {
    const entry = this.entries.get(key)
    this.set(key, { fingerprint, answer, expiresAt: this.now() + ttlMs, settled: Promise.resolve(), settle: () => {} })
    entry?.settle()
  }

  async release (key: string): Promise<void> {
    const entry = this.entries.get(key)
    this.entries.delete(key)
    entry?.settle()
  }

  async close (): Promise<void> {
    clearInterval(this.sweeper)
  }

  private set (key: string, entry: Entry): void {
    this.entries.set(key, entry)
    if (this.entries.size > this.maxEntries) this.sweep()
  }

  /** Drops expired entries; past the cap, the oldest answers go first (a Map iterates in insertion order). */
  private sweep (): void {
    const now = this.now()
    for (const [key, entry] of this.entries) if (entry.expiresAt <= now) this.entries.delete(key)
    for (const [key, entry] of this.entries) {
      if (this.entries.size <= this.maxEntries) break
      if (entry.answer !== undefined) this.entries.delete(key)
    }
  }
}

interface RedisRecord {
  fingerprint: string
  answer?: StoredAnswer
}

/** Redis: `SET NX` claims a key; the other replicas poll until the answer is there. */
export class RedisStore implements IdempotencyStore {
  constructor (private readonly redis: Redis, private readonly prefix = 'wechatpay-gateway:idempotency:', private readonly pollMs = 25) {}

  async claim (key: string, fingerprint: string, waitMs: number): Promise<Claim> {
    const id = this.prefix + key
    const deadline = Date.now() + waitMs
    for (;;) {
      const claimed = await this.redis.set(id, JSON.stringify({ fingerprint } satisfies RedisRecord), 'PX', waitMs, 'NX')
      if (claimed === 'OK') return { kind: 'claimed' }
      const raw = await this.redis.get(id)
      if (raw !== null) {
        const record = JSON.parse(raw) as RedisRecord
        if (record.fingerprint !== fingerprint) return { kind: 'conflict' }
        if (record.answer !== undefined) return { kind: 'replay', answer: record.answer }
        if (Date.now() >= deadline) return { kind: 'busy' }
        await sleep(this.pollMs)
      }
    }
  }

  async complete (key: string, fingerprint: string, answer: StoredAnswer, ttlMs: number): Promise<void> {
    await this.redis.set(this.prefix + key, JSON.stringify({ fingerprint, answer } satisfies RedisRecord), 'PX', ttlMs)
  }

  async release (key: string): Promise<void> {
    await this.redis.del(this.prefix + key)
  }

  async close (): Promise<void> {}
}
