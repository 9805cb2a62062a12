import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { ServerResponse } from 'node:http'
import type { Server, Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { gatewayError, type GatewayCode } from '../errors.js'

/**
 * What one client can hold: the connections it opens, and how long a request may take to arrive. Node's own
 * refusals (a request that did not arrive in time, headers too large, bytes that are not HTTP) are answered in the
 * gateway's error shape, and never instead of the true answer of a request already being handled. The same limits
 * apply to every listener of the process (the notification listener too), within one open-file budget.
 */

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Applies these limits to another listener of the process; `share` is the part of the open-file budget it may
     * hold, so that one listener cannot take every connection of the others.
     */
    limitConnections: (server: Server, share?: number) => void
  }
}

export interface ConnectionLimits {
  /** Connections open at once, in all, on each listener (Node refuses more). */
  maxConnections: number
  /** Connections open at once from one client address; 0: no limit (e.g. behind a proxy that funnels all callers). */
  maxPerAddress: number
}

/** How long a request may take to arrive, and an idle connection stay open. */
export interface HttpTimings {
  requestTimeoutMs: number
  keepAliveTimeoutMs: number
}

/**
 * Fastify's server options for these timings, for every listener: a request (headers and body) must arrive within
 * `requestTimeoutMs` (checked every second: with Node's defaults a half-sent request waits a minute or more), idle
 * keep-alive connections are closed after a while, and Node's refusals go through `clientErrorHandler`.
 */
export function serverOptions (http: HttpTimings) {
  return {
    requestTimeout: http.requestTimeoutMs,
    keepAliveTimeout: http.keepAliveTimeoutMs,
    http: { headersTimeout: http.requestTimeoutMs, connectionsCheckingInterval: Math.min(1000, http.requestTimeoutMs) },
    clientErrorHandler
  }
}

/** Files the process needs besides client connections: upstream pools, Redis, key files, logs. */
const RESERVED_FILES = 256

/** The soft limit on open files (Linux), or undefined where it cannot be read. */
export function openFileLimit (read: () => string = () => readFileSync('/proc/self/limits', 'utf8')): number | undefined {
  try {
    const soft = /^Max open files\s+(\d+)/m.exec(read())?.[1]
    return soft === undefined ? undefined : Number(soft)
  } catch {
    return undefined
  }
}

const REFUSALS: Record<string, [GatewayCode, string]> = {
  ERR_HTTP_REQUEST_TIMEOUT: ['REQUEST_TIMEOUT', 'The request did not arrive in time (HTTP_REQUEST_TIMEOUT_MS); nothing was sent to WeChat Pay'],
  HPE_HEADER_OVERFLOW: ['HEADERS_TOO_LARGE', 'The request headers are too large; nothing was sent to WeChat Pay']
}

/**
 * Fastify's `clientErrorHandler`: Node could not read a request. When a complete request on this connection is
 * still being handled (a valid call followed by garbage), it keeps its true answer, and the connection closes
 * after it; otherwise the refusal is answered in the gateway's shape, and the connection closed.
 */
export function clientErrorHandler (err: Error & { code?: string }, socket: Socket): void {
  const pending = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage ?? undefined
  if (pending?.req?.complete === true && !pending.writableEnded) {
    pending.shouldKeepAlive = false
    pending.once('finish', () => socket.end())
    return
  }
  if (socket.writable && pending?.headersSent !== true) {
    const [code, message] = REFUSALS[err.code ?? ''] ?? ['BAD_REQUEST', 'The request is not valid HTTP; nothing was sent to WeChat Pay']
    const error = gatewayError(code, message)
    const body = JSON.stringify(error.toJSON())
    socket.end(`HTTP/1.1 ${error.statusCode} ${code.replaceAll('_', ' ')}\r\ncontent-type: application/json; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${randomUUID()}\r\nconnection: close\r\n\r\n${body}`)
  }
  socket.destroy()
}

async function connections (app: FastifyInstance, opts: ConnectionLimits): Promise<void> {
  // Never more connections than open files allow, on all listeners together: running out of files takes the whole
  // process down.
  const files = openFileLimit()
  const ceiling = files === undefined ? Infinity : Math.max(16, files - RESERVED_FILES)
  if (opts.maxConnections > ceiling) {
    app.log.warn(`HTTP_MAX_CONNECTIONS is ${opts.maxConnections} but the process may open only ${files ?? '?'} files: connections are capped at ${ceiling} for all listeners together (raise the open-file limit, e.g. ulimit -n, to allow more)`)
  }
  let open = 0
  const limit = (server: Server, share = 1): void => {
    server.maxConnections = Math.min(opts.maxConnections, Math.floor(ceiling * share))
    if (ceiling === Infinity && opts.maxPerAddress === 0) return
    const perAddress = new Map<string, number>()
    server.on('connection', (socket: Socket) => {
      const address = socket.remoteAddress ?? ''
      const count = (perAddress.get(address) ?? 0) + 1
      if (open >= ceiling || (opts.maxPerAddress > 0 && count > opts.maxPerAddress)) {
        socket.destroy()
        return
      }
      open++
      perAddress.set(address, count)
      socket.once('close', () => {
        open--
        const left = (perAddress.get(address) ?? 1) - 1
        if (left === 0) perAddress.delete(address)
        else perAddress.set(address, left)
      })
    })
  }
  limit(app.server)
  app.decorate('limitConnections', limit)
}

export default fp(connections, { name: 'connections', fastify: '5.x' })
