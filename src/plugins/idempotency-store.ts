import { randomUUID } from 'node:crypto'
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
  /** `token` proves the claim is still this call's when it completes or releases the key. */
  | { kind: 'claimed', token: string }
  | { kind: 'replay', answer: StoredAnswer }
  /** The key was used with another request. */
  | { kind: 'conflict' }
  /** Another call with this key is still running after `waitMs`. */
  | { kind: 'busy' }

export interface IdempotencyStore {
  /** Claims `key` for `fingerprint`, or waits (up to `waitMs`) for the call that holds it, then shares its answer. */
  claim (key: string, fingerprint: string, waitMs: number): Promise<Claim>
  /** Both do nothing if the claim is no longer `token`'s (it expired and another call holds the key). */
  complete (key: string, token: string, fingerprint: string, answer: StoredAnswer, ttlMs: number): Promise<void>
  release (key: string, token: string): Promise<void>
  close (): Promise<void>
}

interface Entry {
  fingerprint: string
  token: string
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
        const token = randomUUID()
        this.set(key, { fingerprint, token, expiresAt: this.now() + waitMs, settled, settle })
        return { kind: 'claimed', token }
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

  async complete (key: string, token: string, fingerprint: string, answer: StoredAnswer, ttlMs: number): Promise<void> {
    const entry = this.entries.get(key)
    if (entry?.token !== token) return
    this.set(key, { fingerprint, token, answer, expiresAt: this.now() + ttlMs, settled: Promise.resolve(), settle: () => {} })
    entry.settle()
  }

  async release (key: string, token: string): Promise<void> {
    const entry = this.entries.get(key)
    if (entry?.token !== token) return
    this.entries.delete(key)
    entry.settle()
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
  token: string
  answer?: StoredAnswer
}

/** Replaces (ARGV[2] set) or deletes KEYS[1] only while it still holds the claim token ARGV[1]. */
const IF_OWNER = `
local current = redis.call('GET', KEYS[1])
if not current or cjson.decode(current).token ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1`

/** Redis: `SET NX` claims a key; the other replicas poll until the answer is there. */
export class RedisStore implements IdempotencyStore {
  constructor (private readonly redis: Redis, private readonly prefix = 'wechatpay-gateway:idempotency:', private readonly pollMs = 25) {}

  async claim (key: string, fingerprint: string, waitMs: number): Promise<Claim> {
    const id = this.prefix + key
    const deadline = Date.now() + waitMs
    for (;;) {
      const token = randomUUID()
      const claimed = await this.redis.set(id, JSON.stringify({ fingerprint, token } satisfies RedisRecord), 'PX', waitMs, 'NX')
      if (claimed === 'OK') return { kind: 'claimed', token }
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

  async complete (key: string, token: string, fingerprint: string, answer: StoredAnswer, ttlMs: number): Promise<void> {
    await this.redis.eval(IF_OWNER, 1, this.prefix + key, token, JSON.stringify({ fingerprint, token, answer } satisfies RedisRecord), ttlMs)
  }

  async release (key: string, token: string): Promise<void> {
    await this.redis.eval(IF_OWNER, 1, this.prefix + key, token, '', 0)
  }

  async close (): Promise<void> {}
}
