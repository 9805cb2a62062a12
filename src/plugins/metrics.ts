import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { codeLabel } from '../errors.js'
import { whenAnswered } from './answered.js'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: {
      registry: Registry
      replays: Counter<'operation' | 'merchant'>
      idempotencyFull: Counter<'caller'>
      /** A caller's name as a label: one of the configured callers, so the number of series stays bounded. */
      callerLabel: (caller: string | null) => string
    }
  }
}

export interface MetricsOptions {
  /** Serve GET /metrics (the numbers are collected either way). */
  expose: boolean
  /** The configured callers' names (labels are limited to them). */
  callers: string[]
}

/**
 * Prometheus metrics, on an app-local registry. Everything about a request is taken from its `onResponse`, in one
 * place: the route, the status, and the upstream trace the operation route left on the request.
 */
async function metrics (app: FastifyInstance, opts: MetricsOptions): Promise<void> {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  const requests = new Counter({ name: 'wechatpay_gateway_requests_total', help: 'Requests answered, by route, method, status and caller (a configured caller, anonymous, unauthenticated or other)', labelNames: ['route', 'method', 'status', 'caller'], registers: [registry] })
  const durations = new Histogram({
    name: 'wechatpay_gateway_request_duration_seconds',
    help: 'Time from a request\'s arrival to its answer, by route and status (the gateway and WeChat Pay together)',
    labelNames: ['route', 'status'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry]
  })
  const upstream = new Histogram({
    name: 'wechatpay_gateway_upstream_duration_seconds',
    help: 'Calls to WeChat Pay (all attempts), by operation, merchant profile and outcome code (WeChat\'s code, the gateway\'s error code, or OK)',
    labelNames: ['operation', 'merchant', 'code'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry]
  })
  const retries = new Counter({ name: 'wechatpay_gateway_upstream_retries_total', help: 'Retries of calls to WeChat Pay, by operation, reason (status or error code) and merchant profile', labelNames: ['operation', 'reason', 'merchant'], registers: [registry] })
  const failovers = new Counter({ name: 'wechatpay_gateway_upstream_failovers_total', help: 'Calls sent to the backup host, by operation and merchant profile', labelNames: ['operation', 'merchant'], registers: [registry] })
  const verificationFailures = new Counter({ name: 'wechatpay_gateway_verification_failures_total', help: 'Answers of WeChat Pay that failed signature verification, by reason and merchant profile', labelNames: ['reason', 'merchant'], registers: [registry] })
  const replays = new Counter({ name: 'wechatpay_gateway_idempotent_replays_total', help: 'Answers replayed for a repeated Idempotency-Key, by operation and merchant profile', labelNames: ['operation', 'merchant'], registers: [registry] })
  new Gauge({ // eslint-disable-line no-new
    name: 'wechatpay_gateway_platform_certificate_expiry_seconds',
    help: 'Seconds until the nearest platform certificate of a merchant expires; only merchants that have platform certificates',
    labelNames: ['merchant'],
    registers: [registry],
    collect () {
      // Reported only where certificates exist: a 0 for a public-key merchant would fire an expiry alert for ever.
      this.reset()
      if (!app.hasDecorator('merchantStatus')) return
      for (const [merchant, status] of Object.entries(app.merchantStatus())) {
        if (status.certificateExpirySeconds !== undefined) this.set({ merchant }, Math.round(status.certificateExpirySeconds))
      }
    }
  })

  const idempotencyFull = new Counter({ name: 'wechatpay_gateway_idempotency_store_full_total', help: 'Calls refused because the in-memory idempotency store was full for their caller', labelNames: ['caller'], registers: [registry] })
  const callers = new Set(opts.callers)
  const callerLabel = (caller: string | null): string => caller === null ? 'unauthenticated' : callers.has(caller) || caller === 'anonymous' ? caller : 'other'

  app.decorate('metrics', { registry, replays, idempotencyFull, callerLabel })

  whenAnswered(app, (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched'
    requests.inc({ route, method: request.method, status: reply.statusCode, caller: callerLabel(request.caller) })
    durations.observe({ route, status: reply.statusCode }, reply.elapsedTime / 1000)
    const trace = request.upstream
    const operation = request.routeOptions.config.operation
    // Only the operation routes leave a trace (the operator API's routes have none).
    if (trace == null || operation === undefined || trace.ms === undefined) return
    // Bounded: the configured profiles' names.
    const merchant = request.profile?.name ?? 'none'
    upstream.observe({ operation, merchant, code: codeLabel(trace.wechatCode ?? trace.error ?? 'OK') }, trace.ms / 1000)
    for (const reason of trace.retried ?? []) retries.inc({ operation, reason, merchant })
    if (trace.failover === true) failovers.inc({ operation, merchant })
    if (trace.verificationFailure !== undefined) verificationFailures.inc({ reason: trace.verificationFailure, merchant })
  })

  if (opts.expose) {
    app.get('/metrics', { schema: { hide: true }, logLevel: 'warn' }, async (_request, reply) => {
      return reply.type(registry.contentType).send(await registry.metrics())
    })
  }
}

export default fp(metrics, { name: 'metrics', fastify: '5.x' })
