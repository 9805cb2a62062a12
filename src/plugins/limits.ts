import rateLimit from '@fastify/rate-limit'
import underPressure from '@fastify/under-pressure'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { gatewayError } from '../errors.js'

export interface LimitsOptions {
  /** Per caller, per window; 0 turns it off. */
  rateLimit: { max: number, windowMs: number }
  /** Event-loop delay above which every request is shed with 503; 0 turns it off. */
  maxEventLoopDelayMs: number
}

/** Load shedding for the whole app. Per-caller rate limits are registered by the operation routes (`rateLimiter`). */
async function limits (app: FastifyInstance, opts: LimitsOptions): Promise<void> {
  if (opts.maxEventLoopDelayMs > 0) {
    await app.register(underPressure, {
      maxEventLoopDelay: opts.maxEventLoopDelayMs,
      pressureHandler: (_request, _reply, type) => {
        throw gatewayError('OVERLOADED', `The gateway is overloaded (${type}); retry shortly`, {}, { 'retry-after': '1' })
      }
    })
  }
}

/**
 * Per-caller rate limits, for an encapsulated route scope. Runs as a preHandler, after authentication, so the limit
 * is the caller's (by name), and shared across replicas through Redis when it is configured.
 */
export async function rateLimiter (app: FastifyInstance, opts: LimitsOptions['rateLimit']): Promise<void> {
  if (opts.max === 0) return
  await app.register(rateLimit, {
    max: opts.max,
    timeWindow: opts.windowMs,
    hook: 'preHandler',
    keyGenerator: request => request.caller ?? request.ip,
    // Redis away: limits are not enforced (fail open, README "Redis outages"); load shedding still bounds the work.
    ...(app.redis !== null && { redis: app.redis, nameSpace: 'wechatpay-gateway:rate-limit:', skipOnError: true }),
    errorResponseBuilder: (request, context) => gatewayError('RATE_LIMITED',
      `Caller ${request.caller ?? request.ip} is over ${context.max} requests per ${opts.windowMs} ms; retry in ${context.after}`)
  })
}

export default fp(limits, { name: 'limits', fastify: '5.x' })
