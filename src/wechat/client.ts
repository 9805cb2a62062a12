import { EventEmitter } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { Pool, type Dispatcher } from 'undici'
import { GatewayError, gatewayError, upstreamError, type Outcome } from '../errors.js'
import { NAME, VERSION } from '../version.js'
import { MemoryNonces, type NonceStore } from './nonces.js'
import type { MerchantProfile } from './profile.js'
import { answerProblem, upstreamTarget, type Operation } from './operations.js'
import { CONNECT_ERRORS, OPERATION_RETRY_POLICY, retryDelayMs, retryMayStart, retryReason, type AttemptOutcome, type RetryPolicy } from './retry.js'
import { signRequest } from './signer.js'
import { headerValue, isSigned, SIGNATURE_HEADERS, verifyResponse, type VerificationKeys, type VerificationResult } from './verifier.js'

/** The WeChat Pay v3 client: signs, sends, verifies, and decides what a failure means. It knows nothing of Fastify. */

export interface ClientOptions {
  /** The longest one attempt may take, headers and body together. */
  timeoutMs: number
  retry?: RetryPolicy
  /** Remembers the nonces of accepted answers, so that none is accepted twice (nonces.ts). */
  nonces?: NonceStore
  /** Injected in tests (e.g. MockAgent); otherwise one keep-alive Pool per WeChat Pay host, shared by every profile. */
  dispatcher?: Dispatcher
  now?: () => number
}

/** WeChat Pay's error body (docs/wechatpay.md §9); every part is optional in practice. */
export interface WechatErrorBody {
  code?: string
  message?: string
  detail?: Record<string, unknown>
}

/** What a call sends: path parameters, and the query string (queries) or the body (operations). */
export interface CallInput {
  params: Record<string, string>
  query?: Record<string, unknown>
  body?: Record<string, unknown>
}

export interface UpstreamResult {
  /** The status to give the caller (2xx from WeChat Pay). */
  status: number
  /** The verified JSON body, or undefined for an empty answer (204). */
  body?: Buffer
  requestId?: string
}

/** What the gateway learned about a call, for logs and metrics, whether it succeeded or not. */
export interface CallTrace {
  /** Attempts made (1 + retries), and why each retry happened. */
  attempts?: number
  retried?: string[]
  /** Some attempt went to the backup host. */
  failover?: boolean
  /** Some attempt may have reached WeChat Pay (its connection opened). */
  sent?: boolean
  upstreamStatus?: number
  /** WeChat's code, from a verified answer only. */
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

/** A signed request's raw answer, before verification. */
export interface RawAnswer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
  requestId?: string
}

/** An answer and what its verification said (undefined: an unsigned error answer, which has nothing to verify). */
export interface Exchange {
  answer: RawAnswer
  verification: VerificationResult | undefined
}

export interface ExchangeOptions {
  policy?: RetryPolicy
  trace?: CallTrace
  /** Verification keys for an answer (a certificate download checks itself with the certificates it delivers). */
  keysFor?: (answer: RawAnswer) => VerificationKeys
  /** Ends the call early (shutdown): whatever was sent has an unknown outcome. */
  signal?: AbortSignal
}

const MAX_BODY_BYTES = 1024 * 1024
const USER_AGENT = `${NAME}/${VERSION} (${process.platform}/${process.arch}) node/${process.versions.node}`
const PRINTABLE = /^[\x21-\x7e]{1,128}$/

/** WeChat's `Request-ID` as it may be logged and echoed: anything but short printable ASCII is percent-encoded. */
export function safeRequestId (value: string | undefined): string | undefined {
  if (value === undefined || PRINTABLE.test(value)) return value
  // Node reads header bytes as latin1: recover the UTF-8 the upstream most likely meant, then encode it.
  return encodeURIComponent(Buffer.from(value, 'latin1').toString('utf8')).slice(0, 256)
}

