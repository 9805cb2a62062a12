import { randomUUID, sign, type KeyObject } from 'node:crypto'

/** The only authorization scheme of API v3 (docs/wechatpay.md §3). */
export const AUTH_SCHEME = 'WECHATPAY2-SHA256-RSA2048'

/** 32 characters from a CSPRNG: the length every official SDK uses; upper-case hex like WeChat's own examples. */
export function createNonce (): string {
  return randomUUID().replaceAll('-', '').toUpperCase()
}

/** The five-line message (docs/wechatpay.md §3): every line ends with `\n`, the last one included. */
export function requestMessage (method: string, target: string, timestamp: string, nonce: string, body: string): string {
  return `${method}\n${target}\n${timestamp}\n${nonce}\n${body}\n`
}

/**
 * RSASSA-PKCS1-v1_5 with SHA-256, Base64. The callback form of `crypto.sign` runs on the libuv thread pool, so
 * a few hundred microseconds of RSA per call never block the event loop.
 */
export function signMessage (message: string, privateKey: KeyObject): Promise<string> {
  return new Promise((resolve, reject) => {
    sign('sha256', Buffer.from(message), privateKey, (err, signature) => {
      /* c8 ignore next -- only a key that is not RSA fails here, and keys are checked when they are loaded */
      if (err !== null) reject(err); else resolve(signature.toString('base64'))
    })
  })
}

export interface MerchantIdentity {
  mchid: string
  /** Serial number of the merchant API certificate (`serial_no`). */
  serial: string
  privateKey: KeyObject
}

export interface SignedRequest {
  authorization: string
  /** The exact message that was signed: kept for SIGN_ERROR diagnostics, never logged in full. */
  message: string
}

/** Signs the request-target and the body bytes exactly as they go on the wire. */
export async function signRequest (merchant: MerchantIdentity, method: string, target: string, body: string,
  now = Date.now()): Promise<SignedRequest> {
  const timestamp = String(Math.floor(now / 1000))
  const nonce = createNonce()
  const message = requestMessage(method, target, timestamp, nonce, body)
  const signature = await signMessage(message, merchant.privateKey)
  return { authorization: authorizationHeader(merchant, nonce, timestamp, signature), message }
}

export function authorizationHeader (merchant: Pick<MerchantIdentity, 'mchid' | 'serial'>, nonce: string,
  timestamp: string, signature: string): string {
  return `${AUTH_SCHEME} mchid="${merchant.mchid}",nonce_str="${nonce}",signature="${signature}",` +
    `timestamp="${timestamp}",serial_no="${merchant.serial}"`
}
