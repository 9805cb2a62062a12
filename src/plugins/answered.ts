import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'

type Done = (request: FastifyRequest, reply: FastifyReply, callerGone: boolean) => void

/** One hook and one listener per request, however many parts of the gateway wait for the answer. */
const waiting = new WeakMap<FastifyInstance, Done[]>()

/**
 * Runs `done` once per request, when its answer is out: after the answer was written, or, when the caller has
 * left, as soon as the answer is ready. Fastify's `onResponse` never fires for a caller that hung up, yet a call
 * that reached WeChat Pay must still be audited and counted.
 */
export function whenAnswered (app: FastifyInstance, done: Done): void {
  const callbacks = waiting.get(app)
  if (callbacks !== undefined) {
    callbacks.push(done)
    return
  }
  const all: Done[] = [done]
  waiting.set(app, all)
  const run = (request: FastifyRequest, reply: FastifyReply, callerGone: boolean): void => { for (const callback of all) callback(request, reply, callerGone) }
  app.addHook('onSend', async (request, reply, payload) => {
    const res = reply.raw
    if (res.destroyed) run(request, reply, true)
    else res.once('close', () => { run(request, reply, !res.writableFinished) })
    return payload
  })
}
