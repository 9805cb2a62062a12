import { createHmac, timingSafeEqual } from 'node:crypto'

/**
 * How a subscriber knows a delivery comes from the gateway, without any WeChat Pay key: an HMAC-SHA256 over
 * `timestamp.body` with the subscriber's own secret, sent as `Wechatpay-Relay-Signature: t=<unix seconds>,v1=<hex>`
 * (Stripe's scheme). The timestamp bounds replays; the body is the exact bytes received.
 */

export const RELAY_SIGNATURE_HEADER = 'wechatpay-relay-signature'
/** Deliveries older than this are refused by `verifyRelaySignature` (a replayed capture). */
export const DEFAULT_TOLERANCE_S = 300

function mac (secret: string, timestamp: number, body: string | Buffer): string {
  return createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex')
}

export function signRelay (secret: string, body: string, now = Date.now()): string {
  const timestamp = Math.floor(now / 1000)
  return `t=${timestamp},v1=${mac(secret, timestamp, body)}`
}

/**
 * For subscribers: true when `header` signs `body` with `secret` and is at most `toleranceS` old. Any `v1` entry
 * may match: the gateway sends one, and the format leaves room for one per secret should a sender rotate secrets.
 */
export function verifyRelaySignature (secret: string, header: string | undefined, body: string | Buffer,
  { toleranceS = DEFAULT_TOLERANCE_S, now = Date.now() }: { toleranceS?: number, now?: number } = {}): boolean {
  if (header === undefined) return false
  const parts = header.split(',').map(p => p.trim().split('=', 2) as [string, string | undefined])
  const timestamp = Number(parts.find(([k]) => k === 't')?.[1])
  if (!Number.isInteger(timestamp) || Math.abs(Math.floor(now / 1000) - timestamp) > toleranceS) return false
  const expected = Buffer.from(mac(secret, timestamp, body), 'hex')
  return parts.some(([k, v]) => k === 'v1' && v !== undefined && /^[0-9a-f]{64}$/.test(v) && timingSafeEqual(Buffer.from(v, 'hex'), expected))
}
