import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { gatewayError, type GatewayCode } from '../errors.js'

/**
 * What one client can hold: the connections it opens, and how long a request may take to arrive. Node's own
 * refusals (a request that did not arrive in time, headers too large, bytes that are not HTTP) are answered in the
 * gateway's error shape, and never instead of the true answer of a request already being handled.
 */

export interface ConnectionLimits {
  /** Connections open at once, in all (Node refuses more). */
  maxConnections: number
  /** Connections open at once from one client address; 0: no limit (e.g. behind a proxy that funnels all callers). */
  maxPerAddress: number
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
  // Never more connections than open files allow: running out of them takes the whole process down.
  const files = openFileLimit()
  const ceiling = files === undefined ? opts.maxConnections : Math.max(16, files - RESERVED_FILES)
  if (opts.maxConnections > ceiling) {
    app.log.warn(`HTTP_MAX_CONNECTIONS is ${opts.maxConnections} but the process may open only ${files ?? '?'} files: connections are capped at ${ceiling} (raise the open-file limit, e.g. ulimit -n, to allow more)`)
  }
  app.server.maxConnections = Math.min(opts.maxConnections, ceiling)
  if (opts.maxPerAddress === 0) return
  const open = new Map<string, number>()
  app.server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? ''
    const count = (open.get(address) ?? 0) + 1
    if (count > opts.maxPerAddress) {
      socket.destroy()
      return
    }
    open.set(address, count)
    socket.once('close', () => {
      const left = (open.get(address) ?? 1) - 1
      if (left === 0) open.delete(address)
      else open.set(address, left)
    })
  })
}

export default fp(connections, { name: 'connections', fastify: '5.x' })
