import type { Dispatcher } from 'undici'
import { GatewayError, upstreamError } from '../errors.js'
import { NAME, VERSION } from '../version.js'
import { upstreamTarget, type Operation } from './operations.js'
import { signRequest, type MerchantIdentity } from './signer.js'
import { CONNECT_ERRORS, createUpstream, DEFAULT_RETRY_POLICY, retryOptions, type Attempts, type RetryPolicy } from './retry.js'
import { headerValue, isSigned, verifyResponse, type VerificationKeys, type VerificationResult } from './verifier.js'

/** The WeChat Pay v3 client: signs, sends, verifies. It knows nothing of Fastify. */

export interface ClientOptions {
  baseUrl: string
  /** Used only when the primary host cannot be connected to (PROTOCOL.md D.1). */
  backupBaseUrl?: string | undefined
  timeoutMs: number
  retry?: RetryPolicy
  /** The signing identity; read on every call, so a rotated key applies to the next call. */
  merchant: () => MerchantIdentity
  keys: VerificationKeys
  /** Sent as `Wechatpay-Serial` so that WeChat Pay signs its answers with the public key (PROTOCOL.md B.6). */
  publicKeyId?: string | undefined
  /** Injected in tests (e.g. MockAgent); otherwise one keep-alive Pool per host. */
  dispatcher?: Dispatcher
  now?: () => number
}

/** WeChat Pay's error body (PROTOCOL.md C.4); every part is optional in practice. */
export interface WechatErrorBody {
  code?: string
  message?: string
  detail?: Record<string, unknown>
}

export interface UpstreamResult {
  /** The status to give the caller (2xx from WeChat Pay). */
  status: number
  /** The verified JSON body, or undefined for an empty answer (204). */
  body?: Buffer
  requestId?: string
  verification: VerificationResult
}

/** What the gateway learned about a call, for logs and metrics, whether it succeeded or not. */
export interface CallTrace {
  /** Attempts made (1 + retries), and why each retry happened. */
  attempts?: number
  retried?: string[]
  /** The call went to the backup host. */
  failover?: boolean
  upstreamStatus?: number
  wechatCode?: string
  requestId?: string
  verified?: boolean
  verificationFailure?: string
  signMessageLength?: number
  /** Time spent on WeChat Pay, all attempts included. */
  ms?: number
  /** The gateway's error code when the call failed (WeChat's own code is `wechatCode`). */
  error?: string
}

const MAX_BODY_BYTES = 1024 * 1024
const USER_AGENT = `${NAME}/${VERSION} (${process.platform}/${process.arch}) node/${process.versions.node}`

/** A signed request's raw answer, before verification. */
export interface RawAnswer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
  requestId?: string
}

function parseErrorBody (body: Buffer): WechatErrorBody | undefined {
  const parsed = parseJson(body)
  if (parsed === null || typeof parsed !== 'object' || typeof (parsed as WechatErrorBody).code !== 'string') return undefined
  const { code, message, detail } = parsed as Record<string, unknown>
  // Only WeChat's documented shape goes on to the caller: a `detail` that is not an object is dropped.
  return {
    code: code as string,
    ...(typeof message === 'string' && { message }),
    ...(detail !== null && typeof detail === 'object' && !Array.isArray(detail) && { detail: detail as Record<string, unknown> })
  }
}

async function readBody (body: Dispatcher.ResponseData['body']): Promise<Buffer> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of body) {
    size += (chunk as Buffer).length
    if (size > MAX_BODY_BYTES) {
      body.destroy()
      throw upstreamError.badResponse(`the body is larger than ${MAX_BODY_BYTES} bytes`)
    }
    chunks.push(chunk as Buffer)
  }
  return chunks.length === 1 ? chunks[0] as Buffer : Buffer.concat(chunks)
}

export class WechatPayClient {
  private readonly upstreams: Array<{ origin: string, dispatcher: Dispatcher }>
  private readonly headers: Record<string, string>
  private readonly retry: RetryPolicy

