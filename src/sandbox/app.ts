import { randomUUID } from 'node:crypto'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { matchUpstream, wechatQuery } from '../wechat/operations.js'
import type { KeyMode } from '../wechat/profile.js'
import { carryOut, type Outcome } from './business.js'
import { carriesOut, FaultQueue, RESERVED_PREFIX } from './faults.js'
import type { SandboxMerchant, SandboxMerchants } from './merchants.js'
import { authenticate, beijingTime, encryptResource, fail, paramError, parseQuery, protocolError, signatureHeaders, signingKey, type Spoil, type WechatError } from './protocol.js'
import type { PresignedAnswers } from './presigned.js'
import { SandboxState } from './state.js'
import { controlRoutes } from './control.js'
import { Notifier, type NotificationEvent, type NotifyOptions } from './notifier.js'

/**
 * A WeChat Pay API v3 simulator for several merchants. It checks requests as WeChat Pay does (docs/wechatpay.md),
 * each with the key of the merchant that signed it, carries them out on the state it remembers (state.ts), answers
 * as WeChat Pay does, and signs every answer to an authenticated request with that merchant's WeChat Pay key. Not
 * for production traffic: it holds the "WeChat Pay" private keys of the sandbox.
 */

export type { KeyMode }

export interface SandboxOptions {
  merchants: SandboxMerchants
  logger: FastifyBaseLogger
  /** Which key signs answers. `public-key`: a merchant with no platform certificates (new merchants since 2024);
   *  `certificate`: platform certificates only; `migration`: both, chosen by the request's `Wechatpay-Serial`. */
  keyMode?: KeyMode
  /** How long the SLOW fault waits. */
  slowMs?: number
  /** Benchmarks: every operation succeeds (no state: the same order can be paid again), and no notification is sent. */
  bench?: boolean
  /** Benchmarks: empty answers signed ahead of time, per merchant name (presigned.ts). */
  presigned?: PresignedAnswers
  /** Enforce the notices' 07:00-22:00 Beijing-time window (default on). */
  noticeWindow?: boolean
  /** The clock of the state: paid times and the notice window (tests pin it). */
  clock?: () => Date
  /** Notifications (回调通知) of business events: where to, and how fast the resends go. */
  notify?: NotifyOptions
}

export interface RecordedRequest {
  at: string
  method: string
  url: string
  operation?: string
  /** The merchant that signed it, once authenticated. */
  mchid?: string
  headers: Record<string, string | undefined>
  body: string
  status?: number
  fault?: string
}

declare module 'fastify' {
  interface FastifyInstance {
    sandbox: { faults: FaultQueue, requests: RecordedRequest[], keyMode: KeyMode, merchants: SandboxMerchants, state: SandboxState, notifier: Notifier }
  }
}

const MAX_RECORDED = 500

