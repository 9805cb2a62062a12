import { createCipheriv, randomBytes, sign, verify, type KeyObject } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'
import type { z } from 'zod'
import type { KeyMode } from '../wechat/profile.js'
import { AUTH_SCHEME, requestMessage } from '../wechat/signer.js'
import { BASE64, responseMessage, SIGNTEST_PREFIX } from '../wechat/verifier.js'
import type { SandboxMerchant, SandboxMerchants } from './merchants.js'

/**
 * WeChat Pay's side of the v3 protocol (docs/wechatpay.md §3-4), as the simulator plays it: a request is checked as WeChat
 * Pay checks it, and an answer is signed as WeChat Pay signs it, with the key of the merchant the request came from.
 * The signing message is built by the gateway's own functions: the openssl vectors in the tests pin both down.
 */

export interface WechatError { status: number, code: string, message: string, detail?: Record<string, unknown> }

export const fail = (status: number, code: string, message: string, detail?: Record<string, unknown>): WechatError =>
  ({ status, code, message, ...(detail !== undefined && { detail }) })

const MAX_SKEW_SECONDS = 300

/** `Asia/Shanghai` RFC 3339, as WeChat Pay writes times. */
export function beijingTime (date: Date): string {
  return new Date(date.getTime() + 8 * 3600_000).toISOString().replace(/\.\d{3}Z$/, '+08:00')
}

function parseAuthorization (header: string | undefined): Record<string, string> | string {
  if (header === undefined) return 'the Authorization header is missing'
  if (!header.startsWith(`${AUTH_SCHEME} `)) return `the Authorization scheme must be ${AUTH_SCHEME}`
  const fields: Record<string, string> = {}
  for (const part of header.slice(AUTH_SCHEME.length + 1).split(',')) {
    const match = /^\s*(\w+)="([^"]*)"\s*$/.exec(part)
    if (match === null) return 'the Authorization fields must be key="value" pairs separated by commas'
    fields[match[1] as string] = match[2] as string
  }
  const missing = ['mchid', 'nonce_str', 'signature', 'timestamp', 'serial_no'].filter(k => fields[k] === undefined)
  if (missing.length > 0) return `the Authorization header lacks ${missing.join(', ')}`
  return fields
}

/** The first four lines of a signed message and the start of its body, as WeChat Pay's SIGN_ERROR shows them. */
function truncate (message: string): string {
  const lines = message.split('\n')
  return `${lines.slice(0, 4).join('\n')}\n${(lines[4] ?? '').slice(0, 16)}\n`
}

export interface Authenticated { merchant: SandboxMerchant, nonce: string }

/** Checks the request's signature with the key of the merchant it names; the merchant, or the error to answer. */
export function authenticate (merchants: SandboxMerchants, request: { method: string, url: string, headers: IncomingHttpHeaders },
  raw: Buffer, now = Date.now()): Authenticated | WechatError {
  const fields = parseAuthorization(request.headers.authorization)
  const signError = (issue: string, extra?: Record<string, unknown>): WechatError =>
    fail(401, 'SIGN_ERROR', '签名错误，请检查后再试', { detail: { issue }, field: 'signature', location: 'authorization', ...extra })
  if (typeof fields === 'string') return signError(fields)
  const mchid = fields.mchid ?? ''
  const merchant = merchants.byMchid(mchid)
  if (merchant === undefined) return signError(`mchid ${mchid} is not a merchant of this sandbox (${merchants.all.map(m => m.ids.mchid).join(', ')})`)
  if (fields.serial_no?.toUpperCase() !== merchant.ids.merchant_serial) {
    return signError(`serial_no ${fields.serial_no ?? ''} is not the merchant certificate serial registered for ${mchid}`)
  }
  const timestamp = fields.timestamp ?? ''
  if (!/^\d{1,12}$/.test(timestamp) || Math.abs(now / 1000 - Number(timestamp)) > MAX_SKEW_SECONDS) {
    return signError('timestamp is not within 5 minutes of the server time')
  }
  const message = requestMessage(request.method, request.url, timestamp, fields.nonce_str ?? '', raw.toString('utf8'))
  const ok = BASE64.test(fields.signature ?? '') &&
    verify('sha256', Buffer.from(message), merchant.merchantPublicKey, Buffer.from(fields.signature ?? '', 'base64'))
  if (!ok) {
    // WeChat Pay shows the start of the message it computed, the first thing to compare when debugging.
    return signError('sign not match', {
      sign_information: { method: request.method, url: request.url, sign_message_length: Buffer.byteLength(message), truncated_sign_message: truncate(message) }
    })
  }
  return { merchant, nonce: fields.nonce_str ?? '' }
}

/** Rules every v3 call must follow before its signature is even looked at. */
export function protocolError (method: string, headers: IncomingHttpHeaders): WechatError | undefined {
  if (headers['user-agent'] === undefined) return fail(400, 'INVALID_REQUEST', 'HTTP 头缺少 User-Agent / the User-Agent header is missing')
  const accept = headers.accept ?? ''
  if (!accept.includes('application/json') && !accept.includes('*/*')) return fail(400, 'INVALID_REQUEST', 'Accept 必须为 application/json / Accept must be application/json')
  if (method === 'POST' && !(headers['content-type'] ?? '').startsWith('application/json')) {
    return fail(400, 'INVALID_REQUEST', 'Content-Type 必须为 application/json / Content-Type must be application/json')
  }
  return undefined
}

