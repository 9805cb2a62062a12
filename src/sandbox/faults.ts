/**
 * Every failure the gateway must survive, on demand. Two triggers:
 * - reserved path parameters of the operations, which any caller of the gateway can use: contract id or order
 *   number `SANDBOX_<FAULT>` fails every call, `SANDBOX_<FAULT>_ONCE` fails the first attempt of each signed request
 *   and lets a resend of the same request (the gateway's retry) through. Queries ignore them, so that the order a
 *   fault struck can be queried;
 * - `POST /sandbox/faults {"fault": "...", "times": n, "operation"?: "...", "delay_ms"?: n}`, for tests.
 */

export type Fault =
  | { kind: 'error', status: number, code: string, message: string, unsigned?: true }
  /** The call is carried out, then a proxy in between answers an HTML error of its own, unsigned. */
  | { kind: 'proxy', status: number }
  | { kind: 'accepted' }
  | { kind: 'slow' }
  /** The TCP connection is reset: before the call is carried out, or (`after`) once it was. */
  | { kind: 'reset', after?: true }
  | { kind: 'not-json' }
  | { kind: 'signature', variant: 'bad' | 'probe' | 'stale' | 'unknown-serial' | 'unsigned' }

const error = (status: number, code: string, message: string, unsigned?: true): Fault =>
  ({ kind: 'error', status, code, message, ...(unsigned !== undefined && { unsigned }) })

export const FAULTS: Record<string, { fault: Fault, what: string }> = {
  PARAM_ERROR: { fault: error(400, 'PARAM_ERROR', '参数错误'), what: '400 PARAM_ERROR' },
  INVALID_REQUEST: { fault: error(400, 'INVALID_REQUEST', '当前签约的模板不是周期扣费类型，不能下发扣费前通知'), what: '400 INVALID_REQUEST (a business rule refused the call)' },
  INVALID_ORDER_STATE: { fault: error(400, 'INVALID_ORDER_STATE', '当前订单状态不合法'), what: '400 INVALID_ORDER_STATE' },
  ORDER_DONE: { fault: error(400, 'ORDER_DONE', '订单已完成'), what: '400 ORDER_DONE' },
  ORDER_CANCELED: { fault: error(400, 'ORDER_CANCELED', '订单已取消'), what: '400 ORDER_CANCELED' },
  SIGN_ERROR: { fault: error(401, 'SIGN_ERROR', '签名错误', true), what: '401 SIGN_ERROR even for a good signature, unsigned as WeChat Pay sends it' },
  NO_AUTH: { fault: error(403, 'NO_AUTH', '商户无权限'), what: '403 NO_AUTH' },
  ORDER_NOT_EXIST: { fault: error(404, 'ORDER_NOT_EXIST', '订单不存在'), what: '404 ORDER_NOT_EXIST' },
  FREQUENCY_LIMITED: { fault: error(429, 'FREQUENCY_LIMITED', '频率超限'), what: '429 FREQUENCY_LIMITED' },
  RATELIMIT_EXCEEDED: { fault: error(429, 'RATELIMIT_EXCEEDED', '请求超过频率限制'), what: '429 RATELIMIT_EXCEEDED' },
  SYSTEM_ERROR: { fault: error(500, 'SYSTEM_ERROR', '系统繁忙，请稍后重试'), what: '500 SYSTEM_ERROR' },
  UNSIGNED_ERROR: { fault: error(500, 'SYSTEM_ERROR', '系统繁忙，请稍后重试', true), what: '500 SYSTEM_ERROR without a signature (as a proxy could forge it)' },
  PROXY_TIMEOUT: { fault: { kind: 'proxy', status: 504 }, what: 'carries the call out, then answers an unsigned HTML 504 as a proxy in between would' },
  BAD_GATEWAY: { fault: error(502, 'SERVICE_UNAVAILABLE', '服务不可用'), what: '502 SERVICE_UNAVAILABLE' },
  SERVICE_UNAVAILABLE: { fault: error(503, 'SERVICE_UNAVAILABLE', '服务不可用，请稍后重试'), what: '503 SERVICE_UNAVAILABLE' },
  ACCEPTED: { fault: { kind: 'accepted' }, what: '202 with an empty body (WeChat: repeat the same request)' },
  SLOW: { fault: { kind: 'slow' }, what: 'carries the call out and answers after SANDBOX_SLOW_MS (default 15 s) or `delay_ms`' },
  RESET: { fault: { kind: 'reset' }, what: 'resets the TCP connection without answering (nothing is carried out)' },
  RESET_AFTER: { fault: { kind: 'reset', after: true }, what: 'carries the call out, then resets the TCP connection without answering (the lost answer)' },
  NOT_JSON: { fault: { kind: 'not-json' }, what: 'carries the call out, then answers a signed 200 whose body is HTML' },
  BAD_SIGNATURE: { fault: { kind: 'signature', variant: 'bad' }, what: 'carries the call out; the answer\'s signature does not match' },
  SIGNTEST: { fault: { kind: 'signature', variant: 'probe' }, what: 'carries the call out; the answer has a WECHATPAY/SIGNTEST/ probe signature' },
  STALE_TIMESTAMP: { fault: { kind: 'signature', variant: 'stale' }, what: 'carries the call out; the answer was signed 10 minutes ago' },
  UNKNOWN_SERIAL: { fault: { kind: 'signature', variant: 'unknown-serial' }, what: 'carries the call out; the answer is signed by a key the merchant does not know' },
  UNSIGNED: { fault: { kind: 'signature', variant: 'unsigned' }, what: 'carries the call out; the answer has no Wechatpay-* headers' }
}