/** The parsed JSON of a body, or undefined when it is not JSON. */
export function parseJson (raw: Buffer): unknown {
  try {
    return JSON.parse(raw.toString('utf8'))
  } catch {
    return undefined
  }
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

/**
 * One attempt's abort, for undici: fired by its own timeout, or with every attempt in flight when the calls'
 * signal fires (shutdown). An EventEmitter, which undici takes as a signal: an AbortController per attempt, and a
 * listener per attempt on the shared shutdown signal, cost more of the main thread than anything else a call does
 * beside the cryptography (BENCHMARKS.md).
 */
class AttemptLimit extends EventEmitter {
  timedOut = false
  private readonly timer: NodeJS.Timeout

  constructor (ms: number, private readonly inFlight: Set<AttemptLimit>) {
    super()
    this.timer = setTimeout(() => { this.timedOut = true; this.emit('abort') }, ms)
    inFlight.add(this)
  }

  done (): void {
    clearTimeout(this.timer)
    this.inFlight.delete(this)
  }
}

/** Why an attempt that threw ended: the connection never opened, or the request may have been read. */
function attemptFailure (err: unknown, timedOut: boolean): AttemptOutcome {
  const code = (err as { code?: string }).code ?? ''
  if (CONNECT_ERRORS.has(code)) return { kind: 'not_sent', reason: code }
  if (timedOut || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return { kind: 'lost', reason: 'TIMEOUT' }
  return { kind: 'lost', reason: code !== '' ? code : (err as Error).name }
}

export class WechatPayClient {
  private readonly pools = new Map<string, Dispatcher>()
  private readonly headers = new WeakMap<MerchantProfile, Record<string, string>>()
  /** The attempts in flight under each calls' signal, all aborted by one listener when it fires. */
  private readonly inFlight = new WeakMap<AbortSignal, Set<AttemptLimit>>()
  private readonly unsignalled = new Set<AttemptLimit>()
  private readonly retry: RetryPolicy
  private readonly nonces: NonceStore

  constructor (private readonly options: ClientOptions) {
    this.retry = options.retry ?? OPERATION_RETRY_POLICY
    this.nonces = options.nonces ?? new MemoryNonces()
  }

  /**
   * The longest a call can take, every attempt and failover included: the policy's budget and one attempt's time
   * (reads and operations have the same budget: retry.ts). Enforced: each attempt's time is cut to what is left.
   */
  get maxCallMs (): number {
    return this.retry.budgetMs + this.options.timeoutMs
  }

  /**
   * Calls one operation. Resolves with a verified 2xx answer; rejects with a GatewayError for everything else:
   * WeChat Pay's verified errors keep WeChat's status and code (`mapErrorAnswer`), and anything that cannot be
   * verified has an unknown outcome. `trace` is filled as it goes.
   */
  async call (profile: MerchantProfile, op: Operation, input: CallInput, trace: CallTrace = {}, signal?: AbortSignal): Promise<UpstreamResult> {
    const payload = op.method === 'POST' ? JSON.stringify(input.body ?? {}) : ''
    const { answer, verification } = await this.exchange(profile, op.method, upstreamTarget(op, input.params, input.query), payload,
      { policy: op.retry, trace, ...(signal !== undefined && { signal }) })
    const { status, body: raw, requestId } = answer
    const fail = (err: GatewayError): GatewayError => withRequestId(err, requestId)

    if (verification !== undefined && !verification.ok) throw fail(upstreamError.signatureInvalid(verification.message))
    if (verification === undefined) throw fail(unverifiedError(status, raw, trace))
    if (status === 202) {
      throw fail(gatewayError('UPSTREAM_RETRY_LATER', 'WeChat Pay accepted the request without processing it (202) on every attempt; send the same request again later', { upstream_status: 202 }, { 'retry-after': '1' }))
    }
    if (status >= 200 && status < 300) {
      const json = raw.length > 0 ? parseJson(raw) : undefined
      if (raw.length > 0 && json === undefined) throw fail(upstreamError.badResponse(`a ${status} answer whose body is not JSON`))
      const problem = op.method === 'GET' ? answerProblem(op, json) : undefined
      if (problem !== undefined) throw fail(upstreamError.badResponse(problem))
      return { status, ...(raw.length > 0 && { body: raw }), ...(requestId !== undefined && { requestId }) }
    }
    const error = parseErrorBody(raw)
    if (error?.code !== undefined) trace.wechatCode = error.code
    throw fail(mapErrorAnswer(status, error, trace))
  }

  /**
   * Signs once and sends, attempt after attempt while retry.ts allows it, each answer verified before anything is
   * decided: 2xx answers always, errors when they are signed. Returns the last answer; throws a GatewayError when
   * no attempt got one.
   */
  async exchange (profile: MerchantProfile, method: string, target: string, payload: string, opts: ExchangeOptions = {}): Promise<Exchange> {
    const { policy = this.retry, trace = {}, keysFor, signal } = opts
    const signed = await signRequest(profile.identity(), method, target, payload, this.now())
    trace.signMessageLength = Buffer.byteLength(signed.message)
    const startedAt = performance.now()
    const deadline = startedAt + policy.budgetMs + this.options.timeoutMs
    const headers = { ...this.fixedHeaders(profile), authorization: signed.authorization }
    const upstreams = this.upstreamsOf(profile)
    const retried: string[] = []
    let host = 0
    let last: { exchange?: Exchange, error?: unknown, outcome: AttemptOutcome } | undefined
    // A function, not a narrowed property: the signal can fire while an attempt is awaited.
    const aborted = (): boolean => signal?.aborted === true
    try {
      for (let attempt = 1; ; attempt++) {
        if (aborted()) throw upstreamError.unavailable('the gateway is shutting down', 'not_executed')
        if (host > 0) trace.failover = true
        const upstream = upstreams[host] as { origin: string, dispatcher: Dispatcher }
        const limit = new AttemptLimit(Math.max(1, Math.min(this.options.timeoutMs, deadline - performance.now())), this.attemptsUnder(signal))
        try {
          const response = await upstream.dispatcher.request({
            origin: upstream.origin,
            method: method as Dispatcher.HttpMethod,
            path: target,
            headers,
            ...(payload !== '' && { body: payload }),
            signal: limit
          })
          trace.sent = true
          const answer = await this.readAnswer(response)
          trace.upstreamStatus = answer.status
          if (answer.requestId !== undefined) trace.requestId = answer.requestId
          const verification = answer.status >= 200 && answer.status < 300 || isSigned(answer.headers)
            ? await this.verify(profile, answer, trace, keysFor?.(answer))
            : undefined
          const outcome: AttemptOutcome = verification?.ok === true
            ? { kind: 'answered', status: answer.status, retryAfter: headerValue(answer.headers, 'retry-after') }
            : { kind: 'lost', reason: verification === undefined ? `UNSIGNED_${answer.status}` : verification.reason }
          last = { exchange: { answer, verification }, outcome }
        } catch (err) {
          if (err instanceof GatewayError) throw err
          if (aborted()) {
            trace.sent = true // perhaps: it was on its way
            throw upstreamError.unavailable('the gateway is shutting down', 'unknown')
          }
          const outcome = attemptFailure(err, limit.timedOut)
          if (outcome.kind !== 'not_sent') trace.sent = true
          last = { error: err, outcome }
        } finally {
          limit.done()
        }
        const reason = retryReason(policy, last.outcome)
        if (reason === undefined || attempt > policy.maxRetries) break
        // A host that could not be connected to is left for the other one at once; anything else waits its turn.
        const failover = last.outcome.kind === 'not_sent' && upstreams.length > 1
        const delay = failover ? 0 : retryDelayMs(policy, attempt, last.outcome.kind === 'answered' ? last.outcome.retryAfter : undefined)
        if (!retryMayStart(policy, performance.now() + delay - startedAt, this.options.timeoutMs)) break
        if (failover) host = (host + 1) % upstreams.length
        retried.push(reason)
        if (delay > 0) await sleep(delay, undefined, signal !== undefined ? { signal } : {}).catch(() => {})
        if (aborted()) break
      }
    } finally {
      trace.ms = Math.round((performance.now() - startedAt) * 10) / 10
      trace.attempts = retried.length + 1
      if (retried.length > 0) trace.retried = retried
    }
    if (last.exchange !== undefined) return last.exchange
    throw this.transportError(last.error, last.outcome, policy.idempotent ? trace : undefined)
  }

  /** Verifies an answer to `profile`, and refuses one whose nonce was already accepted (a replay: nonces.ts). */
  async verify (profile: MerchantProfile, answer: RawAnswer, trace: CallTrace, keys: VerificationKeys = profile.keys): Promise<VerificationResult> {
    let verification = await verifyResponse(keys, answer.headers, answer.body, this.now())
    if (verification.ok) {
      const timestamp = headerValue(answer.headers, SIGNATURE_HEADERS.timestamp) as string
      const nonce = headerValue(answer.headers, SIGNATURE_HEADERS.nonce) as string
      if (!await this.nonces.firstUse(profile.name, timestamp, nonce)) {
        verification = { ok: false, reason: 'REPLAYED', message: `the answer's nonce ${nonce.slice(0, 64)} was already used by an earlier answer: a replayed answer`, serial: verification.serial }
      }
    }
    trace.verified = verification.ok
    if (!verification.ok) trace.verificationFailure = verification.reason
    return verification
  }

  async close (): Promise<void> {
    if (this.options.dispatcher === undefined) await Promise.all([...this.pools.values()].map(pool => pool.close()))
  }

  /** The set of attempts aborted together when `signal` fires; its one listener is added on first use. */
  private attemptsUnder (signal: AbortSignal | undefined): Set<AttemptLimit> {
    if (signal === undefined) return this.unsignalled
    let attempts = this.inFlight.get(signal)
    if (attempts === undefined) {
      const set = new Set<AttemptLimit>()
      signal.addEventListener('abort', () => { for (const attempt of set) attempt.emit('abort') }, { once: true })
      this.inFlight.set(signal, set)
      attempts = set
    }
    return attempts
  }

  /** Every call sends the same fixed headers, computed once per profile. */
  private fixedHeaders (profile: MerchantProfile): Record<string, string> {
    let headers = this.headers.get(profile)
    if (headers === undefined) {
      headers = {
        accept: 'application/json',
        'content-type': 'application/json',
        'user-agent': USER_AGENT,
        ...(profile.publicKeyId !== undefined && { 'wechatpay-serial': profile.publicKeyId })
      }
      this.headers.set(profile, headers)
    }
    return headers
  }

  /** The profile's primary host, and its backup: keep-alive pools, one per host, shared by every profile. */
  private upstreamsOf (profile: MerchantProfile): Array<{ origin: string, dispatcher: Dispatcher }> {
    const { baseUrl, backupBaseUrl } = profile.config
    return [baseUrl, ...(backupBaseUrl !== undefined ? [backupBaseUrl] : [])].map(origin => {
      let dispatcher = this.options.dispatcher ?? this.pools.get(origin)
      if (dispatcher === undefined) {
        dispatcher = new Pool(origin, { connections: 128, connectTimeout: Math.min(this.options.timeoutMs, 5000), keepAliveTimeout: 30_000 })
        this.pools.set(origin, dispatcher)
      }
      return { origin, dispatcher }
    })
  }

  private async readAnswer (response: Dispatcher.ResponseData): Promise<RawAnswer> {
    const body = await readBody(response.body)
    const requestId = safeRequestId(headerValue(response.headers, 'request-id'))
    return { status: response.statusCode, headers: response.headers, body, ...(requestId !== undefined && { requestId }) }
  }

  private now (): number {
    return this.options.now?.() ?? Date.now()
  }

  /** No answer: a read (`read`: its trace) is worded as one, since a query carries nothing out. */
  private transportError (err: unknown, outcome: AttemptOutcome, read?: CallTrace): GatewayError {
    const timedOut = outcome.kind === 'lost' && outcome.reason === 'TIMEOUT'
    const reason = outcome.kind === 'answered' ? String(outcome.status) : outcome.reason
    const why = reason !== '' ? reason : (err as Error).message
    if (read !== undefined) return upstreamError.readFailed(timedOut ? undefined : why, read.attempts ?? 1, read.ms ?? 0, outcome.kind === 'not_sent' ? 'not_executed' : 'unknown')
    if (timedOut) return upstreamError.timeout(this.options.timeoutMs)
    return upstreamError.unavailable(why, outcome.kind === 'not_sent' ? 'not_executed' : 'unknown')
  }
}

function withRequestId (err: GatewayError, requestId: string | undefined): GatewayError {
  if (requestId !== undefined) Object.assign(err, { headers: { ...err.headers, 'wechatpay-request-id': requestId } })
  return err
}

/** Clipped, for a field that repeats what an unverified answer said. */
const clip = (text: string | undefined, max: number): string | undefined => text?.slice(0, max)

/**
 * An error answer that carries no signature. WeChat Pay does not sign an answer to a request whose own signature it
 * could not verify (docs/wechatpay.md §4), but a proxy in between can send the same after forwarding the request, so the
 * gateway cannot be sure the operation did not happen: unknown, never WeChat's code.
 */
function unverifiedError (status: number, raw: Buffer, trace: CallTrace): GatewayError {
  const said = parseErrorBody(raw)
  const what = said !== undefined ? `${status} ${clip(said.code, 64) ?? ''}` : `${status}`
  return gatewayError('UPSTREAM_UNVERIFIED_ERROR',
    `WeChat Pay's host answered HTTP ${what} without a WeChat Pay signature; something in between may have sent it after forwarding the call, so its outcome is unknown`,
    {
      upstream_status: status,
      // A SIGN_ERROR's detail shows WeChat's view of the signed message; ours is put beside it (README, Troubleshooting).
      ...(status === 401 && { gateway_sign_message_length: trace.signMessageLength }),
      ...(said !== undefined && {
        unverified: { code: clip(said.code, 64), ...(said.message !== undefined && { message: clip(said.message, 256) }), ...(said.detail !== undefined && { detail: said.detail }) }
      })
    })
}

/**
 * WeChat Pay's verified non-2xx answers, as the caller sees them:
 * - 4xx: the same status with WeChat's `{code, message, detail}` (and `upstream_status`): refused;
 * - 401 (`SIGN_ERROR`): the gateway's own fault, so 502, with WeChat's detail and our signed message's length;
 * - 429 and 5xx (502 for 5xx): WeChat Pay says it did not do it, and to send it again.
 */
export function mapErrorAnswer (status: number, error: WechatErrorBody | undefined, trace: CallTrace): GatewayError {
  // Without WeChat's error body there is no code to go by: unknown.
  if (error === undefined) return upstreamError.badResponse(`HTTP ${status} without WeChat Pay's error body`)
  const notDone = status === 401 || status === 429 || status >= 500
  const outcome: Outcome = notDone ? 'not_executed' : 'refused'
  const code = error.code ?? 'UNKNOWN'
  const message = error.message ?? `HTTP ${status} from WeChat Pay`
  if (status === 401) {
    return new GatewayError(502, code, `WeChat Pay refused the gateway's signature: ${message}`,
      { ...error.detail, outcome, upstream_status: 401, gateway_sign_message_length: trace.signMessageLength })
  }
  if (status >= 500) return new GatewayError(502, code, message, { ...error.detail, outcome, upstream_status: status })
  // `upstream_status` marks WeChat Pay's answers: a code such as RATE_LIMITED may also be the gateway's own.
  return new GatewayError(status, code, message, { ...error.detail, outcome, upstream_status: status })
}
