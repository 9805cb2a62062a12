import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { Redis } from 'ioredis'

declare module 'fastify' {
  interface FastifyInstance {
    /** Shared state across replicas; null when REDIS_URL is not set (everything stays in memory). */
    redis: Redis | null
  }
}

/** Where REDIS_URL points, for log lines: never its password. */
export function redisAddress (url: string): string {
  const { hostname, port, pathname } = new URL(url)
  return `${hostname}:${port === '' ? '6379' : port}${pathname.length > 1 ? pathname : ''}`
}

/**
 * One Redis connection for idempotency keys, rate limits and answer nonces. It fails fast: while Redis is away a
 * command is refused at once (no offline queue), and while it hangs (a stopped process, a network partition that
 * keeps the connection open) a command fails after `commandTimeoutMs`, so callers get a clear 503 instead of
 * waiting on Redis. The gateway starts without Redis and is not ready until it connects (`/readyz`); it
 * reconnects by itself.
 */
async function redis (app: FastifyInstance, opts: { url?: string | undefined, commandTimeoutMs?: number | undefined }): Promise<void> {
  if (opts.url === undefined) {
    app.decorate('redis', null)
    return
  }
  const address = redisAddress(opts.url)
  const client = new Redis(opts.url, {
    connectTimeout: 2000, maxRetriesPerRequest: 1, enableOfflineQueue: false, commandTimeout: opts.commandTimeoutMs ?? 1000
  })
  // One line when the connection is lost and one when it is back, not one per reconnect attempt.
  let down = false
  client.on('error', err => {
    if (down) return
    down = true
    app.log.error({ redis: address, reason: err.message },
      `Redis (REDIS_URL) at ${address} cannot be reached: calls with an Idempotency-Key get 503 until it is back, rate limits are not enforced, answer nonces are checked in this replica's memory, and /readyz is 503. Check that Redis runs and that REDIS_URL is right`)
  })
  client.on('ready', () => {
    if (down) app.log.info({ redis: address }, `Redis at ${address} is reachable again`)
    down = false
  })
  app.decorate('redis', client)
  app.addHook('onClose', async () => { client.disconnect() })
}

export default fp(redis, { name: 'redis', fastify: '5.x' })
