import { errors, interceptors, Pool, type Dispatcher } from 'undici'

/**
 * Retries, where WeChat Pay says repeating the same request is safe (PROTOCOL.md D.4), through undici's own retry
 * interceptor: the policy below decides, undici re-sends. The request is signed once; every attempt sends the same
 * bytes, as WeChat Pay asks ("use the original parameters").
 */

/** Answers that mean "not done, send the same request again": 202 accepted-not-processed, 429, 5xx. */
export const RETRY_STATUSES = new Set([202, 429, 500, 502, 503, 504])

/**
 * The connection could not be made: the request certainly never reached WeChat Pay. The only transport failures
 * that are retried or sent to the backup host. A reset or a closed socket after connecting is not: the request
 * may have been read and carried out (PROTOCOL.md D.1, D.4), and undici cannot tell whether it was.
 */
export const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH',
  'ENETDOWN', 'EHOSTDOWN', 'UND_ERR_CONNECT_TIMEOUT'])

export interface RetryPolicy {
  /** Retries after the first attempt. */
  maxRetries: number
  baseDelayMs: number
  maxDelayMs: number
  /** No retry starts later than this after the call began. */
  budgetMs: number
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { maxRetries: 2, baseDelayMs: 100, maxDelayMs: 1000, budgetMs: 3000 }

/** What the retries of one call did, for its log line and metrics. */
export interface Attempts {
  count: number
  /** Why each retry happened: an HTTP status or an error code. */
  retried: string[]
  /** Some attempt got an HTTP answer: WeChat Pay saw the request, so a later failure is not "not executed". */
  answered?: boolean
}

type RetryOptions = NonNullable<Dispatcher.DispatchOptions & { retryOptions?: object }>['retryOptions']

/** Per-call retry options: exponential backoff with full jitter, bounded in count and in time. */
export function retryOptions (policy: RetryPolicy, attempts: Attempts, startedAt: number,
  random: () => number = Math.random): RetryOptions {
  return {
    methods: ['GET', 'POST'],
    statusCodes: [...RETRY_STATUSES],
    errorCodes: [...CONNECT_ERRORS],
    throwOnError: false,
    retry (err: Error & { statusCode?: number, code?: string, headers?: Record<string, string | string[] | undefined> }, _context: unknown, callback: (err: Error | null) => void) {
      // undici's retry handler reports a retryable HTTP answer as UND_ERR_REQ_RETRY with its status.
      const answer = err.code === 'UND_ERR_REQ_RETRY'
      const reason = answer && err.statusCode !== undefined ? String(err.statusCode) : err.code ?? 'unknown'
      if (answer) attempts.answered = true
      const retryable = answer ? RETRY_STATUSES.has(err.statusCode ?? 0) : CONNECT_ERRORS.has(reason)
      if (!retryable || attempts.count > policy.maxRetries) return callback(err)
      const retryAfter = Number(err.headers?.['retry-after']) * 1000
      const backoff = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempts.count - 1))
      const delay = retryAfter > 0 ? Math.min(retryAfter, policy.maxDelayMs) : Math.round(random() * backoff)
      if (Date.now() + delay - startedAt > policy.budgetMs) return callback(err)
      attempts.count++
      attempts.retried.push(reason)
      setTimeout(() => callback(null), delay)
    }
  } as RetryOptions
}

/**
 * undici's retry handler passes every 2xx through; WeChat Pay's 202 means "accepted, not processed: send it again".
 * This interceptor (inside the retry interceptor) turns a 202 into the retryable error the handler understands.
 */
class Accepted202Handler implements Dispatcher.DispatchHandler {
  private swallow = false
  constructor (private readonly handler: Dispatcher.DispatchHandler) {}

  onRequestStart (controller: Dispatcher.DispatchController, context: unknown): void {
    this.handler.onRequestStart?.(controller, context)
  }

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[]>, statusMessage?: string): void {
    if (statusCode !== 202) return this.handler.onResponseStart?.(controller, statusCode, headers, statusMessage)
    this.swallow = true
    this.handler.onResponseError?.(controller, new errors.RequestRetryError('WeChat Pay accepted the request without processing it', 202, { headers, data: { count: 0 } } as never))
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.swallow) this.handler.onResponseData?.(controller, chunk)
  }

  onResponseEnd (controller: Dispatcher.DispatchController, trailers: Record<string, string | string[]>): void {
    if (!this.swallow) this.handler.onResponseEnd?.(controller, trailers)
  }

  onResponseError (controller: Dispatcher.DispatchController, err: Error): void {
    if (!this.swallow) this.handler.onResponseError?.(controller, err)
  }
}

const retryAccepted: Dispatcher.DispatcherComposeInterceptor = dispatch => (opts, handler) =>
  dispatch(opts, new Accepted202Handler(handler))

export interface PoolOptions {
  connections: number
  connectTimeoutMs: number
}

/** One keep-alive pool per WeChat Pay host, with the retry machinery composed on top. */
export function createUpstream (origin: string, options: PoolOptions): Dispatcher {
  return new Pool(origin, {
    connections: options.connections,
    connectTimeout: options.connectTimeoutMs,
    keepAliveTimeout: 30_000
  }).compose(retryAccepted, interceptors.retry())
}
