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

**Errors** all have the shape \`{code, message, detail}\`, and \`detail.outcome\` says what happened to the call:
\`not_executed\` (not carried out: send it again, the same \`Idempotency-Key\` included), \`refused\` (WeChat Pay refused it:
fix the request), \`unknown\` (it may have been carried out: check first, e.g. query the order). The gateway's own
codes (\`VALIDATION_ERROR\` 400 with each bad field in \`detail.errors\`, \`UNAUTHORIZED\` 401, \`FORBIDDEN\` 403,
\`RATE_LIMITED\` 429, \`OVERLOADED\` 503, \`UPSTREAM_UNAVAILABLE\` 502, \`UPSTREAM_TIMEOUT\` 504, ...) are listed under
each route's responses. WeChat Pay's verified errors keep WeChat's code, with \`detail.upstream_status\`: its 4xx keep
their status (\`refused\`), its 429 and 5xx say "not done" (\`not_executed\`; 5xx answered as 502), and its
\`SIGN_ERROR\` is 502 (the gateway's fault, never the caller's).

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
