import { createCipheriv, randomBytes, randomUUID, sign, verify, generateKeyPairSync, type KeyObject } from 'node:crypto'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { z } from 'zod'
import { matchUpstream } from '../wechat/operations.js'
import { AUTH_SCHEME, requestMessage } from '../wechat/signer.js'
import { BASE64, responseMessage, SIGNTEST_PREFIX } from '../wechat/verifier.js'
import { FAULTS, FaultQueue, type Fault } from './faults.js'
import type { SandboxIdentity } from './identity.js'

/**
 * A WeChat Pay API v3 simulator. It checks requests as WeChat Pay does (PROTOCOL.md A, C), answers 204 or
 * WeChat-shaped errors, and signs every answer, errors included (B). Not for production traffic: it holds the
 * "WeChat Pay" private keys of the sandbox.
 */

/** Which key signs answers. `public-key`: a merchant with no platform certificates (new merchants since 2024);
 *  `certificate`: platform certificates only; `migration`: both, chosen by the request's `Wechatpay-Serial`. */
export type KeyMode = 'public-key' | 'certificate' | 'migration'

export interface SandboxOptions {
  identity: SandboxIdentity
  logger: FastifyBaseLogger
  keyMode?: KeyMode
  /** How long the SLOW fault waits. */
  slowMs?: number
  /** Benchmarks: reuse each answer's signature for the rest of its second, so the simulator is never the bottleneck. */
  bench?: boolean
}

export interface RecordedRequest {
  at: string
  method: string
  url: string
  operation?: string
  headers: Record<string, string | undefined>
  body: string
  status?: number
  fault?: string
}

declare module 'fastify' {
  interface FastifyInstance {
    sandbox: { faults: FaultQueue, requests: RecordedRequest[], keyMode: KeyMode }
  }
}

const MAX_RECORDED = 500
const MAX_SKEW_SECONDS = 300

interface WechatError { status: number, code: string, message: string, detail?: Record<string, unknown> }

const fail = (status: number, code: string, message: string, detail?: Record<string, unknown>): WechatError =>
  ({ status, code, message, ...(detail !== undefined && { detail }) })