  constructor (private readonly options: ClientOptions) {
    const pool = { connections: 128, connectTimeoutMs: Math.min(options.timeoutMs, 5000) }
    const origins = [options.baseUrl, ...(options.backupBaseUrl !== undefined ? [options.backupBaseUrl] : [])]
    this.upstreams = origins.map(origin => ({ origin, dispatcher: options.dispatcher ?? createUpstream(origin, pool) }))
    this.retry = this.bounded(options.retry ?? DEFAULT_RETRY_POLICY)
    // Computed once: every call sends the same fixed headers.
    this.headers = {
      accept: 'application/json',
      'content-type': 'application/json',
      'user-agent': USER_AGENT,
      ...(options.publicKeyId !== undefined && { 'wechatpay-serial': options.publicKeyId })
    }
  }

  /**
   * The longest a call can take, every attempt and failover included: a retry may start until the policy's budget
   * runs out, and its answer then has one timeout for the headers and one for the body. Enforced by an AbortSignal.
   */
  get maxCallMs (): number {
    return this.deadlineMs(this.retry)
  }

  private deadlineMs (policy: RetryPolicy): number {
    return policy.budgetMs + 2 * this.options.timeoutMs
  }

  /** A retry budget is never shorter than one attempt's timeout. */
  private bounded (policy: RetryPolicy): RetryPolicy {
    return { ...policy, budgetMs: Math.max(policy.budgetMs, this.options.timeoutMs) }
  }

  /**
   * Calls one operation. Resolves with a verified 2xx answer; rejects with a GatewayError for everything else
   * (WeChat Pay's own errors keep WeChat's status and code, see `mapErrorAnswer`). `trace` is filled as it goes.
   */
  async call (op: Operation, params: Record<string, string>, body: Record<string, unknown>,
    trace: CallTrace = {}): Promise<UpstreamResult> {
    const answer = await this.send(op.method, upstreamTarget(op, params), JSON.stringify(body), trace, op.retry)
    const { status, headers, body: raw, requestId } = answer

    if (status >= 200 && status < 300) {
      const verification = await this.verify(answer, trace)
      if (!verification.ok) throw withRequestId(upstreamError.signatureInvalid(verification.message), requestId)
      if (raw.length > 0 && parseJson(raw) === undefined) {
        throw withRequestId(upstreamError.badResponse(`a ${status} answer whose body is not JSON`), requestId)
      }
      return { status, ...(raw.length > 0 && { body: raw }), ...(requestId !== undefined && { requestId }), verification }
    }

    // Errors are verified when they are signed: a forged error must not pass for WeChat Pay's word either.
    if (isSigned(headers)) {
      const verification = await this.verify(answer, trace)
      if (!verification.ok) throw withRequestId(upstreamError.signatureInvalid(verification.message), requestId)
    }
    const error = parseErrorBody(raw)
    if (error?.code !== undefined) trace.wechatCode = error.code
    throw withRequestId(mapErrorAnswer(status, error, trace), requestId)
  }

  /**
   * Signs once and sends: retries where it is safe (retry.ts), then the backup host if the primary could not be
   * connected to at all. Transport failures become GatewayErrors; any HTTP answer is returned as it is.
   */
  async send (method: string, target: string, payload: string, trace: CallTrace = {}, policy?: RetryPolicy): Promise<RawAnswer> {
    const retry = policy === undefined ? this.retry : this.bounded(policy)
    const signed = await signRequest(this.options.merchant(), method, target, payload, this.now())
    trace.signMessageLength = Buffer.byteLength(signed.message)
    const attempts: Attempts = { count: 1, retried: [] }
    const startedAt = performance.now()
    const retryStart = Date.now()
    const signal = AbortSignal.timeout(this.deadlineMs(retry))
    let lastError: unknown
    for (const [i, upstream] of this.upstreams.entries()) {
      if (i > 0) trace.failover = true
      try {
        const response = await upstream.dispatcher.request({
          origin: upstream.origin,
          method: method as Dispatcher.HttpMethod,
          path: target,
          headers: { ...this.headers, authorization: signed.authorization },
          ...(payload !== '' && { body: payload }),
          headersTimeout: this.options.timeoutMs,
          bodyTimeout: this.options.timeoutMs,
          retryOptions: retryOptions(retry, attempts, retryStart),
          signal
        } as Dispatcher.RequestOptions)
        const body = await readBody(response.body)
        const requestId = headerValue(response.headers, 'request-id')
        trace.upstreamStatus = response.statusCode
        if (requestId !== undefined) trace.requestId = requestId
        return { status: response.statusCode, headers: response.headers, body, ...(requestId !== undefined && { requestId }) }
      } catch (err) {
        lastError = err
        // Only a call whose connections never opened may go to the backup host: anything later may have reached WeChat Pay.
        if (attempts.answered === true || !CONNECT_ERRORS.has((err as { code?: string }).code ?? '')) break
      } finally {
        trace.ms = Math.round((performance.now() - startedAt) * 10) / 10
        trace.attempts = attempts.count
        if (attempts.retried.length > 0) trace.retried = attempts.retried
      }
    }
    throw this.transportError(lastError, attempts.answered === true)
  }