/**
 * Whether the call is carried out before the fault strikes: the faults that leave its outcome unknown to the
 * gateway really happened, so that a test can settle them with a query. Errors, 202 and RESET are not carried out.
 */
export function carriesOut (fault: Fault | undefined): boolean {
  if (fault === undefined) return true
  if (fault.kind === 'reset') return fault.after === true
  return fault.kind !== 'error' && fault.kind !== 'accepted'
}

export const RESERVED_PREFIX = 'SANDBOX_'

export interface ArmedFault {
  fault: string
  times: number
  operation?: string
  delayMs?: number
}

/** Faults armed by tests, consumed in order by matching calls. */
export class FaultQueue {
  private armed: ArmedFault[] = []
  /** Nonces of signed requests already failed once by a `_ONCE` reserved id. */
  private failedOnce = new Set<string>()

  arm (fault: ArmedFault): void {
    this.armed.push({ ...fault })
  }

  clear (): void {
    this.armed = []
    this.failedOnce.clear()
  }

  /** The fault for this call, if any: an armed one first, then a reserved path parameter. */
  take (operation: string, pathValue: string, nonce: string): { name: string, fault: Fault, delayMs?: number } | undefined {
    const i = this.armed.findIndex(a => a.operation === undefined || a.operation === operation)
    const armed = this.armed[i]
    if (armed !== undefined) {
      if (--armed.times <= 0) this.armed.splice(i, 1)
      const known = FAULTS[armed.fault]
      if (known !== undefined) return { name: armed.fault, fault: known.fault, ...(armed.delayMs !== undefined && { delayMs: armed.delayMs }) }
    }
    if (!pathValue.startsWith(RESERVED_PREFIX)) return undefined
    let name = pathValue.slice(RESERVED_PREFIX.length)
    if (name.endsWith('_ONCE')) {
      name = name.slice(0, -'_ONCE'.length)
      if (this.failedOnce.has(nonce)) return undefined
      if (this.failedOnce.size > 10_000) this.failedOnce.clear()
      this.failedOnce.add(nonce)
    }
    const known = FAULTS[name]
    return known === undefined ? undefined : { name, fault: known.fault }
  }
}
