import { createHash } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { gatewayError, type Outcome } from '../errors.js'
import { MemoryStore, RedisStore, type IdempotencyStore, type MemoryLimits } from './idempotency-store.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Hooks for routes that honour `Idempotency-Key` (preHandler: claim or replay; onSend: record). */
    idempotency: {
      claim: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
      record: (request: FastifyRequest, reply: FastifyReply, payload: unknown) => Promise<unknown>
    }
  }
  interface FastifyRequest {
    idempotency: { key: string, token: string } | null
  }
}

export interface IdempotencyOptions {
  ttlMs: number
  /** By when a call holding a key has certainly ended: the client's longest call and a margin. */
  callMs: number
  /** The in-memory store's caps (no Redis). */
  memory: MemoryLimits
  store?: IdempotencyStore
  /** Delays between attempts to record an answer when the store fails (then the key stays claimed as unknown). */
  recordRetriesMs?: number[]
}

/** Answers kept and replayed: they also come back for a duplicate. */
const REPLAYED_HEADERS = ['content-type', 'wechatpay-request-id', 'retry-after']

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
 * Whether an answer is kept for the key. Kept: success, WeChat Pay's refusals and unknown outcomes (repeating
 * those could do the operation twice). Released: answers whose `detail.outcome` is `not_executed` (429, WeChat's
 * verified 5xx and 202, connections that never opened), so that a retry with the same key tries again.
 */
export function replayable (status: number, body: string): boolean {
  if (status < 300) return true
  try {
    return (JSON.parse(body) as { detail?: { outcome?: Outcome } }).detail?.outcome !== 'not_executed'
  } catch {
    return true
  }
}

const unavailable = () => gatewayError('IDEMPOTENCY_STORE_UNAVAILABLE', 'The idempotency store (Redis) cannot be reached; nothing was sent to WeChat Pay')

async function idempotency (app: FastifyInstance, opts: IdempotencyOptions): Promise<void> {
  const store = opts.store ?? (app.redis !== null ? new RedisStore(app.redis) : new MemoryStore(opts.memory))
  const retriesMs = opts.recordRetriesMs ?? [200, 500, 1000, 2000, 5000]
  // Answers still being written when the store failed: shutdown waits for them.
  const pending = new Set<Promise<void>>()
  app.addHook('onClose', async () => {
    await Promise.all(pending)
    await store.close()
  })
  app.decorateRequest('idempotency', null)

  /**
   * Writes an answer (or a release) before the caller gets it. When the store fails, the answer still goes out and
   * the write is tried again in the background, within bounds; if it never lands, the key stays claimed as unknown.
   */
  async function persist (request: FastifyRequest, write: () => Promise<void>): Promise<void> {
    try {
      return await write()
    } catch (err) {
      request.log.warn({ reason: (err as Error).message }, 'recording an Idempotency-Key answer failed; trying again in the background')
    }
    const retry = async (): Promise<void> => {
      for (const wait of retriesMs) {
        await sleep(wait)
        try {
          return await write()
        } catch {}
      }
      request.log.error({ idempotencyKey: request.headers['idempotency-key'] },
        'the answer of an Idempotency-Key call could not be recorded: the key stays claimed, with an unknown outcome')
    }
    const done = retry().finally(() => pending.delete(done))
    pending.add(done)
  }

  app.decorate('idempotency', {
    async claim (request: FastifyRequest, reply: FastifyReply): Promise<void> {
      // Its format is checked by the route's header schema.
      const given = request.headers['idempotency-key']
      if (typeof given !== 'string') return
      const operation = request.routeOptions.config.operation ?? ''
      const owner = request.caller ?? ''
      // A key belongs to one merchant, one caller and one operation: it never crosses merchants.
      const key = sha256(`${request.profile?.name ?? ''}\n${owner}\n${operation}\n${given}`)
      const fingerprint = sha256(canonical([request.params, request.body]))
      // A waiting duplicate stops waiting when its caller leaves (the response closes before it is sent), or when
      // the gateway must stop at once.
      const left = new AbortController()
      const onClose = (): void => { left.abort() }
      reply.raw.once('close', onClose)
      app.lifecycle.signal.addEventListener('abort', onClose, { once: true })
      let claim
      try {
        claim = await store.claim({ key, fingerprint, owner, ttlMs: opts.ttlMs, callMs: opts.callMs, signal: left.signal })
      } catch (err) {
        if (left.signal.aborted && reply.raw.destroyed) return reply.hijack()
        if (left.signal.aborted) throw gatewayError('IDEMPOTENCY_IN_PROGRESS', 'A request with this Idempotency-Key is still being processed, and this replica is stopping; retry later', {}, { 'retry-after': '1' })
        // The driver's words go to the log only: they could name the store's address.
        request.log.error({ reason: (err as Error).message }, 'the idempotency store cannot be reached (REDIS_URL)')
        throw unavailable()
      } finally {
        reply.raw.removeListener('close', onClose)
        app.lifecycle.signal.removeEventListener('abort', onClose)
      }
      switch (claim.kind) {
        case 'conflict':
          throw gatewayError('IDEMPOTENCY_KEY_REUSED', 'This Idempotency-Key was already used with another request (path or body); use a new key')
        case 'busy':
          throw gatewayError('IDEMPOTENCY_IN_PROGRESS', 'A request with this Idempotency-Key is still being processed; retry later', {}, { 'retry-after': '1' })
        case 'unknown':
          throw gatewayError('IDEMPOTENCY_OUTCOME_UNKNOWN', 'The call made with this Idempotency-Key ended without a recorded answer (the gateway stopped, or its store failed, while it ran): it may have reached WeChat Pay. Check its outcome (e.g. query the order) before doing it again with a new key')
        case 'full':
          app.metrics.idempotencyFull.inc({ caller: app.metrics.callerLabel(owner) })
          throw gatewayError('IDEMPOTENCY_STORE_FULL', 'The in-memory idempotency store holds as many keys as this caller may have; nothing was sent. Configure REDIS_URL (or raise IDEMPOTENCY_MAX_KEYS)', {}, { 'retry-after': '60' })
        case 'replay': {
          app.metrics.replays.inc({ operation, merchant: request.profile?.name ?? 'none' })
          const { status, headers, body } = claim.answer
          void reply.code(status).headers({ ...headers, 'idempotent-replayed': 'true' })
          await reply.send(body === '' ? undefined : body)
          return
        }
        case 'claimed':
          request.idempotency = { key, token: claim.token }
      }
    },

    async record (request: FastifyRequest, reply: FastifyReply, payload: unknown): Promise<unknown> {
      const claimed = request.idempotency
      if (claimed === null) return payload
      request.idempotency = null
      const body = payload === undefined || payload === null ? '' : String(payload)
      if (replayable(reply.statusCode, body)) {
        const headers = Object.fromEntries(REPLAYED_HEADERS.flatMap(h => {
          const v = reply.getHeader(h)
          return v === undefined ? [] : [[h, String(v)]]
        }))
        await persist(request, () => store.complete(claimed.key, claimed.token, { status: reply.statusCode, headers, body }))
      } else {
        await persist(request, () => store.release(claimed.key, claimed.token))
      }
      return payload
    }
  })
}

export default fp(idempotency, { name: 'idempotency', fastify: '5.x', dependencies: ['redis', 'metrics', 'lifecycle'] })