  /** Verifies an answer with the merchant's keys, or with `keys` (a certificate download checks itself). */
  async verify (answer: RawAnswer, trace: CallTrace, keys: VerificationKeys = this.options.keys): Promise<VerificationResult> {
    const verification = await verifyResponse(keys, answer.headers, answer.body, this.now())
    trace.verified = verification.ok
    if (!verification.ok) trace.verificationFailure = verification.reason
    return verification
  }

  async close (): Promise<void> {
    if (this.options.dispatcher === undefined) await Promise.all(this.upstreams.map(u => u.dispatcher.close()))
  }

  private now (): number {
    return this.options.now?.() ?? Date.now()
  }

  private transportError (err: unknown, answered: boolean): GatewayError {
    if (err instanceof GatewayError) return err
    const { code = '', statusCode } = err as { code?: string, statusCode?: number }
    if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return upstreamError.timeout(this.options.timeoutMs)
    if ((err as Error).name === 'TimeoutError' || code === 'UND_ERR_ABORTED') return upstreamError.timeout(this.maxCallMs)
    if (code === 'UND_ERR_REQ_RETRY' && statusCode === 202) {
      return upstreamError.badResponse('WeChat Pay kept answering 202 (accepted, not yet processed); send the same request again later')
    }
    return upstreamError.unavailable(code !== '' ? code : (err as Error).message, CONNECT_ERRORS.has(code) && !answered ? 'not_executed' : 'unknown')
  }
}

/** The parsed JSON of a body, or undefined when it is not JSON. */
export function parseJson (raw: Buffer): unknown {
  try {
    return JSON.parse(raw.toString('utf8'))
  } catch {
    return undefined
  }
}

function withRequestId (err: GatewayError, requestId: string | undefined): GatewayError {
  if (requestId !== undefined) Object.assign(err, { headers: { ...err.headers, 'wechatpay-request-id': requestId } })
  return err
}

/**
 * WeChat Pay's non-2xx answers, as the caller sees them:
 * - 4xx: the same status with WeChat's `{code, message, detail}`: the caller's request was refused;
 * - 401 (`SIGN_ERROR`): the gateway's own fault, so 502, with WeChat's detail and our signed message's length;
 * - 5xx: 502 with WeChat's code: WeChat Pay failed.
 */
export function mapErrorAnswer (status: number, error: WechatErrorBody | undefined, trace: CallTrace): GatewayError {
  // Without WeChat's body the answer may come from a proxy that had already forwarded the request: unknown.
  if (error === undefined || status < 400) return upstreamError.badResponse(`HTTP ${status} without a WeChat Pay error body`)
  const code = error.code ?? 'UNKNOWN'
  const message = error.message ?? `HTTP ${status} from WeChat Pay`
  if (status === 401) {
    const detail = { ...error.detail, upstream_status: 401, gateway_sign_message_length: trace.signMessageLength }
    return new GatewayError(502, code, `WeChat Pay refused the gateway's signature: ${message}`, detail)
  }
  if (status >= 500) return new GatewayError(502, code, message, { ...error.detail, upstream_status: status })
  return new GatewayError(status, code, message, error.detail)
}
