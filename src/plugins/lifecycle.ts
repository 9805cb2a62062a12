import { setMaxListeners } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { gatewayError } from '../errors.js'

/**
 * Stopping without a failed call, the way load balancers expect:
 * - `serving`;
 * - `draining` (SIGTERM): `/readyz` is 503 at once, so that traffic moves away, but calls are still taken, and
 *   their answers close the connection so that keep-alive callers reconnect elsewhere;
 * - `closing` (after the drain delay, `stopTaking` or Fastify's close): the listener stops and calls in flight
 *   finish; a call that still arrives (a race with the closing of idle connections), or whose body is still
 *   arriving, gets 503 SHUTTING_DOWN, sent nowhere.
 * `abortCalls` is the last resort when the grace period runs out: calls still in flight end at once and answer
 * with outcome `unknown`, so that no caller is left with an empty reply and every call is audited.
 */
export interface Lifecycle {
  state: () => 'serving' | 'draining' | 'closing'
  drain: () => void
  stopTaking: () => void
  /** Aborted by `abortCalls`: every call to WeChat Pay listens to it. */
  signal: AbortSignal
  abortCalls: () => void
}

declare module 'fastify' {
  interface FastifyInstance {
    lifecycle: Lifecycle
  }
}

async function lifecycle (app: FastifyInstance): Promise<void> {
  let state: ReturnType<Lifecycle['state']> = 'serving'
  const calls = new AbortController()
  // Every waiting Idempotency-Key duplicate listens to it: many at once is normal, not a leak.
  setMaxListeners(0, calls.signal)
  app.decorate('lifecycle', {
    state: () => state,
    drain: () => { if (state === 'serving') state = 'draining' },
    stopTaking: () => { state = 'closing' },
    signal: calls.signal,
    abortCalls: () => { calls.abort() }
  })
  app.addHook('preClose', async () => { state = 'closing' })
  const refuseWhenClosing = async (): Promise<void> => {
    if (state !== 'closing') return
    throw gatewayError('SHUTTING_DOWN', 'This gateway replica is stopping; nothing was sent to WeChat Pay. Send the call again: another replica will take it', {}, { 'retry-after': '1' })
  }
  app.addHook('onRequest', refuseWhenClosing)
  // Again once the body has arrived: a request begun while draining whose body came slowly must not start a call
  // that the grace period, counted for calls taken while draining, might not cover.
  app.addHook('preHandler', refuseWhenClosing)
  // Calls in flight per connection: once not serving, a connection is closed after its last answer, never while a
  // call pipelined behind it is still being handled (that call's answer would be lost with the connection).
  const inFlight = new WeakMap<Socket, number>()
  app.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const { socket } = req
    inFlight.set(socket, (inFlight.get(socket) ?? 0) + 1)
    res.once('close', () => {
      const left = (inFlight.get(socket) ?? 1) - 1
      inFlight.set(socket, left)
      if (left === 0 && state !== 'serving') socket.end()
    })
  })
  app.addHook('onSend', async (request, reply, payload) => {
    if (state !== 'serving' && (inFlight.get(request.raw.socket) ?? 0) <= 1) void reply.header('connection', 'close')
    return payload
  })
}

export default fp(lifecycle, { name: 'lifecycle', fastify: '5.x' })
