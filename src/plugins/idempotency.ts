import { createHash } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { gatewayError } from '../errors.js'
import { MemoryStore, RedisStore, type IdempotencyStore } from './idempotency-store.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Hooks for routes that honour `Idempotency-Key` (preHandler: claim or replay; onSend: record). */
    idempotency: {
      claim: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
      record: (request: FastifyRequest, reply: FastifyReply, payload: unknown) => Promise<unknown>
    }
  }
  interface FastifyRequest {
    idempotency: { key: string, fingerprint: string, token: string } | null
  }
}

export interface IdempotencyOptions {
  ttlMs: number
  /** How long a duplicate waits for the first call with its key: longer than any call can take. */
  waitMs: number
  store?: IdempotencyStore
}

/** Answers kept and replayed: they also come back for a duplicate. */
const REPLAYED_HEADERS = ['content-type', 'wechatpay-request-id']

/** JSON with object keys sorted, so that the same body sent with other key order or spacing matches. */
function canonical (value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`
  if (value !== null && typeof value === 'object') {
    return `{${Object.keys(value).sort().map(k => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`).join(',')}}`
  }
  return JSON.stringify(value)
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex')

/**
 * Whether an answer may be replayed. Kept: success, WeChat Pay's refusals, and unknown outcomes (repeating those
 * could do the operation twice). Not kept: answers that say the call did not happen (429, WeChat's 5xx,
 * connections that never opened), so that a retry with the same key tries again.
 */
export function replayable (status: number, body: string): boolean {
  if (status < 300) return true
  if (status === 429 || status === 409) return false
  if (status < 500) return true
  try {
    return (JSON.parse(body) as { detail?: { outcome?: string } }).detail?.outcome === 'unknown'
  } catch {
    return false
  }
}

const unavailable = () => gatewayError('IDEMPOTENCY_STORE_UNAVAILABLE', 'The idempotency store cannot be reached; nothing was sent')

async function idempotency (app: FastifyInstance, opts: IdempotencyOptions): Promise<void> {
  const store = opts.store ?? (app.redis !== null ? new RedisStore(app.redis) : new MemoryStore())
  app.addHook('onClose', async () => { await store.close() })
  app.decorateRequest('idempotency', null)

  app.decorate('idempotency', {
    async claim (request: FastifyRequest, reply: FastifyReply): Promise<void> {
      // Its format is checked by the route's header schema.
      const given = request.headers['idempotency-key']
      if (typeof given !== 'string') return
      const operation = request.routeOptions.config.operation ?? ''
      const key = sha256(`${request.caller ?? ''}\n${operation}\n${given}`)
      const fingerprint = sha256(canonical([request.params, request.body]))
      let claim
      try {
        claim = await store.claim(key, fingerprint, opts.waitMs)
      } catch (err) {
        // The driver's words go to the log only: they could name the store's address.
        request.log.error({ err: { message: (err as Error).message } }, 'idempotency store unavailable')
        throw unavailable()
      }
      if (claim.kind === 'conflict') {
        throw gatewayError('IDEMPOTENCY_KEY_REUSED', 'This Idempotency-Key was already used with another request (path or body); use a new key')
      }
      if (claim.kind === 'busy') {
        throw gatewayError('IDEMPOTENCY_IN_PROGRESS', 'A request with this Idempotency-Key is still being processed; retry later')
      }
      if (claim.kind === 'replay') {
        app.metrics.replays.inc({ operation })
        const { status, headers, body } = claim.answer
        void reply.code(status).headers({ ...headers, 'idempotent-replayed': 'true' })
        await reply.send(body === '' ? undefined : body)
        return
      }
      request.idempotency = { key, fingerprint, token: claim.token }
    },

    async record (request: FastifyRequest, reply: FastifyReply, payload: unknown): Promise<unknown> {
      const claimed = request.idempotency
      if (claimed === null) return payload
      request.idempotency = null
      const body = payload === undefined || payload === null ? '' : String(payload)
      try {
        if (replayable(reply.statusCode, body)) {
          const headers = Object.fromEntries(REPLAYED_HEADERS.flatMap(h => {
            const v = reply.getHeader(h)
            return v === undefined ? [] : [[h, String(v)]]
          }))
          await store.complete(claimed.key, claimed.token, claimed.fingerprint, { status: reply.statusCode, headers, body }, opts.ttlMs)
        } else {
          await store.release(claimed.key, claimed.token)
        }
      } catch (err) {
        // The call is done either way; its answer goes out, the key expires by itself.
        request.log.error({ err: { message: (err as Error).message } }, 'could not record the idempotent answer')
      }
      return payload
    }
  })
}

export default fp(idempotency, { name: 'idempotency', fastify: '5.x', dependencies: ['redis', 'metrics'] })
