import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from '@fastify/type-provider-zod'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyReply } from 'fastify'
import type { Dispatcher } from 'undici'
import { validationError } from './errors.js'
import { IDEMPOTENCY_CALL_MARGIN_MS, type AppConfig } from './config.js'
import { whenAnswered } from './plugins/answered.js'
import auth from './plugins/auth.js'
import connections, { serverOptions } from './plugins/connections.js'
import merchants, { type MerchantsOptions } from './plugins/merchants.js'
import errors from './plugins/errors.js'
import idempotency, { type IdempotencyOptions } from './plugins/idempotency.js'
import lifecycle from './plugins/lifecycle.js'
import limits from './plugins/limits.js'
import metrics from './plugins/metrics.js'
import notifications from './plugins/notifications.js'
import redis from './plugins/redis.js'
import swagger from './plugins/swagger.js'
import type { Tracing } from './telemetry.js'
import { traceOf, traceparent, type TraceContext } from './trace-context.js'
import health from './routes/health.js'
import notificationRoutes from './routes/notifications.js'
import operationRoutes, { wrongMethods } from './routes/operations.js'

export interface BuildOptions {
  logger: FastifyBaseLogger
  /** Replaces the upstream connection pools (e.g. undici's MockAgent). */
  dispatcher?: Dispatcher
  /** Overrides of the merchants plugin's timings and retry policy (tests). */
  merchants?: Omit<MerchantsOptions, 'merchants' | 'timeoutMs' | 'dispatcher'>
  /** OpenTelemetry, when an OTLP endpoint is configured (telemetry.ts). */
  tracing?: Tracing
  /** Overrides of the idempotency plugin's timings (tests). */
  idempotency?: Partial<Pick<IdempotencyOptions, 'callMs' | 'recordRetriesMs'>>
  /** How often the Redis relay looks for deliveries to retry (tests). */
  notifyPollMs?: number
}

/** Bodies of the three operations are a few hundred bytes; anything near this limit is not a real call. */
export const BODY_LIMIT = 16 * 1024
const MAX_PARAM_LENGTH = 512
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/** Builds the gateway. Never listens: `server.ts` does, tests use `inject()` or their own listen. */
export async function buildApp (config: AppConfig, options: BuildOptions) {
  const traces = new WeakMap<IncomingMessage, TraceContext>()
  const app = Fastify({
    loggerInstance: options.logger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT,
    // A request (headers and body) must arrive in time; idle keep-alive connections are closed after a while.
    ...serverOptions(config.http),
    // Calls arriving while the gateway closes are answered by the lifecycle plugin, in the gateway's shape.
    return503OnClosing: false,
    // Every log line of a request carries its trace id (a caller's traceparent continued, or a new trace).
    childLoggerFactory (logger, bindings, opts, req) {
      const trace = traceOf(req)
      traces.set(req, trace)
      return logger.child({ ...bindings, traceId: trace.traceId }, opts)
    },
    // Accept the caller's request id when it is safe to log; otherwise make one.
    genReqId: req => {
      const given = req.headers['x-request-id']
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
    },
    // Long enough that an over-long id is refused by its schema, naming the field, after authentication.
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // The router's own refusals (bad percent-encoding, absurdly long ids) in the gateway's shape, with a request id.
    frameworkErrors: (error, request, reply) => {
      const issue = error.code === 'FST_ERR_MAX_PARAM_LENGTH'
        ? `a path parameter is longer than ${MAX_PARAM_LENGTH} characters`
        : 'the path is not valid percent-encoding'
      void (reply as unknown as FastifyReply).header('x-request-id', request.id).code(400).send(validationError([{ location: 'params', field: '/', issue }]).toJSON())
    }
  }).withTypeProvider<ZodTypeProvider>()

  app.setValidatorCompiler(validatorCompiler)
  app.setSerializerCompiler(serializerCompiler)
  // JSON only: a text/plain body is refused with 415 instead of failing validation later.
  app.removeContentTypeParser('text/plain')

  if (options.tracing !== undefined) await app.register(options.tracing.plugin)
  const { tracing } = options
  app.addHook('onRequest', async (request, reply) => {
    void reply.header('x-request-id', request.id)
    const trace = traces.get(request.raw)
    if (trace !== undefined) void reply.header('traceparent', traceparent(trace, tracing?.spanId(request)))
    const given = request.headers['x-request-id']
    if (given !== undefined && given !== request.id) {
      request.log.warn({ given: JSON.stringify(given).slice(0, 200) }, 'x-request-id ignored: it must be 1-128 of A-Z a-z 0-9 . _ : -; this request\'s id is reqId')
    }
  })
  // One line per request, with what happened upstream (the audit trail of an operation), even if the caller left.
  whenAnswered(app, (request, reply, callerGone) => {
    const operation = request.routeOptions.config.operation
    const line = {
      method: request.method,
      url: request.routeOptions.url ?? request.url.split('?')[0],
      status: reply.statusCode,
      ms: Math.round(reply.elapsedTime * 10) / 10,
      client: request.ip,
      ...(callerGone && { callerGone }),
      ...(operation !== undefined && {
        caller: request.caller,
        merchant: request.profile?.name,
        operation,
        params: request.params,
        // A query names its order or contract in the query string (routes/operations.ts: only once validated).
        ...(request.auditQuery !== null && { query: request.auditQuery }),
        idempotencyKey: request.headers['idempotency-key'],
        replayed: reply.getHeader('idempotent-replayed') === 'true',
        upstream: request.upstream
      })
    }
    if (operation !== undefined) request.log.info(line, 'operation')
    else request.log.debug(line, 'request')
  })

  await app.register(errors)
  await app.register(lifecycle)
  await app.register(connections, { maxConnections: config.http.maxConnections, maxPerAddress: config.http.maxConnectionsPerAddress })
  await app.register(metrics, { expose: config.metrics, callers: config.auth.tokens.map(t => t.name) })
  await app.register(limits, { rateLimit: config.rateLimit, maxEventLoopDelayMs: config.maxEventLoopDelayMs })
  if (config.docs) await app.register(swagger, { ui: true })
  await app.register(redis, { url: config.redisUrl, commandTimeoutMs: config.redisCommandTimeoutMs })
  await app.register(merchants, {
    ...options.merchants,
    merchants: config.merchants,
    timeoutMs: config.upstream.timeoutMs,
    ...(options.dispatcher !== undefined && { dispatcher: options.dispatcher })
  })
  await app.register(auth, config.auth)
  // A duplicate waits for the first call's answer until that call has certainly ended: its longest, and a margin.
  await app.register(idempotency, { ttlMs: config.idempotencyTtlMs, callMs: app.wechat.maxCallMs + IDEMPOTENCY_CALL_MARGIN_MS, memory: config.idempotencyMemory, ...options.idempotency })
  await app.register(notifications, {
    ...config.notify,
    http: config.http,
    ...(options.notifyPollMs !== undefined && { pollMs: options.notifyPollMs })
  })
  await app.register(health)
  await app.register(operationRoutes, { rateLimit: config.rateLimit })
  await app.register(notificationRoutes)
  await app.register(wrongMethods)
  return app
}
