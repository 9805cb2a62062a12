import type { FastifyPluginAsyncZod } from '@fastify/type-provider-zod'
import type { FastifyReply } from 'fastify'
import { z } from 'zod'
import { GatewayError } from '../errors.js'
import { ErrorBody } from '../plugins/errors.js'
import { rateLimiter, type LimitsOptions } from '../plugins/limits.js'
import type { CallTrace } from '../wechat/client.js'
import { callerBody, operations, upstreamBody, type Operation } from '../wechat/operations.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The WeChat Pay operation a route mirrors. */
    operation?: string
  }
  interface FastifyRequest {
    /** What happened upstream, for the request's log line. */
    upstream: CallTrace | null
  }
}

/** A documented error answer, with a realistic example for its status. */
const error = (description: string, code: string, message: string, detail?: Record<string, unknown>) =>
  ErrorBody.describe(description).meta({ example: { code, message, ...(detail !== undefined && { detail }) } })

const errorResponses = {
  400: error('VALIDATION_ERROR (each bad field named), INVALID_JSON, or WeChat Pay\'s PARAM_ERROR / INVALID_REQUEST / business codes',
    'VALIDATION_ERROR', 'Invalid request: body/estimated_amount/amount: Too small: expected number to be >0',
    { location: 'body', field: '/estimated_amount/amount', issue: 'Too small: expected number to be >0', errors: [{ location: 'body', field: '/estimated_amount/amount', issue: 'Too small: expected number to be >0' }] }),
  401: error('UNAUTHORIZED: missing or unknown caller token', 'UNAUTHORIZED', 'Unknown caller token'),
  403: error('FORBIDDEN (this caller may not use this operation), or WeChat Pay\'s NO_AUTH', 'NO_AUTH', '商户无权限'),
  404: error('WeChat Pay\'s not-found codes (e.g. ORDER_NOT_EXIST)', 'ORDER_NOT_EXIST', '订单不存在'),
  409: error('IDEMPOTENCY_IN_PROGRESS: a request with this Idempotency-Key is still running', 'IDEMPOTENCY_IN_PROGRESS', 'A request with this Idempotency-Key is still being processed; retry later'),
  413: error('PAYLOAD_TOO_LARGE', 'PAYLOAD_TOO_LARGE', 'Request body is too large'),
  415: error('UNSUPPORTED_MEDIA_TYPE: send application/json', 'UNSUPPORTED_MEDIA_TYPE', 'Unsupported Media Type: text/plain'),
  422: error('IDEMPOTENCY_KEY_REUSED: this Idempotency-Key was used with another request', 'IDEMPOTENCY_KEY_REUSED', 'This Idempotency-Key was already used with another request (path or body); use a new key'),
  429: error('RATE_LIMITED by the gateway (Retry-After set), or WeChat Pay\'s FREQUENCY_LIMITED', 'RATE_LIMITED', 'Caller billing is over 100 requests per 1000 ms; retry in 1 second'),
  502: error('UPSTREAM_UNAVAILABLE, UPSTREAM_SIGNATURE_INVALID, UPSTREAM_BAD_RESPONSE, SIGN_ERROR, or WeChat Pay\'s 5xx codes; see detail.outcome',
    'UPSTREAM_SIGNATURE_INVALID', 'The answer from WeChat Pay failed signature verification (signature probe (WECHATPAY/SIGNTEST/) rejected as WeChat Pay asks); its outcome is unknown',
    { outcome: 'unknown', reason: 'signature probe (WECHATPAY/SIGNTEST/) rejected as WeChat Pay asks' }),
  503: error('OVERLOADED (load shedding) or IDEMPOTENCY_STORE_UNAVAILABLE; nothing was sent', 'OVERLOADED', 'The gateway is overloaded (eventLoopDelay); retry shortly'),
  504: error('UPSTREAM_TIMEOUT: the outcome is unknown', 'UPSTREAM_TIMEOUT', 'WeChat Pay did not answer within 10000 ms; the operation may or may not have been carried out', { outcome: 'unknown' })
}

function routeSchema (op: Operation) {
  return {
    operationId: op.id,
    summary: op.summary,
    description: op.description,
    tags: op.tags,
    security: [{ bearer: [] }],
    headers: z.looseObject({
      'idempotency-key': z.string().regex(/^[\x21-\x7e]{1,255}$/, 'must be 1-255 printable ASCII characters').optional().describe('可选幂等键：相同键与相同请求在 24 小时内只调用微信支付一次，重复请求返回首次结果 / ' +
        'Optional: the same key with the same request within the TTL (24 h) reaches WeChat Pay once; repeats get the first answer (header Idempotent-Replayed: true)')
        .meta({ example: 'order-1234323-collect-1' }),
      'x-request-id': z.string().optional().describe('可选请求ID，用于日志关联 / Optional request id, echoed and logged (A-Z a-z 0-9 . _ : -, up to 128)')
        .meta({ example: 'billing-7f3a9c' })
    }),
    params: op.params,
    body: callerBody(op).meta({ example: op.example.body }),
    response: {
      [op.successStatus]: z.null().describe('WeChat Pay accepted the request (verified answer, no body)'),
      ...errorResponses
    }
  }
}

/**
 * The three operations: authenticate (onRequest, before the body is read), validate, rate-limit per caller and
 * claim the Idempotency-Key (preHandler), fill the merchant's fields, call WeChat Pay, answer with its verified result.
 */
const operationRoutes: FastifyPluginAsyncZod<{ rateLimit: LimitsOptions['rateLimit'] }> = async (app, opts) => {
  app.decorateRequest('upstream', null)
  app.addHook('onRequest', app.authenticate)
  await rateLimiter(app, opts.rateLimit)
  app.addHook('preHandler', app.idempotency.claim)
  app.addHook('onSend', app.idempotency.record)

  for (const op of operations) {
    app.route({
      method: op.method,
      url: op.route,
      schema: routeSchema(op),
      config: { operation: op.id },
      handler: async (request, typedReply) => {
        // The answer is WeChat Pay's verified status and bytes, passed through as they are.
        const reply = typedReply as unknown as FastifyReply
        const body = upstreamBody(op, request.body as Record<string, unknown>, app.merchant)
        const trace: CallTrace = {}
        request.upstream = trace
        const result = await app.wechat.call(op, request.params as Record<string, string>, body, trace).catch((err: GatewayError) => {
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

export default operationRoutes
