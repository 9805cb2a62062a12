import { pino, type DestinationStream, type Logger } from 'pino'

/**
 * Paths pino censors wherever they appear (defense in depth: the gateway never logs headers or key material on
 * purpose). Caller tokens travel in `authorization`; keys live only in KeyObjects, which print as `KeyObject {}`.
 */
export const REDACT_PATHS = [
  'authorization', '*.authorization', 'req.headers.authorization', 'req.headers["x-api-key"]',
  'headers.authorization', 'token', '*.token', 'apiv3Key', '*.apiv3Key', 'privateKey', '*.privateKey'
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
