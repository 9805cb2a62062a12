import type { IncomingMessage } from 'node:http'
import { randomHex } from './random.js'

/**
 * W3C trace context (https://www.w3.org/TR/trace-context/): a caller's `traceparent` is continued, otherwise a
 * trace is started, so that every request has a trace id for its log lines and its answer. The header is
 * normalised on the request itself, so that OpenTelemetry, when it is on, continues the very same trace.
 * It is not passed on to WeChat Pay (README, "Facts we were unsure of").
 */

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/
const ZEROS = /^0+$/

export interface TraceContext {
  traceId: string
  /** The caller's span, when it sent one. */
  parentId?: string
  flags: string
}

/** The request's trace: continued from a valid `traceparent`, or new. */
export function traceOf (req: IncomingMessage): TraceContext {
  const header = req.headers.traceparent
  const match = typeof header === 'string' ? TRACEPARENT.exec(header.trim().toLowerCase()) : null
  if (match !== null && !ZEROS.test(match[1] as string) && !ZEROS.test(match[2] as string)) {
    return { traceId: match[1] as string, parentId: match[2] as string, flags: match[3] as string }
  }
  const trace = { traceId: randomHex(16), flags: '01' }
  req.headers.traceparent = `00-${trace.traceId}-${randomHex(8)}-${trace.flags}`
  return trace
}

/** The `traceparent` of the gateway's own span, for the answer. */
export function traceparent (trace: TraceContext, spanId: string = randomHex(8)): string {
  return `00-${trace.traceId}-${spanId}-${trace.flags}`
}
