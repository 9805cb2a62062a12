/**
 * Every error the gateway answers with has one shape, `{ code, message, detail }`, the same as WeChat Pay's own,
 * and `detail.outcome` says what the caller most needs to know: was the operation carried out at WeChat Pay?
 * The gateway's own codes are listed here, once: the error handler, the OpenAPI document and the README's table
 * (tested against this list) all come from it. Codes passed through from WeChat Pay keep WeChat's name.
 */

/**
 * - `not_executed`: WeChat Pay did not carry it out (it was not sent, or WeChat Pay's verified answer says so and
 *   asks for it to be sent again): sending it again, with the same Idempotency-Key, is safe.
 * - `refused`: WeChat Pay refused it (a verified 4xx): not carried out, and the same request will be refused again.
 * - `unknown`: it may have been carried out. Check (e.g. query the order) before doing it again.
 */
export type Outcome = 'not_executed' | 'refused' | 'unknown'
export const OUTCOMES: readonly Outcome[] = ['not_executed', 'refused', 'unknown']

export interface ErrorDetail {
  outcome: Outcome
  [key: string]: unknown
}

export interface CatalogueEntry {
  status: number
  /** The outcomes this code can carry (the first is the usual one). */
  outcomes: readonly Outcome[]
  /** When it happens, for the README and the OpenAPI document. */
  when: string
}

const entry = (status: number, when: string, ...outcomes: Outcome[]): CatalogueEntry =>
  ({ status, when, outcomes: outcomes.length > 0 ? outcomes : ['not_executed'] })

/** The gateway's own codes. None of them is a code WeChat Pay uses, so a caller can always tell who answered. */
export const GATEWAY_ERRORS = {
  VALIDATION_ERROR: entry(400, 'bad input; each offending field is named in `detail.errors`'),
  INVALID_JSON: entry(400, 'the body is not JSON'),
  BAD_REQUEST: entry(400, 'a malformed HTTP request'),
  UNAUTHORIZED: entry(401, 'no caller token, or an unknown one'),
  FORBIDDEN: entry(403, 'the caller may not use this operation, or this merchant profile'),
  ROUTE_NOT_FOUND: entry(404, 'no such route'),
  NOTIFICATION_NOT_FOUND: entry(404, 'no such notification in the relay\'s log (operator API)'),
  METHOD_NOT_ALLOWED: entry(405, 'an operation or query route asked with another method (`Allow` names it)'),
  REQUEST_TIMEOUT: entry(408, 'the request (headers and body) did not arrive in time'),
  IDEMPOTENCY_IN_PROGRESS: entry(409, 'a call with this Idempotency-Key is still running'),
  IDEMPOTENCY_OUTCOME_UNKNOWN: entry(409, 'the call made with this Idempotency-Key ended without a recorded answer', 'unknown'),
  PAYLOAD_TOO_LARGE: entry(413, 'the body is over 16 KiB'),
  UNSUPPORTED_MEDIA_TYPE: entry(415, 'the body is not `application/json`'),
  IDEMPOTENCY_KEY_REUSED: entry(422, 'this Idempotency-Key was used for another request'),
  RATE_LIMITED: entry(429, 'over the caller\'s rate limit (`Retry-After` says when to retry)'),
  HEADERS_TOO_LARGE: entry(431, 'the request headers are too large'),
  INTERNAL_ERROR: entry(500, 'a fault of the gateway; its log has the details under the `x-request-id`', 'not_executed', 'unknown'),
  UPSTREAM_UNAVAILABLE: entry(502, 'WeChat Pay could not be reached: no connection (`not_executed`), or the connection broke after sending (`unknown`)', 'not_executed', 'unknown'),
  UPSTREAM_SIGNATURE_INVALID: entry(502, 'the answer failed signature verification: bad, stale, replayed, unknown serial, or a `WECHATPAY/SIGNTEST/` probe', 'unknown'),
  UPSTREAM_UNVERIFIED_ERROR: entry(502, 'an error answer without a valid WeChat Pay signature (a proxy may have sent it after forwarding the call); what it said is in `detail.unverified`', 'unknown'),
  UPSTREAM_BAD_RESPONSE: entry(502, 'a verified answer the gateway cannot use (not JSON, too large, an error without WeChat Pay\'s error body, a query\'s answer without a field callers rely on)', 'unknown'),
  UPSTREAM_RETRY_LATER: entry(503, 'WeChat Pay answered 202 (accepted, not processed) to every attempt: send the same request again later'),
  OVERLOADED: entry(503, 'the gateway is shedding load'),
  MERCHANT_UNAVAILABLE: entry(503, 'the merchant profile cannot verify WeChat Pay\'s answers now (no valid key: see `/readyz`)'),
  SHUTTING_DOWN: entry(503, 'the gateway is stopping: another replica will take the call'),
  IDEMPOTENCY_STORE_UNAVAILABLE: entry(503, 'the idempotency store (Redis) cannot be reached'),
  NOTIFICATIONS_STORE_UNAVAILABLE: entry(503, 'the relay\'s store (Redis) cannot be reached (operator API)'),
  IDEMPOTENCY_STORE_FULL: entry(503, 'the in-memory idempotency store is full for this caller: configure `REDIS_URL` or raise `IDEMPOTENCY_MAX_KEYS`'),
  UPSTREAM_TIMEOUT: entry(504, 'WeChat Pay did not answer in time', 'unknown')
} as const satisfies Record<string, CatalogueEntry>

export type GatewayCode = keyof typeof GATEWAY_ERRORS

