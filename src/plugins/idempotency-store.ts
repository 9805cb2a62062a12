import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Redis } from 'ioredis'

/**
 * Where `Idempotency-Key` claims and answers live: in memory (one process), or in Redis (replicas share it).
 *
 * A key is claimed for its whole life (the TTL, 24 h by default), not for the length of a call, and is never
 * executed twice: the claim records the deadline by which its call must have ended. A duplicate waits for the
 * answer until then; past it, with no answer recorded (the replica died, or the store failed while recording), the
 * outcome is unknown and stays so. Only an answer that says the call did not happen releases the key.
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
  /** The call holding the key is still running (after the wait, or too many are waiting already). */
  | { kind: 'busy' }
  /** The call holding the key ended without an answer being recorded: it may have happened. */
  | { kind: 'unknown' }
  /** The memory store holds as many keys as it may (for this owner). */
  | { kind: 'full' }

export interface ClaimRequest {
  key: string
  fingerprint: string
  /** Who the key belongs to (the caller): the memory store gives each owner a share. */
  owner: string
  /** How long the key lives. */
  ttlMs: number
  /** By when the call holding the key has certainly ended (the client's longest call, and a margin). */
  callMs: number
  /** The waiting duplicate's caller left: stop waiting. */
  signal?: AbortSignal
}

export interface IdempotencyStore {
  claim (request: ClaimRequest): Promise<Claim>
  /** Both do nothing if the claim is no longer `token`'s. */
  complete (key: string, token: string, answer: StoredAnswer): Promise<void>
  release (key: string, token: string): Promise<void>
  close (): Promise<void>
}

/** When the release of a claim that failed is sent again: a hung Redis may run the claim once it wakes up. */
const RELEASE_AGAIN_MS = [500, 1000, 2000, 4000, 8000, 16_000]

/** Duplicates of one key waiting at once in one process; more get `busy` straight away. */
export const MAX_WAITERS_PER_KEY = 32

/** Resolves when `promise` does, or when `signal` aborts (then rejects), whichever comes first. */
function until<T> (promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise
  if (signal.aborted) return Promise.reject(signal.reason)
  return new Promise<T>((resolve, reject) => {
    const abort = (): void => reject(signal.reason)
    signal.addEventListener('abort', abort, { once: true })
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', abort))
  })
}

/**
 * One wait per key per process, however many duplicates wait on it; it stops when the last of them leaves.
 * `watch` resolves when the key's record changed (or its holder's deadline passed), and stops on `stop`.
 */
class SharedWaits {
  private readonly waits = new Map<string, { done: Promise<void>, waiters: number, stop: AbortController }>()

  async wait (key: string, watch: (stop: AbortSignal) => Promise<void>, signal?: AbortSignal): Promise<'changed' | 'busy'> {
    let wait = this.waits.get(key)
    if (wait === undefined) {
      const stop = new AbortController()
      const done = watch(stop.signal).finally(() => { if (this.waits.get(key) === wait) this.waits.delete(key) })
      wait = { done, waiters: 0, stop }
      this.waits.set(key, wait)
    }
    if (wait.waiters >= MAX_WAITERS_PER_KEY) return 'busy'
    wait.waiters++
    const current = wait
    try {
      await until(current.done, signal)
      return 'changed'
    } finally {
      if (--current.waiters === 0) current.stop.abort()
    }
  }
}

interface Entry {
  fingerprint: string
  token: string
  owner: string
  /** When the holder's call has certainly ended (ms since the epoch). */
  deadline: number
  answer?: StoredAnswer
  expiresAt: number
  /** Resolves when the holder completes or releases the key. */
  settled: Promise<void>
  settle: () => void
}

export interface MemoryLimits {
  maxKeys: number
  maxKeysPerOwner: number
}

/**
 * One process. Every key lives the same TTL from its claim, so the Map's insertion order is expiry order: expired
 * keys are dropped from the front, a few at each claim (O(1) amortised). An unexpired key is never evicted: when
 * the store is full, new keys are refused.
 */
export class MemoryStore implements IdempotencyStore {
  private readonly entries = new Map<string, Entry>()
  private readonly owners = new Map<string, number>()
  private readonly waits = new SharedWaits()

  constructor (private readonly limits: MemoryLimits, private readonly now: () => number = Date.now) {}

  /** Keys held now, in all and by one owner (for tests and metrics). */
  size (owner?: string): number {
    this.expire()
    return owner === undefined ? this.entries.size : this.owners.get(owner) ?? 0
  }

  async claim (request: ClaimRequest): Promise<Claim> {
    for (;;) {
      this.expire()
      const entry = this.entries.get(request.key)
      if (entry === undefined) return this.create(request)
      if (entry.fingerprint !== request.fingerprint) return { kind: 'conflict' }
      if (entry.answer !== undefined) return { kind: 'replay', answer: entry.answer }
      const left = entry.deadline - this.now()
      if (left <= 0) return { kind: 'unknown' }
      const waited = await this.waits.wait(request.key, async stop => {
        await until(Promise.race([entry.settled, sleep(left, undefined, { ref: false })]), stop).catch(() => {})
      }, request.signal)
      if (waited === 'busy') return { kind: 'busy' }
    }
  }

  async complete (key: string, token: string, answer: StoredAnswer): Promise<void> {
    const entry = this.entries.get(key)
    if (entry?.token !== token) return
    entry.answer = answer
    entry.settle()
  }

