import type { FastifyPluginAsyncZod } from '@fastify/type-provider-zod'
import type { FastifyReply } from 'fastify'
import { z } from 'zod'
import { GATEWAY_ERRORS, gatewayError, type CatalogueEntry, type GatewayCode, type GatewayError } from '../errors.js'
import { ErrorBody } from '../plugins/errors.js'
import { rateLimiter, type LimitsOptions } from '../plugins/limits.js'
import type { CallTrace } from '../wechat/client.js'
import { callerBody, callerQuery, operations, upstreamBody, type Operation, type ReadOperation, type WriteOperation } from '../wechat/operations.js'
import type { MerchantProfile } from '../wechat/profile.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The WeChat Pay operation a route mirrors. */
    operation?: string
  }
  interface FastifyRequest {
    /** What happened upstream, for the request's log line. */
    upstream: CallTrace | null
    /** The merchant profile the call uses (chosen before rate limits and idempotency). */
    profile: MerchantProfile | null
    /**
     * A query's validated query string, for its audit line: the fields that name what was asked (order number or
     * query_id, service, sub-merchant). Only once valid: a refused query string is not repeated in the log.
     */
    auditQuery: Record<string, unknown> | null
  }
}

/** WeChat Pay's own answers, passed through with WeChat's code (its verified 4xx keep their status). */
const WECHAT_PASSED: Record<number, string> = {
  400: 'WeChat Pay\'s refusals (`PARAM_ERROR`, `INVALID_REQUEST`, `ORDER_DONE`...), outcome `refused`',
  403: 'WeChat Pay\'s `NO_AUTH`, outcome `refused`',
  404: 'WeChat Pay\'s `ORDER_NOT_EXIST`..., outcome `refused`',
  429: 'WeChat Pay\'s `FREQUENCY_LIMITED` / `RATELIMIT_EXCEEDED`, outcome `not_executed`',
  502: 'WeChat Pay\'s verified 5xx (`SYSTEM_ERROR`...) and `SIGN_ERROR`, outcome `not_executed`'
}

/** Not the answer of any operation or query: another route, or another method. */
const NOT_ROUTE_ERRORS = new Set<GatewayCode>(['ROUTE_NOT_FOUND', 'METHOD_NOT_ALLOWED', 'NOTIFICATION_NOT_FOUND'])
/** What a query cannot answer: Fastify never reads a GET's body, and a query takes no Idempotency-Key. */
const NOT_FOR_GET = new Set<GatewayCode>(['INVALID_JSON', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE', 'IDEMPOTENCY_IN_PROGRESS',
  'IDEMPOTENCY_OUTCOME_UNKNOWN', 'IDEMPOTENCY_KEY_REUSED', 'IDEMPOTENCY_STORE_UNAVAILABLE', 'IDEMPOTENCY_STORE_FULL'])

/** Every error status a route of `method` can answer, documented from the catalogue (src/errors.ts), with an example. */
function errorResponses (method: Operation['method']) {
  const own = (Object.entries(GATEWAY_ERRORS) as Array<[GatewayCode, CatalogueEntry]>)
    .filter(([code]) => !NOT_ROUTE_ERRORS.has(code) && (method === 'POST' || !NOT_FOR_GET.has(code)))
  const statuses = [...new Set([...own.map(([, e]) => e.status), ...Object.keys(WECHAT_PASSED).map(Number)])].sort((a, b) => a - b)
  return Object.fromEntries(statuses.map(status => {
    const codes = own.filter(([, e]) => e.status === status)
    const lines = codes.map(([code, e]) => `\`${code}\` (${e.outcomes.join(' or ')}): ${e.when}`)
    if (WECHAT_PASSED[status] !== undefined) lines.push(WECHAT_PASSED[status])
    const [code, entry] = codes[0] ?? ['ORDER_NOT_EXIST', { when: '订单不存在', outcomes: ['refused'] }]
    const example = { code, message: entry.when.replaceAll('`', ''), detail: { outcome: entry.outcomes[0] } }
    return [status, ErrorBody.describe(lines.join('; ')).meta({ example })]
  }))
}

const ERROR_RESPONSES = { POST: errorResponses('POST'), GET: errorResponses('GET') }

const requestId = z.string().optional().describe('可选请求ID，用于日志关联 / Optional request id (A-Z a-z 0-9 . _ : -, up to 128), e.g. `billing-7f3a9c`: echoed and on every log line; another value is replaced (and logged)')

function common (op: Operation) {
  return { operationId: op.id, summary: op.summary, description: op.description, tags: op.tags, security: [{ bearer: [] }] }
}

