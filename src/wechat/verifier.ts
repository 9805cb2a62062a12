import { verify, type KeyObject } from 'node:crypto'

/** Headers WeChat Pay signs its answers with (docs/wechatpay.md §4); Node lower-cases header names. */
export const SIGNATURE_HEADERS = {
  timestamp: 'wechatpay-timestamp',
  nonce: 'wechatpay-nonce',
  signature: 'wechatpay-signature',
  serial: 'wechatpay-serial'
} as const

/** WeChat Pay sends a few deliberately bad signatures to check that merchants verify (docs/wechatpay.md §4). */
export const SIGNTEST_PREFIX = 'WECHATPAY/SIGNTEST/'
export const MAX_CLOCK_SKEW_SECONDS = 300

/** Where verification keys come from: WeChat Pay public keys and platform certificates, keyed by serial. */
export interface VerificationKeys {
  get (serial: string): KeyObject | undefined
  /** Serials known now, for error messages (they are not secret). */
  serials (): string[]
  /** Called once for an unknown serial: may fetch fresh platform certificates. Resolves true if it found new keys. */
  refresh? (serial: string): Promise<boolean>
}

export type VerificationFailure =
  | 'MISSING_HEADERS' | 'BAD_TIMESTAMP' | 'STALE_TIMESTAMP' | 'UNKNOWN_SERIAL' | 'SIGNTEST_PROBE' | 'BAD_SIGNATURE' | 'REPLAYED'

export type VerificationResult =
  | { ok: true, serial: string }
  | { ok: false, reason: VerificationFailure, message: string, serial?: string }

type Headers = Record<string, string | string[] | undefined>

/** A header's first value; Node gives repeated headers as arrays. */
export function headerValue (headers: Headers, name: string): string | undefined {
  const value = headers[name]
  return Array.isArray(value) ? value[0] : value
}

/** True when the answer carries the signature headers at all (non-2xx answers are verified only then). */
export function isSigned (headers: Headers): boolean {
  return headerValue(headers, SIGNATURE_HEADERS.signature) !== undefined
}

/** The three-line message (docs/wechatpay.md §4), over the raw body bytes (an empty body for 204). */
export function responseMessage (timestamp: string, nonce: string, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${timestamp}\n${nonce}\n`), body, Buffer.from('\n')])
}

export const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/

function verifyAsync (message: Buffer, key: KeyObject, signature: Buffer): Promise<boolean> {
  return new Promise(resolve => {
    // A key that cannot verify (wrong type) counts as a failed verification, never as an exception.
    verify('sha256', message, key, signature, (err, ok) => resolve(err === null && ok))
  })
}

/**
 * Checks an answer of WeChat Pay: headers present, timestamp within 5 minutes, serial known, signature valid.
 * Total: every malformed input is a failure with a reason, never a throw.
 */
export async function verifyResponse (keys: VerificationKeys, headers: Headers, body: Buffer,
  now = Date.now()): Promise<VerificationResult> {
  const timestamp = headerValue(headers, SIGNATURE_HEADERS.timestamp)
  const nonce = headerValue(headers, SIGNATURE_HEADERS.nonce)
  const signature = headerValue(headers, SIGNATURE_HEADERS.signature)
  const serial = headerValue(headers, SIGNATURE_HEADERS.serial)
  if (timestamp === undefined || nonce === undefined || signature === undefined || serial === undefined) {
    const missing = Object.values(SIGNATURE_HEADERS).filter(name => headerValue(headers, name) === undefined)
    return { ok: false, reason: 'MISSING_HEADERS', message: `missing ${missing.join(', ')}` }
  }
  if (!/^\d{1,12}$/.test(timestamp)) {
    return { ok: false, reason: 'BAD_TIMESTAMP', message: 'Wechatpay-Timestamp is not a number of seconds', serial }
  }
  const skew = Math.abs(Math.floor(now / 1000) - Number(timestamp))
  if (skew > MAX_CLOCK_SKEW_SECONDS) {
    return { ok: false, reason: 'STALE_TIMESTAMP', message: `Wechatpay-Timestamp is ${skew} s away from local time (limit ${MAX_CLOCK_SKEW_SECONDS} s)`, serial }
  }
  // Before the serial: a probe may name any serial, and must not make the gateway download certificates.
  if (signature.startsWith(SIGNTEST_PREFIX)) {
    return { ok: false, reason: 'SIGNTEST_PROBE', message: 'signature probe (WECHATPAY/SIGNTEST/) rejected as WeChat Pay asks', serial }
  }
  let key = keys.get(serial)
  if (key === undefined && keys.refresh !== undefined && await keys.refresh(serial)) key = keys.get(serial)
  if (key === undefined) {
    return { ok: false, reason: 'UNKNOWN_SERIAL', message: `unknown Wechatpay-Serial ${serial} (known: ${keys.serials().join(', ') || 'none'})`, serial }
  }
  if (!BASE64.test(signature) || !await verifyAsync(responseMessage(timestamp, nonce, body), key, Buffer.from(signature, 'base64'))) {
    return { ok: false, reason: 'BAD_SIGNATURE', message: 'Wechatpay-Signature does not match the answer', serial }
  }
  return { ok: true, serial }
}
