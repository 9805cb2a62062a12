import type { FastifyPluginAsyncZod } from '@fastify/type-provider-zod'
import { z } from 'zod'

/** Liveness: the process answers. Readiness lives with the things it depends on. */
const health: FastifyPluginAsyncZod = async (app) => {
  app.get('/healthz', {
    schema: { hide: true, response: { 200: z.object({ status: z.literal('ok') }) } },
    logLevel: 'warn'
  }, async () => ({ status: 'ok' as const }))
}

export default health
