import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { Redis } from 'ioredis'

declare module 'fastify' {
  interface FastifyInstance {
    /** Shared state across replicas; null when REDIS_URL is not set (everything stays in memory). */
    redis: Redis | null
  }
}

/** One Redis connection for idempotency keys and rate limits; fails fast rather than queueing calls for ever. */
async function redis (app: FastifyInstance, opts: { url?: string | undefined }): Promise<void> {
  if (opts.url === undefined) {
    app.decorate('redis', null)
    return
  }
  const client = new Redis(opts.url, { connectTimeout: 2000, maxRetriesPerRequest: 1, enableOfflineQueue: true, lazyConnect: true })
  client.on('error', err => { app.log.warn({ err: { message: err.message } }, 'redis connection problem') })
  await client.connect()
  app.decorate('redis', client)
  app.addHook('onClose', async () => { await client.quit() })
}

export default fp(redis, { name: 'redis', fastify: '5.x' })
