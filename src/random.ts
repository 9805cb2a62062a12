import { randomFillSync } from 'node:crypto'

/**
 * Random hex from a pool filled 4 KiB at a time: each `crypto.randomBytes` call costs tens of microseconds on some
 * machines (a virtualised entropy source; BENCHMARKS.md), and every request needs a trace id and a span id. The
 * pool is as random as randomBytes (the same CSPRNG); a byte is never handed out twice. Node's `randomUUID` does the
 * same for UUIDs.
 */

const POOL_BYTES = 4096
const pool = Buffer.allocUnsafe(POOL_BYTES)
let used = POOL_BYTES

/** `bytes` random bytes (at most 256) as lower-case hex. */
export function randomHex (bytes: number): string {
  if (used + bytes > POOL_BYTES) {
    randomFillSync(pool)
    used = 0
  }
  const hex = pool.toString('hex', used, used + bytes)
  used += bytes
  return hex
}
