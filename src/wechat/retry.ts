/**
 * When a call to WeChat Pay is sent again, decided per attempt from what is *known* about it (docs/wechatpay.md §9):
 * the same signed request is re-sent only when WeChat Pay certainly did not carry it out, or says in a verified
 * answer that it did not (202, 429, 5xx). An answer that cannot be verified may come from a proxy that had already
 * forwarded the request, so it is never a reason to send again, whatever its status.
 */

/**
 * The connection could not be made: the request certainly never reached WeChat Pay. A reset or a closed socket
 * after connecting is different: the request may have been read and carried out, and nobody can tell.
 */
export const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH',
  'ENETDOWN', 'EHOSTDOWN', 'UND_ERR_CONNECT_TIMEOUT'])

/** Verified answers in which WeChat Pay says "not done, send the same request again". */
export const RETRY_STATUSES = new Set([202, 429, 500, 502, 503, 504])

export interface RetryPolicy {
  /** Retries after the first attempt. */
  maxRetries: number
  baseDelayMs: number
  maxDelayMs: number
  /**
   * Every call ends within this + one attempt's timeout of its start (its deadline, `WechatPayClient.maxCallMs`).
   * An operation's retry starts within this; a read's may start later, as long as the deadline allows
   * (`retryMayStart`).
   */
  budgetMs: number
  /**
   * Reads: repeating them changes nothing at WeChat Pay, so every transient failure is retried, timeouts, resets
   * and unverified answers included. Operations never are.
   */
  idempotent: boolean
}

/** WeChat Pay documents none of the three operations as idempotent: only "not done" is retried. */
export const OPERATION_RETRY_POLICY: RetryPolicy = { maxRetries: 2, baseDelayMs: 100, maxDelayMs: 1000, budgetMs: 3000, idempotent: false }
/** The same budget as the operations, so that the longest call (config.ts, idempotency) is the same for both. */
export const READ_RETRY_POLICY: RetryPolicy = { ...OPERATION_RETRY_POLICY, idempotent: true }

/** A read's retry starts only if at least this much of the call's deadline is left (or one whole attempt, if less). */
export const READ_MIN_ATTEMPT_MS = 1000

/**
 * Whether a retry may start `atMs` after the call began (its backoff waited), when one attempt may last `timeoutMs`.
 * - An operation's retry starts within the budget: what retries it (no connection, WeChat Pay's verified "not
 *   done") comes back quickly.
 * - A read is retried after a timeout too, which comes only after `timeoutMs`: past the budget with the default
 *   10 s. So its retry may start whenever enough of the call's deadline (budget + `timeoutMs`) is left for a useful
 *   attempt, and that attempt is cut to what is left (client.ts): a read is no longer than an operation.
 */
export function retryMayStart (policy: RetryPolicy, atMs: number, timeoutMs: number): boolean {
  if (!policy.idempotent) return atMs <= policy.budgetMs
  return policy.budgetMs + timeoutMs - atMs >= Math.min(READ_MIN_ATTEMPT_MS, timeoutMs)
}

/** What one attempt ended with, as far as sending again is concerned. */
export type AttemptOutcome =
  /** The connection never opened (`reason`: the error code). */
  | { kind: 'not_sent', reason: string }
  /** Sent, then lost: reset, timeout, or an answer that failed verification. */
  | { kind: 'lost', reason: string }
  /** A verified answer of WeChat Pay. */
  | { kind: 'answered', status: number, retryAfter?: string | undefined }

/** Why an attempt would be retried, or undefined when it must not be. */
export function retryReason (policy: RetryPolicy, outcome: AttemptOutcome): string | undefined {
  switch (outcome.kind) {
    case 'not_sent': return outcome.reason
    case 'lost': return policy.idempotent ? outcome.reason : undefined
    case 'answered': return RETRY_STATUSES.has(outcome.status) ? String(outcome.status) : undefined
  }
}

/** Exponential backoff with full jitter; a `Retry-After` of WeChat Pay is honoured up to the cap. */
export function retryDelayMs (policy: RetryPolicy, retry: number, retryAfter?: string, random: () => number = Math.random): number {
  const asked = Number(retryAfter) * 1000
  if (asked > 0) return Math.min(asked, policy.maxDelayMs)
  return Math.round(random() * Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (retry - 1)))
}
