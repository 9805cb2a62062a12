import { randomBytes, sign, type KeyObject } from 'node:crypto'
import { AUTH_SCHEME } from '../wechat/signer.js'
import { responseMessage } from '../wechat/verifier.js'

/**
 * Benchmarks only (`SANDBOX_BENCH_PRESIGN=<merchant>:<count>`): answers with an empty body (204) signed ahead of time,
 * each with its own nonce, so that during a benchmark the simulator's RSA signing (as costly as the gateway's) does
 * not compete with the gateway for the same cores: at WeChat Pay, that work is done on WeChat's machines. The
 * gateway still verifies every answer and refuses a repeated nonce. A pool is used until it runs out or until its
 * timestamp is 4 minutes old (the gateway accepts 5), then answers are signed as they go.
 */

const MAX_AGE_S = 240

interface Pool { serial: string, timestamp: number, signatures: Array<{ nonce: string, signature: string }> }

export class PresignedAnswers {
  private readonly pools = new Map<string, Pool>()

  /** Signs `count` empty answers with `signer` for the merchant `name`, on libuv's threads. */
  async fill (name: string, signer: { key: KeyObject, serial: string }, count: number): Promise<void> {
    const timestamp = Math.floor(Date.now() / 1000)
    const one = (): Promise<{ nonce: string, signature: string }> => new Promise((resolve, reject) => {
      const nonce = randomBytes(16).toString('hex')
      sign('sha256', responseMessage(String(timestamp), nonce, Buffer.alloc(0)), signer.key, (err, signature) => {
        if (err !== null) reject(err)
        else resolve({ nonce, signature: signature.toString('base64') })
      })
    })
    const signatures: Pool['signatures'] = []
    // In batches: a few hundred in flight keep every thread busy without holding every promise at once.
    for (let done = 0; done < count; done += 256) signatures.push(...await Promise.all(Array.from({ length: Math.min(256, count - done) }, one)))
    this.pools.set(name, { serial: signer.serial, timestamp, signatures })
  }

  /** The headers of a presigned empty answer for this merchant and serial, or undefined (sign it now). */
  take (name: string, serial: string): Record<string, string> | undefined {
    const pool = this.pools.get(name)
    if (pool === undefined || pool.serial !== serial || Date.now() / 1000 - pool.timestamp > MAX_AGE_S) return undefined
    const next = pool.signatures.pop()
    if (next === undefined) return undefined
    return {
      'wechatpay-timestamp': String(pool.timestamp),
      'wechatpay-nonce': next.nonce,
      'wechatpay-signature': next.signature,
      'wechatpay-serial': serial,
      'wechatpay-signature-type': AUTH_SCHEME
    }
  }
}