function writeSchema (op: WriteOperation) {
  return {
    ...common(op),
    headers: z.looseObject({
      // No example values: Swagger UI would send them on every "Try it out", making the second try a replay.
      'idempotency-key': z.string().regex(/^[\x21-\x7e]{1,255}$/, 'must be 1-255 printable ASCII characters').optional().describe('可选幂等键：相同键与相同请求在 24 小时内只调用微信支付一次，重复请求返回首次结果 / ' +
        'Optional: one key per business action, e.g. `order-1234323-collect-1`. The same key with the same request within the TTL (24 h) reaches WeChat Pay at most once; ' +
        'repeats get the first answer (header `Idempotent-Replayed: true`). README: "Idempotency-Key".'),
      'x-request-id': requestId
    }),
    params: op.params,
    body: callerBody(op).meta({ example: op.example.body }),
    response: {
      [op.successStatus]: z.null().describe('WeChat Pay accepted the request (verified answer, no body)'),
      ...ERROR_RESPONSES.POST
    }
  }
}

function readSchema (op: ReadOperation) {
  return {
    ...common(op),
    headers: z.looseObject({ 'x-request-id': requestId }),
    params: op.params,
    querystring: callerQuery(op),
    response: {
      [op.successStatus]: op.answer.describe('WeChat Pay\'s verified answer, passed on as it is (fields WeChat adds included)'),
      ...ERROR_RESPONSES.GET
    }
  }
}

/**
 * The operations and queries: authenticate (onRequest, before the body is read), validate, choose the merchant
 * profile, rate-limit per caller, claim the Idempotency-Key (operations only), call WeChat Pay, answer with its
 * verified result.
 */
const operationRoutes: FastifyPluginAsyncZod<{ rateLimit: LimitsOptions['rateLimit'] }> = async (app, opts) => {
  app.decorateRequest('upstream', null)
  app.decorateRequest('profile', null)
  app.decorateRequest('auditQuery', null)
  // An empty body is an empty object: `curl -X POST` with no data works where every field is optional.
  const parseJson = app.getDefaultJsonParser('error', 'error')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body === '') done(null, {})
    else parseJson(request, body as string, done)
  })
  app.addHook('preValidation', async request => { if (request.body === undefined && request.method === 'POST') request.body = {} })
  app.addHook('onRequest', app.authenticate)
  // The merchant profile, from the field that names it: before rate limits and Idempotency-Key claims, which it scopes.
  const byId = new Map(operations.map(op => [op.id, op]))
  app.addHook('preHandler', async request => {
    const op = byId.get(request.routeOptions.config.operation ?? '') as Operation
    const from = op.method === 'GET' ? 'querystring' : 'body'
    // preHandler: the query string passed its schema.
    if (from === 'querystring') request.auditQuery = request.query as Record<string, unknown>
    const value = (from === 'body' ? request.body : request.query) as Record<string, unknown>
    const profile = app.merchants.select({
      type: op.merchant.type,
      field: op.merchant.field,
      location: from,
      value: typeof value[op.merchant.field] === 'string' ? value[op.merchant.field] as string : undefined,
      allowed: request.callerMerchants,
      caller: request.caller ?? 'anonymous'
    })
    if (!profile.usable()) {
      throw gatewayError('MERCHANT_UNAVAILABLE', `Merchant ${profile.name} cannot verify WeChat Pay's answers now (no valid key; see /readyz); nothing was sent`)
    }
    request.profile = profile
  })
  await rateLimiter(app, opts.rateLimit)

  for (const op of operations) {
    const write = op.method === 'POST'
    app.route({
      method: op.method,
      url: op.route,
      // HEAD would be a second way to run a query: 405 (wrongMethods) like every other method.
      exposeHeadRoute: false,
      schema: write ? writeSchema(op) : readSchema(op),
      config: { operation: op.id },
      // Only operations claim an Idempotency-Key: a query changes nothing, so it may run any number of times.
      ...(write && { preHandler: app.idempotency.claim, onSend: app.idempotency.record }),
      handler: async (request, typedReply) => {
        // The answer is WeChat Pay's verified status and bytes, passed through as they are.
        const reply = typedReply as unknown as FastifyReply
        const profile = request.profile as MerchantProfile
        const params = request.params as Record<string, string>
        const input = write
          ? { params, body: upstreamBody(op, request.body as Record<string, unknown>, profile) }
          : { params, query: request.query as Record<string, unknown> }
        const trace: CallTrace = {}
        request.upstream = trace
        const result = await app.wechat.call(profile, op, input, trace, app.lifecycle.signal).catch((err: GatewayError) => {
          trace.error = err.code
          throw err
        })
        if (result.requestId !== undefined) void reply.header('wechatpay-request-id', result.requestId)
        void reply.code(result.status)
        return result.body === undefined ? reply.send() : reply.type('application/json').send(result.body)
      }
    })
  }
}

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const

/** Another method on an operation's path: 405 naming the one it takes, before anything else is looked at. */
export const wrongMethods: FastifyPluginAsyncZod = async (app) => {
  for (const op of operations) {
    app.route({
      method: METHODS.filter(m => m !== op.method),
      exposeHeadRoute: false,
      url: op.route,
      schema: { hide: true },
      handler: async (request, reply) => {
        throw gatewayError('METHOD_NOT_ALLOWED', `${request.method} is not allowed on ${op.route}: use ${op.method}`, {}, { allow: op.method })
      }
    })
  }
}

export default operationRoutes
