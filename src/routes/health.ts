import type { FastifyPluginAsyncZod } from '@fastify/type-provider-zod'
import { z } from 'zod'

const Readiness = z.object({ status: z.enum(['ready', 'not_ready']), problems: z.array(z.string()) })

/**
 * Liveness: the process answers. Readiness: credentials loaded, verification keys present (certificates fresh in
 * certificate mode), the shared store reachable, and not shutting down.
 */
const health: FastifyPluginAsyncZod = async (app) => {
  app.get('/healthz', {
    schema: { hide: true, response: { 200: z.object({ status: z.literal('ok') }) } },
    logLevel: 'warn'
  }, async () => ({ status: 'ok' as const }))

  app.get('/readyz', {
    schema: { hide: true, response: { 200: Readiness, 503: Readiness } },
    logLevel: 'warn'
  }, async (_request, reply) => {
    const problems = [...app.keyStatus().problems]
    if (app.redis !== null && app.redis.status !== 'ready') problems.push(`redis is ${app.redis.status}`)
    if (app.lifecycle.state() !== 'serving') problems.push('shutting down')
    return reply.code(problems.length === 0 ? 200 : 503).send({ status: problems.length === 0 ? 'ready' : 'not_ready', problems })
  })
}

export default health
