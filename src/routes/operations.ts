import type { FastifyPluginAsyncZod } from '@fastify/type-provider-zod'
import type { FastifyReply } from 'fastify'
import { z } from 'zod'
import { ErrorBody } from '../plugins/errors.js'
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

const errorResponses = {
  400: ErrorBody.describe('VALIDATION_ERROR (each bad field named), INVALID_JSON, or WeChat Pay\'s PARAM_ERROR / INVALID_REQUEST / business codes'),
  401: ErrorBody.describe('UNAUTHORIZED: missing or unknown caller token'),
  403: ErrorBody.describe('FORBIDDEN (this caller may not use this operation), or WeChat Pay\'s NO_AUTH'),
  404: ErrorBody.describe('WeChat Pay\'s not-found codes (e.g. ORDER_NOT_EXIST)'),
  413: ErrorBody.describe('PAYLOAD_TOO_LARGE'),
  415: ErrorBody.describe('UNSUPPORTED_MEDIA_TYPE: send application/json'),
  429: ErrorBody.describe('RATE_LIMITED by the gateway, or WeChat Pay\'s FREQUENCY_LIMITED'),
  502: ErrorBody.describe('UPSTREAM_UNAVAILABLE, UPSTREAM_SIGNATURE_INVALID, UPSTREAM_BAD_RESPONSE, SIGN_ERROR, or WeChat Pay\'s 5xx codes'),
  504: ErrorBody.describe('UPSTREAM_TIMEOUT: the outcome is unknown')
}

function routeSchema (op: Operation) {
  return {
    operationId: op.id,
    summary: op.summary,
    description: op.description,
    tags: op.tags,
    security: [{ bearer: [] }],
    params: op.params,
    body: callerBody(op).meta({ example: op.example.body }),
    response: {
      [op.successStatus]: z.null().describe('WeChat Pay accepted the request (verified answer, no body)'),
      ...errorResponses
    }
  }
}

/** The three operations: validate, fill the merchant's fields, call WeChat Pay, answer with its verified result. */
const operationRoutes: FastifyPluginAsyncZod = async (app) => {
  app.decorateRequest('upstream', null)
  app.addHook('onRequest', app.authenticate)

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
        const result = await app.wechat.call(op, request.params as Record<string, string>, body, trace)
        if (result.requestId !== undefined) void reply.header('wechatpay-request-id', result.requestId)
        void reply.code(result.status)
        return result.body === undefined ? reply.send() : reply.type('application/json').send(result.body)
      }
    })
  }
}

export default operationRoutes
