import { hasZodFastifySchemaValidationErrors } from '@fastify/type-provider-zod'
import type { FastifyError, FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { z } from 'zod'
import { GatewayError, gatewayError, validationError, type FieldIssue, type GatewayCode } from '../errors.js'

/** The error body of every non-2xx answer, the gateway's and WeChat Pay's alike. */
export const ErrorBody = z.object({
  code: z.string().describe('机器可读的错误码 / Machine-readable code (the gateway\'s own, or WeChat Pay\'s)')
    .meta({ example: 'VALIDATION_ERROR' }),
  message: z.string().describe('错误说明 / Human-readable explanation')
    .meta({ example: 'Invalid request: body/estimated_amount/amount: must be a positive integer number of fen (分): 1.00 CNY is 100' }),
  detail: z.record(z.string(), z.unknown())
    .describe('详情：outcome（not_executed | refused | unknown）、出错字段、WeChat Pay 的 detail / Details: `outcome` (not_executed: not carried out, send again; refused: WeChat Pay refused it; unknown: it may have been carried out, check first), the offending fields, WeChat Pay\'s detail and `upstream_status`')
    .meta({ example: { location: 'body', field: '/estimated_amount/amount', issue: 'must be a positive integer number of fen (分): 1.00 CNY is 100', errors: [{ location: 'body', field: '/estimated_amount/amount', issue: 'must be a positive integer number of fen (分): 1.00 CNY is 100' }], outcome: 'not_executed' } })
}).meta({ id: 'Error' })

/** Fastify's own 4xx errors, given stable codes that do not expose framework internals. */
const FASTIFY_CODES: Record<string, GatewayCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'BAD_REQUEST',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'INVALID_JSON',
  FST_ERR_CTP_INVALID_JSON_BODY: 'INVALID_JSON'
}
const STATUS_CODES: Record<number, GatewayCode> = { 404: 'ROUTE_NOT_FOUND', 405: 'METHOD_NOT_ALLOWED', 408: 'REQUEST_TIMEOUT', 429: 'RATE_LIMITED', 431: 'HEADERS_TOO_LARGE' }

function fieldIssues (err: FastifyError): FieldIssue[] {
  const location = (err.validationContext ?? 'body') as FieldIssue['location']
  return (err.validation ?? []).flatMap(v => {
    const keys = (v.params as { keys?: string[] }).keys
    const base = v.instancePath === '/' ? '' : v.instancePath
    // An unknown key is named as its own field, so the caller sees which one to remove.
    if (v.keyword === 'unrecognized_keys' && keys !== undefined) {
      return keys.map(key => ({ location, field: `${base}/${key}`, issue: 'unknown field' }))
    }
    return [{ location, field: v.instancePath, issue: v.message ?? 'invalid' }]
  })
}

/**
 * Any error as the gateway's error. `sent` says whether the call may have reached WeChat Pay, which decides the
 * outcome of an unexpected fault.
 */
export function toGatewayError (err: FastifyError | GatewayError, sent = false, contentType?: string): GatewayError {
  if (err instanceof GatewayError) return err
  if (hasZodFastifySchemaValidationErrors(err)) return validationError(fieldIssues(err))
  const known = err.code !== undefined ? FASTIFY_CODES[err.code] : undefined
  if (known === 'UNSUPPORTED_MEDIA_TYPE') {
    return gatewayError(known, `Content-Type ${JSON.stringify(contentType ?? '').slice(0, 100)} is not supported: send the body as Content-Type: application/json`)
  }
  if (known !== undefined) return gatewayError(known, err.message)
  if (err instanceof SyntaxError && err.statusCode === 400) return gatewayError('INVALID_JSON', `Body is not valid JSON: ${err.message}`)
  const status = err.statusCode ?? 500
  if (status >= 400 && status < 500) return gatewayError(STATUS_CODES[status] ?? 'BAD_REQUEST', err.message)
  return gatewayError('INTERNAL_ERROR', 'Internal error of the gateway; the logs have the details under this x-request-id',
    { outcome: sent ? 'unknown' : 'not_executed' })
}

async function errors (app: FastifyInstance): Promise<void> {
  app.setErrorHandler<FastifyError | GatewayError>((err, request, reply) => {
    const error = toGatewayError(err, request.upstream?.sent === true, request.headers['content-type'])
    if (error.code === 'INTERNAL_ERROR') request.log.error({ err }, 'unexpected error')
    else if (error.statusCode >= 500) request.log.warn({ code: error.code, detail: error.detail }, error.message)
    if (error.headers !== undefined) void reply.headers(error.headers)
    // Refused before its body was read (e.g. 401 in onRequest): close rather than wait for the rest of it.
    if (!request.raw.complete) void reply.header('connection', 'close')
    return reply.code(error.statusCode).send(error.toJSON())
  })
  app.setNotFoundHandler((request, reply) => {
    return reply.code(404).send(gatewayError('ROUTE_NOT_FOUND', `No route ${request.method} ${request.url.split('?')[0] ?? ''}`).toJSON())
  })
}

export default fp(errors, { name: 'errors', fastify: '5.x' })
