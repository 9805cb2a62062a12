import type { Redis } from 'ioredis'
import { MAX_CLOCK_SKEW_SECONDS } from './verifier.js'

/**
 * WeChat Pay's answer signature covers only its timestamp, nonce and body (docs/wechatpay.md §4): nothing ties a signed
 * `204` to the request it answers. A captured answer could be replayed for any call of the next five minutes, so
 * the nonce of every accepted answer is remembered for as long as its timestamp is accepted, and a second use is
 * refused. The signature fixes the timestamp, so a replay carries the same one: nonces are kept per timestamp.
 */
export interface NonceStore {
  /** True the first time (`scope`, `timestamp`, `nonce`) is seen within the acceptance window. */
  firstUse (scope: string, timestamp: string, nonce: string): Promise<boolean>
}

export class MemoryNonces implements NonceStore {
  /** scope → timestamp (s) → nonces; a bucket goes once its timestamp can no longer be accepted. */
  private readonly scopes = new Map<string, Map<number, Set<string>>>()
  private purgedAt = 0

  constructor (private readonly now: () => number = Date.now) {}

  async firstUse (scope: string, timestamp: string, nonce: string): Promise<boolean> {
    this.purge()
    let buckets = this.scopes.get(scope)
    if (buckets === undefined) this.scopes.set(scope, buckets = new Map())
    const second = Number(timestamp)
    let bucket = buckets.get(second)
    if (bucket === undefined) buckets.set(second, bucket = new Set())
    if (bucket.has(nonce)) return false
    bucket.add(nonce)
    return true
  }

  /** Once a second at most: drops buckets older than the window (at most ~600 per scope to look at). */
  private purge (): void {
    const second = Math.floor(this.now() / 1000)
    if (second === this.purgedAt) return
    this.purgedAt = second
    const oldest = second - MAX_CLOCK_SKEW_SECONDS - 1
    for (const buckets of this.scopes.values()) {
      for (const ts of buckets.keys()) if (ts < oldest) buckets.delete(ts)
    }
  }
}

/** Shared by every replica: a replayed answer is refused whichever replica it reaches. */
export class RedisNonces implements NonceStore {
  constructor (private readonly redis: Redis, private readonly fallback: NonceStore,
    private readonly onError: (err: Error) => void, private readonly prefix = 'wechatpay-gateway:nonce:') {}

  async firstUse (scope: string, timestamp: string, nonce: string): Promise<boolean> {
    // Kept until the timestamp leaves the window (a timestamp may be up to 300 s ahead of this clock).
    const ttlS = 2 * MAX_CLOCK_SKEW_SECONDS + 2
    try {
      return await this.redis.set(`${this.prefix}${scope}:${timestamp}:${nonce}`, '1', 'EX', ttlS, 'NX') === 'OK'
    } catch (err) {
      // Redis away: this replica's own memory still refuses replays it has seen (README, "Redis outages").
      this.onError(err as Error)
      return await this.fallback.firstUse(scope, timestamp, nonce)
    }
  }
}
