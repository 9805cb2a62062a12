/**
 * Every error the gateway answers with has one shape, `{ code, message, detail? }`, the same as WeChat Pay's own.
 * Codes of the gateway itself are defined here, once; codes passed through from WeChat Pay keep WeChat's name.
 */
export interface ErrorDetail {
  [key: string]: unknown
}

export class GatewayError extends Error {
  readonly statusCode: number
  readonly code: string
  readonly detail: ErrorDetail | undefined
  /** Extra response headers (e.g. `Retry-After`, `WWW-Authenticate`). */
  readonly headers: Record<string, string> | undefined

  constructor (statusCode: number, code: string, message: string, detail?: ErrorDetail, headers?: Record<string, string>) {
    super(message)
    this.name = 'GatewayError'
    this.statusCode = statusCode
    this.code = code
    this.detail = detail
    this.headers = headers
  }

  toJSON (): { code: string, message: string, detail?: ErrorDetail } {
    return this.detail === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, detail: this.detail }
  }
}

export interface FieldIssue {
  location: 'body' | 'params' | 'querystring' | 'headers'
  /** JSON Pointer into the location, e.g. `/estimated_amount/amount`. */
  field: string
  issue: string
}

/** At most this many fields are named, each cut to a sane length: a refusal is never much larger than the request. */
const MAX_ISSUES = 20
const clip = (text: string): string => text.length > 100 ? `${text.slice(0, 99)}…` : text

export function validationError (all: FieldIssue[]): GatewayError {
  const issues = all.slice(0, MAX_ISSUES).map(i => ({ location: i.location, field: clip(i.field), issue: clip(i.issue) }))
  const more = all.length - issues.length
  const list = issues.map(i => `${i.location}${i.field === '/' ? '' : i.field}: ${i.issue}`).join('; ') + (more > 0 ? `; and ${more} more` : '')
  const [first] = issues
  return new GatewayError(400, 'VALIDATION_ERROR', `Invalid request: ${list}`, { ...first, errors: issues, ...(more > 0 && { more }) })
}

/** What a failed upstream call means for the caller: was the operation carried out at WeChat Pay? */
export type Outcome = 'not_executed' | 'unknown'

export const upstreamError = {
  /** `not_executed` when the connection never opened; a reset after sending leaves the outcome unknown. */
  unavailable: (why: string, outcome: Outcome) => new GatewayError(502, 'UPSTREAM_UNAVAILABLE',
    `WeChat Pay could not be reached: ${why}`, { outcome }),
  timeout: (ms: number) => new GatewayError(504, 'UPSTREAM_TIMEOUT',
    `WeChat Pay did not answer within ${ms} ms; the operation may or may not have been carried out`,
    { outcome: 'unknown' satisfies Outcome }),
  signatureInvalid: (why: string, extra?: ErrorDetail) => new GatewayError(502, 'UPSTREAM_SIGNATURE_INVALID',
    `The answer from WeChat Pay failed signature verification (${why}); its outcome is unknown`,
    { outcome: 'unknown' satisfies Outcome, reason: why, ...extra }),
  badResponse: (why: string, outcome: Outcome = 'unknown') => new GatewayError(502, 'UPSTREAM_BAD_RESPONSE',
    `WeChat Pay answered in an unexpected way: ${why}`, { outcome })
}
