import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { gatewayError } from '../errors.js'
import type { CallerToken } from '../config.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** onRequest hook for routes that need a known caller: runs before the body is even read. */
    authenticate: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
  }
  interface FastifyRequest {
    /** The caller's name from GATEWAY_TOKENS (`anonymous` when authentication is off). */
    caller: string | null
    /** The merchant profiles the caller may use (undefined: all). */
    callerMerchants: string[] | undefined
  }
}

export interface AuthOptions {
  enabled: boolean
  tokens: CallerToken[]
}

const digest = (value: string): Buffer => createHash('sha256').update(value).digest()

/**
 * Finds the caller of a bearer token. Tokens are compared as SHA-256 digests with `timingSafeEqual`, and every
 * token is compared, so neither the length nor the position of a match shows in the time taken.
 */
export function createAuthenticator (tokens: CallerToken[]): (header: string | undefined) => CallerToken | undefined {
  const known = tokens.map(caller => ({ caller, digest: digest(caller.token) }))
  return header => {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '')
    if (match === null) return undefined
    const presented = digest(match[1] as string)
    let found: CallerToken | undefined
    for (const k of known) if (timingSafeEqual(k.digest, presented)) found = k.caller
    return found
  }
}

const unauthorized = (why: string) =>
  gatewayError('UNAUTHORIZED', why, {}, { 'www-authenticate': 'Bearer realm="wechatpay-gateway"' })

async function auth (app: FastifyInstance, opts: AuthOptions): Promise<void> {
  const identify = createAuthenticator(opts.tokens)
  app.decorateRequest('caller', null)
  app.decorateRequest('callerMerchants', undefined)
  app.decorate('authenticate', async (request: FastifyRequest) => {
    if (!opts.enabled) {
      request.caller = 'anonymous'
      return
    }
    const header = request.headers.authorization
    if (header === undefined) throw unauthorized('Send Authorization: Bearer <token> (a caller token from GATEWAY_TOKENS)')
    const caller = identify(header)
    if (caller === undefined) throw unauthorized('Unknown caller token')
    request.caller = caller.name
    request.callerMerchants = caller.merchants
    const operation = request.routeOptions.config.operation
    if (caller.operations !== undefined && operation !== undefined && !caller.operations.includes(operation)) {
      throw gatewayError('FORBIDDEN', `Caller ${caller.name} may not use ${operation}`)
    }
  })
}

export default fp(auth, { name: 'auth', fastify: '5.x' })
