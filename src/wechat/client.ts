import { Pool, type Dispatcher } from 'undici'
import { GatewayError, upstreamError } from '../errors.js'
import { NAME, VERSION } from '../version.js'
import { upstreamTarget, type Operation } from './operations.js'
import { signRequest, type MerchantIdentity } from './signer.js'
import { isSigned, verifyResponse, type VerificationKeys, type VerificationResult } from './verifier.js'

/** The WeChat Pay v3 client: signs, sends, verifies. It knows nothing of Fastify. */

export interface ClientOptions {
  baseUrl: string
  timeoutMs: number
  /** The signing identity; read on every call, so a rotated key applies to the next call. */
  merchant: () => MerchantIdentity
  keys: VerificationKeys
  /** Sent as `Wechatpay-Serial` so that WeChat Pay signs its answers with the public key (PROTOCOL.md B.6). */
  publicKeyId?: string | undefined
  /** Injected in tests (MockAgent) and by the resilience layer; otherwise one keep-alive Pool for `baseUrl`. */
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
  upstreamStatus?: number
  wechatCode?: string
  requestId?: string
  verified?: boolean
  signMessageLength?: number
}

const MAX_BODY_BYTES = 1024 * 1024
const USER_AGENT = `${NAME}/${VERSION} (${process.platform}/${process.arch}) node/${process.versions.node}`

/** undici error codes that mean the request never produced an answer because the connection failed. */
const CONNECTION_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'ENETUNREACH',
  'EHOSTUNREACH', 'ENETDOWN', 'EHOSTDOWN', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_CLOSED'])

function headerValue (headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = headers[name]
  return Array.isArray(v) ? v[0] : v
}

function parseErrorBody (body: Buffer): WechatErrorBody | undefined {
  try {
    const parsed: unknown = JSON.parse(body.toString('utf8'))
    if (parsed !== null && typeof parsed === 'object' && typeof (parsed as WechatErrorBody).code === 'string') {
      return parsed as WechatErrorBody
    }
  } catch {}
  return undefined
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
  readonly dispatcher: Dispatcher
  private readonly ownsDispatcher: boolean
  private readonly headers: Record<string, string>

  constructor (private readonly options: ClientOptions) {
    this.ownsDispatcher = options.dispatcher === undefined
    this.dispatcher = options.dispatcher ?? new Pool(options.baseUrl, {
      connections: 128,
      connectTimeout: Math.min(options.timeoutMs, 5000),
      keepAliveTimeout: 30_000
    })
    // Computed once: every call sends the same fixed headers.
    this.headers = {
      accept: 'application/json',
      'content-type': 'application/json',
      'user-agent': USER_AGENT,
      ...(options.publicKeyId !== undefined && { 'wechatpay-serial': options.publicKeyId })
    }
  }

  /**
   * Calls one operation. Resolves with a verified 2xx answer; rejects with a GatewayError for everything else
   * (WeChat Pay's own errors keep WeChat's status and code, see `mapErrorAnswer`). `trace` is filled as it goes.
   */
  async call (op: Operation, params: Record<string, string>, body: Record<string, unknown>,
    trace: CallTrace = {}): Promise<UpstreamResult> {
    const target = upstreamTarget(op, params)
    const payload = JSON.stringify(body)
    const signed = await signRequest(this.options.merchant(), op.method, target, payload, this.now())
    trace.signMessageLength = Buffer.byteLength(signed.message)

    let response: Dispatcher.ResponseData
    let raw: Buffer
    try {
      response = await this.dispatcher.request({
        origin: this.options.baseUrl,
        method: op.method,
        path: target,
        headers: { ...this.headers, authorization: signed.authorization },
        body: payload,
        headersTimeout: this.options.timeoutMs,
        bodyTimeout: this.options.timeoutMs
      })
      raw = await readBody(response.body)
    } catch (err) {
      throw this.transportError(err)
    }

    const status = response.statusCode
    const requestId = headerValue(response.headers, 'request-id')
    trace.upstreamStatus = status
    if (requestId !== undefined) trace.requestId = requestId

    if (status >= 200 && status < 300) {
      const verification = await verifyResponse(this.options.keys, response.headers, raw, this.now())
      trace.verified = verification.ok
      if (!verification.ok) throw withRequestId(upstreamError.signatureInvalid(verification.message), requestId)
      if (raw.length > 0 && parseJson(raw) === undefined) {
        throw withRequestId(upstreamError.badResponse(`a ${status} answer whose body is not JSON`), requestId)
      }
      return { status, ...(raw.length > 0 && { body: raw }), ...(requestId !== undefined && { requestId }), verification }
    }

    // Errors are verified when they are signed: a forged error must not pass for WeChat Pay's word either.
    if (isSigned(response.headers)) {
      const verification = await verifyResponse(this.options.keys, response.headers, raw, this.now())
      trace.verified = verification.ok
      if (!verification.ok) throw withRequestId(upstreamError.signatureInvalid(verification.message), requestId)
    }
    const error = parseErrorBody(raw)
    if (error?.code !== undefined) trace.wechatCode = error.code
    throw withRequestId(mapErrorAnswer(status, error, trace), requestId)
  }

  async close (): Promise<void> {
    if (this.ownsDispatcher) await this.dispatcher.close()
  }

  private now (): number {
    return this.options.now?.() ?? Date.now()
  }

  private transportError (err: unknown): GatewayError {
    if (err instanceof GatewayError) return err
    const code = (err as { code?: string }).code ?? ''
    if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return upstreamError.timeout(this.options.timeoutMs)
    if (CONNECTION_ERRORS.has(code)) return upstreamError.unavailable(code)
    return upstreamError.unavailable((err as Error).message ?? String(err))
  }
}

function parseJson (raw: Buffer): unknown {
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
  if (error === undefined || status < 400) {
    return upstreamError.badResponse(`HTTP ${status} without a WeChat Pay error body`, status >= 500 || status === 429 ? 'not_executed' : 'unknown')
  }
  const code = error.code ?? 'UNKNOWN'
  const message = error.message ?? `HTTP ${status} from WeChat Pay`
  if (status === 401) {
    const detail = { ...error.detail, upstream_status: 401, gateway_sign_message_length: trace.signMessageLength }
    return new GatewayError(502, code, `WeChat Pay refused the gateway's signature: ${message}`, detail)
  }
  if (status >= 500) return new GatewayError(502, code, message, { ...error.detail, upstream_status: status })
  return new GatewayError(status, code, message, error.detail)
}