export function buildSandbox (options: SandboxOptions): FastifyInstance {
  const { merchants, bench = false } = options
  const slowMs = options.slowMs ?? 15_000
  const app = Fastify({ loggerInstance: options.logger, logController: new LogController({ disableRequestLogging: true }), forceCloseConnections: true, bodyLimit: 1024 * 1024 })
  const faults = new FaultQueue()
  const requests: RecordedRequest[] = []
  // Benchmarks measure the gateway: no notification goes out by itself.
  const notifier = new Notifier(options.notify ?? {}, !bench, () => app.sandbox.keyMode, options.logger)
  app.decorate('sandbox', { faults, requests, keyMode: options.keyMode ?? 'public-key', merchants, state: new SandboxState(options.clock), notifier })
  app.addHook('onClose', () => notifier.close())
  const noticeWindow = options.noticeWindow ?? true
  const state = app.sandbox
  const notify = (merchant: SandboxMerchant, event: NotificationEvent): void => { notifier.notify(merchant, event) }

  // Keep raw bytes: signatures are over exactly what was sent.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => { done(null, body) })


  /**
   * Sends an answer as WeChat Pay does: signed with `merchant`'s key when the request was authenticated (WeChat Pay
   * signs only answers to requests whose signature it verified: docs/wechatpay.md §4), spoiled on purpose by `spoil`.
   */
  async function answer (request: FastifyRequest, reply: FastifyReply, status: number, body: string,
    merchant: SandboxMerchant | undefined, spoil?: Spoil): Promise<FastifyReply> {
    const entry = recorded.get(request)
    if (entry !== undefined && entry.status === undefined) entry.status = status
    const signer = merchant === undefined ? undefined : signingKey(merchant, state.keyMode, request.headers['wechatpay-serial'] as string | undefined)
    const presigned = signer !== undefined && merchant !== undefined && body === '' && spoil === undefined
      ? options.presigned?.take(merchant.ids.name, signer.serial)
      : undefined
    const signed = signer === undefined ? {} : presigned ?? await signatureHeaders(signer, body, spoil)
    void reply.code(status).headers({ 'request-id': randomUUID().replaceAll('-', ''), ...signed })
    if (body === '') return reply.send()
    return reply.type(body.startsWith('<') ? 'text/html' : 'application/json').send(body)
  }

  function answerError (request: FastifyRequest, reply: FastifyReply, error: WechatError, merchant?: SandboxMerchant, spoil?: Spoil): Promise<FastifyReply> {
    const { status, ...body } = error
    return answer(request, reply, status, JSON.stringify(body), merchant, spoil)
  }

  /** Each request's entry in `requests`: concurrent calls must not write their status on each other's. */
  const recorded = new WeakMap<FastifyRequest, RecordedRequest>()

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
    recorded.set(request, entry)
    return entry
  }

  /** Protocol rules, then the signature: the merchant that signed, or the (unsigned) refusal already sent. */
  async function admit (request: FastifyRequest, reply: FastifyReply, raw: Buffer, entry: RecordedRequest): Promise<{ merchant: SandboxMerchant, nonce: string } | undefined> {
    const protocol = protocolError(request.method, request.headers)
    if (protocol !== undefined) {
      await answerError(request, reply, protocol)
      return undefined
    }
    const auth = authenticate(merchants, request, raw)
    if ('status' in auth) {
      await answerError(request, reply, auth)
      return undefined
    }
    entry.mchid = auth.merchant.ids.mchid
    return auth
  }

  app.get('/healthz', async () => ({ status: 'ok', key_mode: state.keyMode, merchants: merchants.all.map(m => ({ name: m.ids.name, type: m.ids.type, mchid: m.ids.mchid })) }))

  app.get('/v3/certificates', async (request, reply) => {
    const entry = record(request, Buffer.alloc(0))
    const auth = await admit(request, reply, Buffer.alloc(0), entry)
    if (auth === undefined) return reply
    const { merchant } = auth
    if (state.keyMode === 'public-key') {
      return answerError(request, reply, fail(404, 'RESOURCE_NOT_EXISTS', '无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥。可查看指引https://pay.weixin.qq.com/docs/merchant/products/platform-certificate/wxp-pub-key-guide/'), merchant)
    }
    const effective = new Date(merchant.platformCertExpiry.getTime() - 5 * 365 * 24 * 3600_000)
    const data = [{
      serial_no: merchant.ids.platform_cert_serial,
      effective_time: beijingTime(effective),
      expire_time: beijingTime(merchant.platformCertExpiry),
      encrypt_certificate: encryptResource(merchant.apiv3Key, merchant.platformCertPem, 'certificate')
    }]
    return answer(request, reply, 200, JSON.stringify({ data }), merchant)
  })

  app.route({
    method: ['POST', 'GET', 'PUT', 'PATCH', 'DELETE'],
    url: '/v3/*',
    handler: async (request, reply) => {
      const raw = (request.body as Buffer | undefined) ?? Buffer.alloc(0)
      const queryAt = request.url.indexOf('?')
      const path = queryAt < 0 ? request.url : request.url.slice(0, queryAt)
      const matched = matchUpstream(path)
      const entry = record(request, raw, matched?.op.id)
      const auth = await admit(request, reply, raw, entry)
      if (auth === undefined) return reply
      const { merchant } = auth
      const refuse = (error: WechatError): Promise<FastifyReply> => answerError(request, reply, error, merchant)
      if (matched === undefined) return refuse(fail(404, 'NOT_FOUND', `${path} 不存在 / no such API`))
      if (request.method !== matched.op.method) return refuse(fail(405, 'METHOD_NOT_ALLOWED', 'method not allowed'))

      const { op, params } = matched
      // A direct merchant cannot call a service provider's API, nor the reverse.
      if (merchant.ids.type !== op.merchant.type) {
        return refuse(fail(403, 'NO_AUTH', `商户 ${merchant.ids.mchid} 无权限调用此接口 / merchant ${merchant.ids.mchid} is a ${merchant.ids.type === 'direct' ? 'direct merchant' : 'service provider'}, this API is for ${op.merchant.type === 'direct' ? 'direct merchants' : 'service providers'}`))
      }
      const paramCheck = op.params.safeParse(params)
      if (!paramCheck.success) return refuse(paramError(paramCheck.error, params, 'path'))
      let fields: Record<string, unknown>
      if (op.method === 'GET') {
        const query = parseQuery(queryAt < 0 ? '' : request.url.slice(queryAt + 1))
        if (typeof query === 'string') return refuse(fail(400, 'PARAM_ERROR', query))
        const queryCheck = wechatQuery(op).safeParse(query)
        if (!queryCheck.success) return refuse(paramError(queryCheck.error, query, 'query'))
        fields = query
      } else {
        let body: unknown
        try {
          body = JSON.parse(raw.toString('utf8'))
        } catch {
          return refuse(fail(400, 'PARAM_ERROR', '请求体不是合法的 JSON / the body is not valid JSON'))
        }
        const bodyCheck = op.body.safeParse(body)
        if (!bodyCheck.success) return refuse(paramError(bodyCheck.error, body, 'body'))
        if (op.merchant.forwarded && bodyCheck.data[op.merchant.field] !== merchant.ids.mchid) {
          return refuse(fail(400, 'INVALID_REQUEST', `${op.merchant.field} 与签名的商户号不一致 / ${op.merchant.field} is not the signing merchant`))
        }
        fields = bodyCheck.data
      }

      // Reserved ids strike the operations only: the order a fault struck can then be queried.
      const reserved = op.method === 'POST' ? Object.values(params).find(v => v.startsWith(RESERVED_PREFIX)) ?? '' : ''
      const taken = faults.take(op.id, reserved, auth.nonce)
      if (taken !== undefined) entry.fault = taken.name
      const fault = taken?.fault
      if (!carriesOut(fault)) {
        if (fault?.kind === 'error') return answerError(request, reply, fail(fault.status, fault.code, fault.message), merchant, fault.unsigned === true ? 'unsigned' : undefined)
        if (fault?.kind === 'reset') return resetConnection(request, reply, entry)
        return answer(request, reply, 202, '', merchant)
      }
      const outcome: Outcome = bench && op.method === 'POST'
        ? { status: 204 }
        : carryOut(state.state, op, merchant, { params, fields }, { noticeWindow, notify })
      if (fault?.kind === 'proxy') {
        entry.status = fault.status
        return reply.code(fault.status).type('text/html').send(`<html><head><title>${fault.status} Gateway Time-out</title></head><body><center><h1>${fault.status} Gateway Time-out</h1></center><hr><center>nginx</center></body></html>`)
      }
      if (fault?.kind === 'reset') return resetConnection(request, reply, entry)
      if (fault?.kind === 'slow') await new Promise(resolve => setTimeout(resolve, taken?.delayMs ?? slowMs))
      if (fault?.kind === 'not-json') return answer(request, reply, 200, '<html><body>502 Bad Gateway</body></html>', merchant)
      const spoil = fault?.kind === 'signature' ? fault.variant : undefined
      if ('code' in outcome) return answerError(request, reply, outcome, merchant, spoil)
      return answer(request, reply, outcome.status, outcome.status === 200 ? outcome.body : '', merchant, spoil)
    }
  })

  function resetConnection (request: FastifyRequest, reply: FastifyReply, entry: RecordedRequest): FastifyReply {
    entry.status = 0
    request.raw.socket.resetAndDestroy()
    return reply.hijack()
  }

  controlRoutes(app)

  return app
}