/** `Asia/Shanghai` RFC 3339, as WeChat Pay writes times. */
function beijingTime (date: Date): string {
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

function pointer (path: PropertyKey[]): string {
  return '/' + path.map(String).join('/')
}

function valueAt (body: unknown, path: PropertyKey[]): unknown {
  let value = body
  for (const key of path) value = (value as Record<PropertyKey, unknown> | undefined)?.[key]
  return value
}

/** The first zod issue as WeChat Pay's `PARAM_ERROR` detail. */
function paramError (error: z.ZodError, body: unknown, location: 'body' | 'path'): WechatError {
  const issue = error.issues[0] as z.core.$ZodIssue
  const keys = (issue as { keys?: string[] }).keys
  const path = keys !== undefined ? [...issue.path, keys[0] as string] : issue.path
  return fail(400, 'PARAM_ERROR', '参数错误', {
    field: location === 'body' ? pointer(path) : String(path[0]),
    value: valueAt(body, path) ?? null,
    issue: keys !== undefined ? 'unknown field' : issue.message,
    location
  })
}

export function buildSandbox (options: SandboxOptions): FastifyInstance {
  const { identity, bench = false } = options
  const slowMs = options.slowMs ?? 15_000
  const app = Fastify({ loggerInstance: options.logger, logController: new LogController({ disableRequestLogging: true }), forceCloseConnections: true, bodyLimit: 1024 * 1024 })
  const faults = new FaultQueue()
  const requests: RecordedRequest[] = []
  app.decorate('sandbox', { faults, requests, keyMode: options.keyMode ?? 'public-key' })
  const state = app.sandbox
  const { json } = identity
  // A key nobody knows, for the UNKNOWN_SERIAL fault.
  const strangerKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey

  // Keep raw bytes: signatures are over exactly what was sent.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => { done(null, body) })

  const signatureCache = new Map<string, { timestamp: string, nonce: string, signature: string }>()

  function signer (request: FastifyRequest): { key: KeyObject, serial: string } {
    const usePublicKey = state.keyMode === 'public-key' ||
      (state.keyMode === 'migration' && request.headers['wechatpay-serial'] === json.wechatpay_public_key_id)
    return usePublicKey
      ? { key: identity.publicKeySigner, serial: json.wechatpay_public_key_id }
      : { key: identity.platformSigner, serial: json.platform_cert_serial }
  }

  /** Signs and sends an answer as WeChat Pay does; `variant` spoils it on purpose. */
  function answer (request: FastifyRequest, reply: FastifyReply, status: number, body: string,
    variant?: Extract<Fault, { kind: 'signature' }>['variant']): FastifyReply {
    let { key, serial } = signer(request)
    const now = Math.floor(Date.now() / 1000)
    let timestamp = String(variant === 'stale' ? now - 600 : now)
    let nonce = randomBytes(16).toString('hex')
    if (variant === 'unknown-serial') {
      key = strangerKey
      serial = 'PUB_KEY_ID_0000000000000000000000000000UNKNOWN'
    }
    let signature: string
    const cacheKey = `${timestamp}|${serial}|${status}|${body}`
    const cached = bench && variant === undefined ? signatureCache.get(cacheKey) : undefined
    if (cached !== undefined) {
      ({ timestamp, nonce, signature } = cached)
    } else {
      signature = sign('sha256', responseMessage(timestamp, nonce, Buffer.from(body)), key).toString('base64')
      if (bench && variant === undefined) {
        if (signatureCache.size > 1000) signatureCache.clear()
        signatureCache.set(cacheKey, { timestamp, nonce, signature })
      }
    }
    if (variant === 'bad') signature = Buffer.from(signature, 'base64').reverse().toString('base64')
    if (variant === 'probe') signature = SIGNTEST_PREFIX + signature.slice(SIGNTEST_PREFIX.length)
    void reply.code(status).header('request-id', randomUUID().replaceAll('-', ''))
    if (variant !== 'unsigned') {
      void reply.headers({
        'wechatpay-timestamp': timestamp,
        'wechatpay-nonce': nonce,
        'wechatpay-signature': signature,
        'wechatpay-serial': serial,
        'wechatpay-signature-type': AUTH_SCHEME
      })
    }
    if (body === '') return reply.send()
    return reply.type(body.startsWith('<') ? 'text/html' : 'application/json').send(body)
  }

  /** WeChat Pay signs an answer only once it has verified the request's signature (PROTOCOL.md B.4). */
  function answerError (request: FastifyRequest, reply: FastifyReply, error: WechatError, unsigned = error.code === 'SIGN_ERROR'): FastifyReply {
    const record = requests.at(-1)
    if (record !== undefined) record.status = error.status
    const { status, ...body } = error
    return answer(request, reply, status, JSON.stringify(body), unsigned ? 'unsigned' : undefined)
  }

  /** Checks the request's signature as WeChat Pay does; returns the Authorization fields or the error to answer. */
  function authenticate (request: FastifyRequest, raw: Buffer): Record<string, string> | WechatError {
    const fields = parseAuthorization(request.headers.authorization)
    const signError = (issue: string, extra?: Record<string, unknown>): WechatError =>
      fail(401, 'SIGN_ERROR', '签名错误，请检查后再试', { detail: { issue }, field: 'signature', location: 'authorization', ...extra })
    if (typeof fields === 'string') return signError(fields)
    if (fields.mchid !== json.mchid) return signError(`mchid ${fields.mchid ?? ''} is not a merchant of this sandbox (${json.mchid})`)
    if (fields.serial_no?.toUpperCase() !== json.merchant_serial) {
      return signError(`serial_no ${fields.serial_no ?? ''} is not the merchant certificate serial registered for ${json.mchid}`)
    }
    const timestamp = fields.timestamp ?? ''
    if (!/^\d{1,12}$/.test(timestamp) || Math.abs(Date.now() / 1000 - Number(timestamp)) > MAX_SKEW_SECONDS) {
      return signError('timestamp is not within 5 minutes of the server time')
    }
    const message = requestMessage(request.method, request.url, timestamp, fields.nonce_str ?? '', raw.toString('utf8'))
    const ok = BASE64.test(fields.signature ?? '') &&
      verify('sha256', Buffer.from(message), identity.merchantPublicKey, Buffer.from(fields.signature ?? '', 'base64'))
    if (!ok) {
      // WeChat Pay shows the start of the message it computed, the first thing to compare when debugging.
      return signError('sign not match', {
        sign_information: {
          method: request.method,
          url: request.url,
          sign_message_length: Buffer.byteLength(message),
          truncated_sign_message: truncate(message)
        }
      })
    }
    return fields
  }

  function record (request: FastifyRequest, raw: Buffer, operation?: string): RecordedRequest {
    const entry: RecordedRequest = {
      at: new Date().toISOString(),
      method: request.method,
      url: request.url,
      ...(operation !== undefined && { operation }),
      headers: {
        authorization: request.headers.authorization,
        'user-agent': request.headers['user-agent'],
        accept: request.headers.accept,
        'content-type': request.headers['content-type'],
        'wechatpay-serial': request.headers['wechatpay-serial'] as string | undefined,
        traceparent: request.headers.traceparent as string | undefined
      },
      body: raw.toString('utf8')
    }
    if (requests.length >= MAX_RECORDED) requests.shift()
    requests.push(entry)
    return entry
  }

  /** Rules every v3 call must follow before its signature is even looked at. */
  function protocolError (request: FastifyRequest): WechatError | undefined {
    if (request.headers['user-agent'] === undefined) return fail(400, 'INVALID_REQUEST', 'HTTP 头缺少 User-Agent / the User-Agent header is missing')
    const accept = request.headers.accept ?? ''
    if (!accept.includes('application/json') && !accept.includes('*/*')) return fail(400, 'INVALID_REQUEST', 'Accept 必须为 application/json / Accept must be application/json')
    if (request.method === 'POST' && !(request.headers['content-type'] ?? '').startsWith('application/json')) {
      return fail(400, 'INVALID_REQUEST', 'Content-Type 必须为 application/json / Content-Type must be application/json')
    }
    return undefined
  }

  app.get('/healthz', async () => ({ status: 'ok', mchid: json.mchid, key_mode: state.keyMode }))

  app.get('/v3/certificates', async (request, reply) => {
    record(request, Buffer.alloc(0))
    const error = protocolError(request)
    if (error !== undefined) return answerError(request, reply, error)
    const auth = authenticate(request, Buffer.alloc(0))
    if ('status' in auth) return answerError(request, reply, auth as WechatError)
    if (state.keyMode === 'public-key') {
      return answerError(request, reply, fail(404, 'RESOURCE_NOT_EXISTS', '无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥。可查看指引https://pay.weixin.qq.com/docs/merchant/products/platform-certificate/wxp-pub-key-guide/'))
    }
    const nonce = randomBytes(6).toString('hex')
    const cipher = createCipheriv('aes-256-gcm', Buffer.from(json.apiv3_key), Buffer.from(nonce))
    cipher.setAAD(Buffer.from('certificate'))
    const ciphertext = Buffer.concat([cipher.update(identity.platformCertPem), cipher.final(), cipher.getAuthTag()]).toString('base64')
    const effective = new Date(identity.platformCertExpiry.getTime() - 5 * 365 * 24 * 3600_000)
    const data = [{
      serial_no: json.platform_cert_serial,
      effective_time: beijingTime(effective),
      expire_time: beijingTime(identity.platformCertExpiry),
      encrypt_certificate: { algorithm: 'AEAD_AES_256_GCM', nonce, associated_data: 'certificate', ciphertext }
    }]
    const entry = requests.at(-1)
    if (entry !== undefined) entry.status = 200
    return answer(request, reply, 200, JSON.stringify({ data }))
  })

  app.route({
    method: ['POST', 'GET', 'PUT', 'PATCH', 'DELETE'],
    url: '/v3/*',
    handler: async (request, reply) => {
      const raw = (request.body as Buffer | undefined) ?? Buffer.alloc(0)
      const path = request.url.split('?')[0] ?? ''
      const matched = matchUpstream(path)
      const entry = record(request, raw, matched?.op.id)
      if (matched === undefined) return answerError(request, reply, fail(404, 'NOT_FOUND', `${path} 不存在 / no such API`))
      if (request.method !== matched.op.method) return answerError(request, reply, fail(405, 'METHOD_NOT_ALLOWED', 'method not allowed'))
      const protocol = protocolError(request)
      if (protocol !== undefined) return answerError(request, reply, protocol)
      const auth = authenticate(request, raw)
      if ('status' in auth) return answerError(request, reply, auth as WechatError)

      const { op, params } = matched
      const paramCheck = op.params.safeParse(params)
      if (!paramCheck.success) return answerError(request, reply, paramError(paramCheck.error, params, 'path'))
      let body: unknown
      try {
        body = JSON.parse(raw.toString('utf8'))
      } catch {
        return answerError(request, reply, fail(400, 'PARAM_ERROR', '请求体不是合法的 JSON / the body is not valid JSON'))
      }
      const bodyCheck = op.body.safeParse(body)
      if (!bodyCheck.success) return answerError(request, reply, paramError(bodyCheck.error, body, 'body'))
      const merchantField = Object.entries(op.merchantFields).find(([, setting]) => setting === 'mchid')?.[0]
      if (merchantField !== undefined && bodyCheck.data[merchantField] !== auth.mchid) {
        return answerError(request, reply, fail(400, 'INVALID_REQUEST', `${merchantField} 与签名的商户号不一致 / ${merchantField} is not the signing merchant`))
      }

      const pathValue = Object.values(params)[0] ?? ''
      const taken = faults.take(op.id, pathValue, auth.nonce_str ?? '')
      if (taken !== undefined) entry.fault = taken.name
      const fault = taken?.fault
      if (fault?.kind === 'error') return answerError(request, reply, fail(fault.status, fault.code, fault.message), fault.unsigned === true)
      if (fault?.kind === 'proxy') {
        entry.status = fault.status
        return reply.code(fault.status).type('text/html').send(`<html><head><title>${fault.status} Gateway Time-out</title></head><body><center><h1>${fault.status} Gateway Time-out</h1></center><hr><center>nginx</center></body></html>`)
      }
      if (fault?.kind === 'reset') {
        entry.status = 0
        request.raw.socket.resetAndDestroy()
        return reply.hijack()
      }
      if (fault?.kind === 'slow') await new Promise(resolve => setTimeout(resolve, taken?.delayMs ?? slowMs))
      entry.status = fault?.kind === 'accepted' ? 202 : fault?.kind === 'not-json' ? 200 : 204
      if (fault?.kind === 'not-json') return answer(request, reply, 200, '<html><body>502 Bad Gateway</body></html>')
      return answer(request, reply, entry.status, '', fault?.kind === 'signature' ? fault.variant : undefined)
    }
  })

  // ---- control API, for developers and tests --------------------------------------------------------------------
  app.get('/sandbox/requests', async () => ({ requests }))
  app.delete('/sandbox/requests', async (_request, reply) => {
    requests.length = 0
    return reply.code(204).send()
  })
  app.get('/sandbox/faults', async () => ({ faults: Object.fromEntries(Object.entries(FAULTS).map(([k, v]) => [k, v.what])) }))
  app.post('/sandbox/faults', async (request, reply) => {
    let spec: { fault?: unknown, times?: unknown, operation?: unknown, delay_ms?: unknown }
    try {
      spec = JSON.parse((request.body as Buffer).toString('utf8'))
    } catch {
      return reply.code(400).send({ code: 'PARAM_ERROR', message: 'send JSON: {"fault": "SYSTEM_ERROR", "times": 1}' })
    }
    if (typeof spec.fault !== 'string' || FAULTS[spec.fault] === undefined) {
      return reply.code(400).send({ code: 'PARAM_ERROR', message: `unknown fault; known: ${Object.keys(FAULTS).join(', ')}` })
    }
    faults.arm({
      fault: spec.fault,
      times: typeof spec.times === 'number' && spec.times > 0 ? spec.times : 1,
      ...(typeof spec.operation === 'string' && { operation: spec.operation }),
      ...(typeof spec.delay_ms === 'number' && { delayMs: spec.delay_ms })
    })
    return reply.code(204).send()
  })
  app.delete('/sandbox/faults', async (_request, reply) => {
    faults.clear()
    return reply.code(204).send()
  })
  app.put('/sandbox/key-mode', async (request, reply) => {
    const mode = (request.body as Buffer).toString('utf8').replaceAll('"', '').trim()
    if (mode !== 'public-key' && mode !== 'certificate' && mode !== 'migration') {
      return reply.code(400).send({ code: 'PARAM_ERROR', message: 'send "public-key", "certificate" or "migration"' })
    }
    state.keyMode = mode
    return reply.code(204).send()
  })

  return app
}
