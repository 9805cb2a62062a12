import { pino, type DestinationStream, type Logger } from 'pino'

/**
 * Paths pino censors (defense in depth: the gateway never logs headers or key material on purpose; keys live only
 * in KeyObjects, which print as `KeyObject {}`). Exact paths, not wildcards: wildcard redaction doubled the cost of
 * every log line (BENCHMARKS.md), for objects the gateway never logs.
 */
export const REDACT_PATHS = [
  'authorization', 'headers.authorization', 'req.headers.authorization', 'request.headers.authorization',
  'token', 'apiv3Key', 'privateKey', 'wechat.apiv3Key', 'wechat.privateKey', 'config.wechat.apiv3Key',
  'secret', 'subscriber.secret'
]

export function createLogger (level: string, stream?: DestinationStream): Logger {
  const options = {
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    // One line per event, JSON, ISO time: what log shippers want. Pretty printing is a pipe away (`| pino-pretty`).
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) }
  }
  return stream === undefined ? pino(options) : pino(options, stream)
}