function valueAt (body: unknown, path: PropertyKey[]): unknown {
  let value = body
  for (const key of path) value = (value as Record<PropertyKey, unknown> | undefined)?.[key]
  return value
}

/** A query string as WeChat Pay reads it: each parameter once. */
export function parseQuery (search: string): Record<string, string> | string {
  const query: Record<string, string> = {}
  for (const [name, value] of new URLSearchParams(search)) {
    if (Object.hasOwn(query, name)) return `参数 ${name.slice(0, 32)} 重复 / the parameter ${name.slice(0, 32)} is repeated`
    query[name] = value
  }
  return query
}

/** The first zod issue as WeChat Pay's `PARAM_ERROR` detail. */
export function paramError (error: z.ZodError, body: unknown, location: 'body' | 'path' | 'query'): WechatError {
  const issue = error.issues[0] as z.core.$ZodIssue
  const keys = (issue as { keys?: string[] }).keys
  const path = keys !== undefined ? [...issue.path, keys[0] as string] : issue.path
  return fail(400, 'PARAM_ERROR', '参数错误', {
    field: location === 'body' ? '/' + path.map(String).join('/') : String(path[0]),
    value: valueAt(body, path) ?? null,
    issue: keys !== undefined ? 'unknown field' : issue.message,
    location
  })
}

/** Ways to spoil an answer's signature on purpose (faults). */
export type Spoil = 'bad' | 'probe' | 'stale' | 'unknown-serial' | 'unsigned'

/** The key that signs for `merchant` in `keyMode`: the public key when the caller asked for it by its id. */
export function signingKey (merchant: SandboxMerchant, keyMode: KeyMode, askedSerial: string | undefined): { key: KeyObject, serial: string } {
  const publicKey = keyMode === 'public-key' || (keyMode === 'migration' && askedSerial === merchant.ids.wechatpay_public_key_id)
  return publicKey
    ? { key: merchant.publicKeySigner, serial: merchant.ids.wechatpay_public_key_id }
    : { key: merchant.platformSigner, serial: merchant.ids.platform_cert_serial }
}

/** A key nobody knows, for the UNKNOWN_SERIAL fault (made once, on first use). */
let stranger: KeyObject | undefined
async function strangerKey (): Promise<KeyObject> {
  const { generateKeyPair } = await import('node:crypto')
  stranger ??= await new Promise<KeyObject>((resolve, reject) => {
    generateKeyPair('rsa', { modulusLength: 2048 }, (err, _pub, priv) => { if (err !== null) reject(err); else resolve(priv) })
  })
  return stranger
}

/**
 * The `Wechatpay-*` headers of an answer with this body, signed with `signer` (and spoiled if asked). Every answer
 * has its own nonce and signature, as WeChat Pay's do (a gateway refuses a nonce it has seen); signed on libuv's
 * threads, so that the simulator keeps up with a gateway under load.
 */
export async function signatureHeaders (signer: { key: KeyObject, serial: string }, body: string, spoil?: Spoil): Promise<Record<string, string>> {
  if (spoil === 'unsigned') return {}
  let { key, serial } = signer
  const now = Math.floor(Date.now() / 1000)
  const timestamp = String(spoil === 'stale' ? now - 600 : now)
  const nonce = randomBytes(16).toString('hex')
  if (spoil === 'unknown-serial') {
    key = await strangerKey()
    serial = 'PUB_KEY_ID_0000000000000000000000000000UNKNOWN'
  }
  let signature = await new Promise<string>((resolve, reject) => {
    sign('sha256', responseMessage(timestamp, nonce, Buffer.from(body)), key, (err, sig) => { if (err !== null) reject(err); else resolve(sig.toString('base64')) })
  })
  if (spoil === 'bad') signature = Buffer.from(signature, 'base64').reverse().toString('base64')
  if (spoil === 'probe') signature = SIGNTEST_PREFIX + signature.slice(SIGNTEST_PREFIX.length)
  return {
    'wechatpay-timestamp': timestamp,
    'wechatpay-nonce': nonce,
    'wechatpay-signature': signature,
    'wechatpay-serial': serial,
    'wechatpay-signature-type': AUTH_SCHEME
  }
}

/** AEAD_AES_256_GCM with an APIv3 key, as WeChat Pay encrypts certificates and notification resources. */
export function encryptResource (apiv3Key: string, plaintext: string, associatedData: string): { algorithm: 'AEAD_AES_256_GCM', nonce: string, associated_data: string, ciphertext: string } {
  const nonce = randomBytes(6).toString('hex')
  const cipher = createCipheriv('aes-256-gcm', Buffer.from(apiv3Key), Buffer.from(nonce))
  cipher.setAAD(Buffer.from(associatedData))
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]).toString('base64')
  return { algorithm: 'AEAD_AES_256_GCM', nonce, associated_data: associatedData, ciphertext }
}
