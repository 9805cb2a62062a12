import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import { jsonSchemaTransform, jsonSchemaTransformObject } from '@fastify/type-provider-zod'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { VERSION } from '../version.js'

export interface SwaggerOptions {
  /** Serve Swagger UI at /docs and the document at /docs/json. */
  ui: boolean
}

const description = `
Internal gateway in front of the WeChat Pay API v3. It signs each call with the merchant key it holds, verifies
WeChat Pay's signed answer, and replies. 内部服务通过本网关调用微信支付，无需接触任何密钥。

**Errors** all have the shape \`{code, message, detail?}\`. WeChat Pay's own 4xx errors keep WeChat's status and code.
The gateway's own codes, none of which reached WeChat Pay: \`VALIDATION_ERROR\` / \`INVALID_JSON\` 400 (each bad field
named in \`detail.errors\`), \`UNAUTHORIZED\` 401, \`FORBIDDEN\` 403, \`IDEMPOTENCY_IN_PROGRESS\` 409,
\`PAYLOAD_TOO_LARGE\` 413, \`UNSUPPORTED_MEDIA_TYPE\` 415, \`IDEMPOTENCY_KEY_REUSED\` 422, \`RATE_LIMITED\` 429,
\`OVERLOADED\` / \`IDEMPOTENCY_STORE_UNAVAILABLE\` 503. Upstream failures: \`UPSTREAM_UNAVAILABLE\` 502
(\`detail.outcome: not_executed\`: safe to retry), \`UPSTREAM_TIMEOUT\` 504, \`UPSTREAM_SIGNATURE_INVALID\` 502 and
\`UPSTREAM_BAD_RESPONSE\` 502 (\`detail.outcome: unknown\`: the operation may have happened, check before repeating),
WeChat's \`SIGN_ERROR\` as 502 (the gateway's fault, never the caller's), WeChat's 5xx codes (\`SYSTEM_ERROR\`...) as 502.

**Idempotency-Key** (optional): the same key and request within 24 h reach WeChat Pay once; repeats get the first
answer with \`Idempotent-Replayed: true\`.

Every answer carries \`x-request-id\` (send your own to correlate logs) and, when WeChat Pay answered,
\`wechatpay-request-id\` (WeChat's \`Request-ID\`, which WeChat Pay support asks for).
`.trim()

/** zod renders `z.null()` as a JSON body that is null; a 204 has no body at all, which swagger writes for `type: 'null'`. */
const noContentFor204: typeof jsonSchemaTransform = input => {
  const output = jsonSchemaTransform(input)
  const responses = output.schema.response as Record<string, { description?: string }> | undefined
  const noContent = responses?.['204']
  if (responses !== undefined && noContent !== undefined) responses['204'] = { type: 'null', description: noContent.description ?? 'No Content' } as never
  return output
}

/** The provider emits an input and an output variant of every registered schema; keep the ones the document uses. */
const referencedSchemasOnly: typeof jsonSchemaTransformObject = input => {
  const output = jsonSchemaTransformObject(input) as { paths?: unknown, components?: { schemas?: Record<string, unknown> } }
  const used = JSON.stringify(output.paths)
  for (const name of Object.keys(output.components?.schemas ?? {})) {
    if (!used.includes(`"#/components/schemas/${name}"`)) delete output.components?.schemas?.[name]
  }
  return output as ReturnType<typeof jsonSchemaTransformObject>
}

async function swaggerPlugin (app: FastifyInstance, opts: SwaggerOptions): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'WeChat Pay v3 gateway', version: VERSION, description },
      tags: [
        { name: 'papay', description: '委托代扣（普通商户）/ Entrusted deduction, direct merchant' },
        { name: 'partner-papay', description: '委托代扣（服务商）/ Entrusted deduction, service provider' },
        { name: 'payscore', description: '微信支付分（服务商）/ PayScore, service provider' }
      ],
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'A caller token from GATEWAY_TOKENS' }
        }
      }
    },
    transform: noContentFor204,
    transformObject: referencedSchemasOnly
  })
  if (opts.ui) await app.register(swaggerUi, { routePrefix: '/docs' })
}

export default fp(swaggerPlugin, { name: 'swagger', fastify: '5.x' })
