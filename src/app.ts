import { randomUUID } from 'node:crypto'
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from '@fastify/type-provider-zod'
import Fastify, { LogController, type FastifyBaseLogger } from 'fastify'
import type { Dispatcher } from 'undici'
import type { AppConfig } from './plugins/config.js'
import auth from './plugins/auth.js'
import credentials, { type CredentialsOptions } from './plugins/credentials.js'
import errors from './plugins/errors.js'
import swagger from './plugins/swagger.js'
import health from './routes/health.js'
import operationRoutes from './routes/operations.js'

export interface BuildOptions {
  logger: FastifyBaseLogger
  /** Replaces the upstream connection pools (e.g. undici's MockAgent). */
  dispatcher?: Dispatcher
  /** Overrides of the credentials plugin's timings and retry policy (tests). */
  credentials?: Omit<CredentialsOptions, 'wechat' | 'dispatcher'>
}

/** Bodies of the three operations are a few hundred bytes; anything near this limit is not a real call. */
export const BODY_LIMIT = 16 * 1024
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/** Builds the gateway. Never listens: `server.ts` does, tests use `inject()` or their own listen. */
export async function buildApp (config: AppConfig, options: BuildOptions) {
  const app = Fastify({
    loggerInstance: options.logger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT,
    // Accept the caller's request id when it is safe to log; otherwise make one.
    genReqId: req => {
      const given = req.headers['x-request-id']
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
    },
    routerOptions: { maxParamLength: 128 }
  }).withTypeProvider<ZodTypeProvider>()

  app.setValidatorCompiler(validatorCompiler)
  app.setSerializerCompiler(serializerCompiler)
  // JSON only: a text/plain body is refused with 415 instead of failing validation later.
  app.removeContentTypeParser('text/plain')

  app.addHook('onRequest', async (request, reply) => {
    void reply.header('x-request-id', request.id)
  })
  // One line per request, with what happened upstream (the audit trail of an operation).
  app.addHook('onResponse', async (request, reply) => {
    const operation = request.routeOptions.config.operation
    const line = {
      method: request.method,
      url: request.routeOptions.url ?? request.url.split('?')[0],
      status: reply.statusCode,
      ms: Math.round(reply.elapsedTime * 10) / 10,
      ...(operation !== undefined && { caller: request.caller, operation, params: request.params, upstream: request.upstream })
    }
    if (operation !== undefined) request.log.info(line, 'operation')
    else request.log.debug(line, 'request')
  })

  await app.register(errors)
  if (config.docs) await app.register(swagger, { ui: true })
  await app.register(credentials, {
    ...options.credentials,
    wechat: config.wechat,
    ...(options.dispatcher !== undefined && { dispatcher: options.dispatcher })
  })
  await app.register(auth, config.auth)
  await app.register(health)
  await app.register(operationRoutes)
  return app
}