  async release (key: string, token: string): Promise<void> {
    const entry = this.entries.get(key)
    if (entry?.token !== token) return
    this.delete(key, entry)
    entry.settle()
  }

  async close (): Promise<void> {}

  private create (request: ClaimRequest): Claim {
    const held = this.owners.get(request.owner) ?? 0
    if (this.entries.size >= this.limits.maxKeys || held >= this.limits.maxKeysPerOwner) return { kind: 'full' }
    let settle!: () => void
    const settled = new Promise<void>(resolve => { settle = resolve })
    const token = randomUUID()
    const now = this.now()
    this.entries.set(request.key, {
      fingerprint: request.fingerprint, token, owner: request.owner, deadline: now + request.callMs, expiresAt: now + request.ttlMs, settled, settle
    })
    this.owners.set(request.owner, held + 1)
    return { kind: 'claimed', token }
  }

  private expire (): void {
    const now = this.now()
    for (const [key, entry] of this.entries) {
      if (entry.expiresAt > now) break
      this.delete(key, entry)
    }
  }

  private delete (key: string, entry: Entry): void {
    this.entries.delete(key)
    const held = (this.owners.get(entry.owner) ?? 1) - 1
    if (held === 0) this.owners.delete(entry.owner)
    else this.owners.set(entry.owner, held)
  }
}

/** What Redis holds for a key (short names: there may be millions). */
interface RedisRecord {
  /** fingerprint */
  f: string
  /** claim token */
  t: string
  /** deadline of the holder's call, ms since the epoch */
  d: number
  /** the answer, once recorded */
  a?: StoredAnswer
}

/** Claims KEYS[1] with ARGV[1] for ARGV[2] ms if nobody holds it (returns nil); otherwise returns what is there. */
const CLAIM = `
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false`

/** Adds the answer ARGV[2] to the record (keeping the key's TTL), or deletes the key (ARGV[2] empty), only for the claim token ARGV[1]. */
const IF_OWNER = `
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local record = cjson.decode(current)
if record.t ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
record.a = cjson.decode(ARGV[2])
redis.call('SET', KEYS[1], cjson.encode(record), 'KEEPTTL')
return 1`

/**
 * Redis: one script claims a key or reads it. Duplicates of a running key share one poll per process, with a
 * capped backoff, so a hundred waiting duplicates cost a few commands each, not one every few milliseconds.
 */
export class RedisStore implements IdempotencyStore {
  private readonly waits = new SharedWaits()

  constructor (private readonly redis: Redis, private readonly prefix = 'wechatpay-gateway:idempotency:',
    private readonly pollMs = { first: 25, max: 1000 }) {}

  async claim (request: ClaimRequest): Promise<Claim> {
    const id = this.prefix + request.key
    for (;;) {
      const token = randomUUID()
      const record: RedisRecord = { f: request.fingerprint, t: token, d: Date.now() + request.callMs }
      let raw: string | null
      try {
        raw = await this.redis.eval(CLAIM, 1, id, JSON.stringify(record), request.ttlMs) as string | null
      } catch (err) {
        // Refused before it was written (Redis away: no offline queue), it can never run; otherwise it may.
        if (!/isn't writeable/.test((err as Error).message)) this.releaseLate(request.key, token)
        throw err
      }
      if (raw === null) return { kind: 'claimed', token }
      const current = JSON.parse(raw) as RedisRecord
      if (current.f !== request.fingerprint) return { kind: 'conflict' }
      if (current.a !== undefined) return { kind: 'replay', answer: current.a }
      if (Date.now() >= current.d) return { kind: 'unknown' }
      const waited = await this.waits.wait(request.key, stop => this.watch(id, raw, current.d, stop), request.signal)
      if (waited === 'busy') return { kind: 'busy' }
    }
  }

  async complete (key: string, token: string, answer: StoredAnswer): Promise<void> {
    await this.redis.eval(IF_OWNER, 1, this.prefix + key, token, JSON.stringify(answer))
  }

  async release (key: string, token: string): Promise<void> {
    await this.redis.eval(IF_OWNER, 1, this.prefix + key, token, '')
  }

  async close (): Promise<void> {}

  /**
   * A claim whose reply never came (Redis hung, or the connection was lost) may still run when Redis wakes up, and
   * would then hold the key as "unknown" although nothing was sent. Its release is sent at once (on the same
   * connection, so after the claim), then again a few times over the next seconds (each refused at once while
   * Redis is away): at worst the key answers "unknown", never a second call. Only this token's claim is removed.
   */
  private releaseLate (key: string, token: string): void {
    void this.release(key, token).catch(() => {})
    for (const ms of RELEASE_AGAIN_MS) setTimeout(() => { void this.release(key, token).catch(() => {}) }, ms).unref()
  }

  /** Polls until the record is no longer `seen` (answered or released), or the holder's deadline has passed. */
  private async watch (id: string, seen: string, deadline: number, stop: AbortSignal): Promise<void> {
    for (let delay = this.pollMs.first; Date.now() < deadline; delay = Math.min(delay * 2, this.pollMs.max)) {
      await sleep(Math.min(delay, Math.max(0, deadline - Date.now())), undefined, { signal: stop, ref: false }).catch(() => {})
      if (stop.aborted) return
      if (await this.redis.get(id) !== seen) return
    }
  }
}