/**
 * WeChat Pay's documented error codes (docs/wechatpay.md §9). Only these, and the gateway's
 * own, become metric labels: anything else is `OTHER`, so an upstream cannot add a series per answer.
 */
export const WECHAT_CODES: ReadonlySet<string> = new Set([
  'PARAM_ERROR', 'INVALID_REQUEST', 'SIGN_ERROR', 'SYSTEM_ERROR', 'NO_AUTH', 'NOT_FOUND', 'ORDER_NOT_EXIST',
  'RESOURCE_NOT_EXISTS', 'FREQUENCY_LIMITED', 'RATELIMIT_EXCEEDED', 'RATE_LIMITED', 'SERVICE_UNAVAILABLE',
  'ORDER_DONE', 'ORDER_CANCELED', 'INVALID_ORDER_STATE', 'RULE_LIMIT', 'RULELIMIT', 'CONTRACT_NOT_EXIST', 'MCH_NOT_EXISTS',
  'APPID_MCHID_NOT_MATCH', 'ALREADY_EXISTS', 'RESOURCE_ALREADY_EXISTS', 'TRADE_ERROR', 'USER_PAYING', 'ORDER_CLOSED',
  'ACCOUNT_ERROR', 'NOT_ENOUGH', 'OUT_TRADE_NO_USED', 'BANK_ERROR'
])

/** A code as a metric label: `OK`, or one of a fixed set of codes. */
export function codeLabel (code: string): string {
  return code === 'OK' || WECHAT_CODES.has(code) || Object.hasOwn(GATEWAY_ERRORS, code) ? code : 'OTHER'
}

export class GatewayError extends Error {
  readonly statusCode: number
  readonly code: string
  readonly detail: ErrorDetail
  /** Extra response headers (e.g. `Retry-After`, `WWW-Authenticate`). */
  readonly headers: Record<string, string> | undefined

  constructor (statusCode: number, code: string, message: string, detail: ErrorDetail, headers?: Record<string, string>) {
    super(message)
    this.name = 'GatewayError'
    this.statusCode = statusCode
    this.code = code
    this.detail = detail
    this.headers = headers
  }

  get outcome (): Outcome {
    return this.detail.outcome
  }

  toJSON (): { code: string, message: string, detail: ErrorDetail } {
    return { code: this.code, message: this.message, detail: this.detail }
  }
}

/** One of the gateway's own errors; status and usual outcome come from the catalogue. */
export function gatewayError (code: GatewayCode, message: string, detail: Partial<ErrorDetail> = {},
  headers?: Record<string, string>): GatewayError {
  const known: CatalogueEntry = GATEWAY_ERRORS[code]
  return new GatewayError(known.status, code, message, { outcome: known.outcomes[0] as Outcome, ...detail }, headers)
}

export interface FieldIssue {
  location: 'body' | 'params' | 'querystring' | 'headers'
  /** JSON Pointer into the location, e.g. `/estimated_amount/amount`. */
  field: string
  issue: string
}

/** At most this many fields are named, each cut to a sane length: a refusal is never much larger than the request. */
const MAX_ISSUES = 20
const clip = (text: string, max = 300): string => text.length > max ? `${text.slice(0, max - 1)}…` : text

export function validationError (all: FieldIssue[]): GatewayError {
  const issues = all.slice(0, MAX_ISSUES).map(i => ({ location: i.location, field: clip(i.field), issue: clip(i.issue) }))
  const more = all.length - issues.length
  const list = issues.map(i => `${i.location}${i.field === '/' ? '' : i.field}: ${i.issue}`).join('; ') + (more > 0 ? `; and ${more} more` : '')
  const [first] = issues
  return gatewayError('VALIDATION_ERROR', `Invalid request: ${list}`, { ...first, errors: issues, ...(more > 0 && { more }) })
}

export const upstreamError = {
  /** `not_executed` when the connection never opened; a reset after sending leaves the outcome unknown. */
  unavailable: (why: string, outcome: Outcome) => gatewayError('UPSTREAM_UNAVAILABLE',
    `WeChat Pay could not be reached: ${why}`, { outcome }),
  timeout: (ms: number) => gatewayError('UPSTREAM_TIMEOUT',
    `WeChat Pay did not answer within ${ms} ms; the operation may or may not have been carried out`),
  /**
   * A query that got no answer after its retries: timed out (`why` undefined) or unreachable. A query changes
   * nothing at WeChat Pay, so there is nothing to settle: it can simply be asked again.
   */
  readFailed: (why: string | undefined, attempts: number, ms: number, outcome: Outcome) => why === undefined
    ? gatewayError('UPSTREAM_TIMEOUT', `WeChat Pay did not answer the query in time (${attempts} attempt${attempts > 1 ? 's' : ''} in ${Math.round(ms)} ms); a query changes nothing at WeChat Pay: ask again later`)
    : gatewayError('UPSTREAM_UNAVAILABLE', `WeChat Pay could not be reached: ${why} (${attempts} attempt${attempts > 1 ? 's' : ''}); a query changes nothing at WeChat Pay: ask again later`, { outcome }),
  signatureInvalid: (why: string, extra?: Record<string, unknown>) => gatewayError('UPSTREAM_SIGNATURE_INVALID',
    `The answer from WeChat Pay failed signature verification (${why}); its outcome is unknown`, { reason: why, ...extra }),
  badResponse: (why: string) => gatewayError('UPSTREAM_BAD_RESPONSE', `WeChat Pay answered in an unexpected way: ${why}`)
}
