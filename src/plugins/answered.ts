import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'

/**
 * Runs `done` once per request, when its answer is out: after the answer was written, or, when the caller has
 * left, as soon as the answer is ready. Fastify's `onResponse` never fires for a caller that hung up, yet a call
 * that reached WeChat Pay must still be audited and counted.
 */
export function whenAnswered (app: FastifyInstance, done: (request: FastifyRequest, reply: FastifyReply, callerGone: boolean) => void): void {
  app.addHook('onSend', async (request, reply, payload) => {
    const res = reply.raw
    if (res.destroyed) done(request, reply, true)
    else res.once('close', () => { done(request, reply, !res.writableFinished) })
    return payload
  })
}
