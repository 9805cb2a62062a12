import type { FastifyPluginAsyncZod } from '@fastify/type-provider-zod'
import { z } from 'zod'

const Readiness = z.object({
  status: z.enum(['ready', 'not_ready']),
  problems: z.array(z.string()),
  merchants: z.record(z.string(), z.object({ usable: z.boolean(), problems: z.array(z.string()) }))
})

/**
 * Liveness: the process answers. Readiness: the shared store answering, not shutting down, and at least one merchant
 * profile usable. Each profile's own problems are listed under `merchants`: one merchant's trouble (certificates
 * not fresh, no valid key) does not take the others out of service; its calls get MERCHANT_UNAVAILABLE.
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
    const problems: string[] = []
    if (app.redis !== null) {
      // Connected is not enough: a hung Redis keeps its connection open. A PING bounded by the command timeout tells.
      if (app.redis.status !== 'ready') problems.push(`redis is ${app.redis.status}`)
      else if (!await app.redis.ping().then(() => true, () => false)) problems.push('redis does not answer')
    }
    if (app.lifecycle.state() !== 'serving') problems.push('shutting down')
    const merchants = Object.fromEntries(Object.entries(app.merchantStatus()).map(([name, s]) => [name, { usable: s.usable, problems: s.problems }]))
    if (!Object.values(merchants).some(m => m.usable)) problems.push('no merchant profile can be used')
    return reply.code(problems.length === 0 ? 200 : 503).send({ status: problems.length === 0 ? 'ready' : 'not_ready', problems, merchants })
  })
}

export default health
