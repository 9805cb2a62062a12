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

/** The connection's options: fail fast, never queue, never resend. */
export function redisClient (url: string, commandTimeout: number): Redis {
  return new Redis(url, {
    connectTimeout: 2000,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    commandTimeout,
    // A command whose connection was lost has failed for its caller: sending it again on the next connection would
    // run it behind the caller's back (a claim would then read as another caller's, a nonce as a replay).
    autoResendUnfulfilledCommands: false,
    // A peer that vanished without closing (a host gone) is noticed in seconds, not hours.
    keepAlive: 10_000
  })
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
  const commandTimeout = opts.commandTimeoutMs ?? 1000
  const client = redisClient(opts.url, commandTimeout)
  // One line when the connection is lost and one when it is back, not one per reconnect attempt.
  let down = false
  const lost = (reason: string, what: string): void => {
    if (down) return
    down = true
    app.log.error({ redis: address, reason },
      `Redis (REDIS_URL) at ${address} ${what}: calls with an Idempotency-Key get 503 until it is back, rate limits are not enforced, answer nonces are checked in this replica's memory, and /readyz is 503. Check that Redis runs and that REDIS_URL is right`)
  }
  client.on('error', err => { lost(err.message, 'cannot be reached') })
  client.on('ready', () => {
    if (down) app.log.info({ redis: address }, `Redis at ${address} is reachable again`)
    down = false
  })
  // A Redis that hangs with its connection open is not "gone" for the client, and every command sent meanwhile
  // waits in its queue until it times out. A PING a second notices; a new connection drops that queue, and until
  // Redis answers its ready check, commands are refused at once instead of queued.
  const watchdog = setInterval(() => {
    if (client.status !== 'ready') return
    client.ping().catch((err: Error) => {
      if (client.status !== 'ready' || !/timed out/i.test(err.message)) return
      lost(err.message, `does not answer within ${commandTimeout} ms (REDIS_COMMAND_TIMEOUT_MS)`)
      client.disconnect(true)
    })
  }, Math.max(1000, commandTimeout))
  watchdog.unref()
  app.decorate('redis', client)
  app.addHook('onClose', async () => {
    clearInterval(watchdog)
    client.disconnect()
  })
}

export default fp(redis, { name: 'redis', fastify: '5.x' })
