import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify'
import type { MerchantProfiles } from '../wechat/profiles.js'
import { openNotification } from './envelope.js'
import { keyOf, type ReceiveResult, type Relay, type RelayEvent } from './relay.js'
import { matches, type Subscriber } from './subscribers.js'

/**
 * The only listener that faces the internet: WeChat Pay's notifications, one URL per merchant profile
 * (`/wechatpay/notify/<profile>`, the `notify_url`), and a health check. Nothing else of the gateway is served here.
 */

export const NOTIFY_PATH = '/wechatpay/notify'
/** WeChat Pay's notifications are a few KB. */
const BODY_LIMIT = 64 * 1024
/** What WeChat Pay expects on failure (docs/wechatpay.md §8); it then sends the notification again. */
const FAIL = { code: 'FAIL', message: '失败' }

export type ReceivedResult = ReceiveResult | 'unverified' | 'probe' | 'undecryptable' | 'unavailable'

export interface ListenerOptions {
  logger: FastifyBaseLogger
  profiles: MerchantProfiles
  relay: Relay
  subscribers: Subscriber[]
  /** Every notification's outcome, for metrics. */
  onReceived: (merchant: string, eventType: string, result: ReceivedResult) => void
  http: { requestTimeoutMs: number, keepAliveTimeoutMs: number }
}

export function buildNotifyListener (opts: ListenerOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: opts.logger.child({ listener: 'notify' }),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT,
    requestTimeout: opts.http.requestTimeoutMs,
    keepAliveTimeout: opts.http.keepAliveTimeoutMs,
    return503OnClosing: true
  })
  // The signature covers the exact bytes: nothing parses the body before it is verified.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => { done(null, body) })

  const fail = (reply: FastifyReply, status: number): FastifyReply => reply.code(status).type('application/json').send(FAIL)

  app.get('/healthz', async () => ({ status: 'ok' }))

  app.post<{ Params: { merchant: string } }>(`${NOTIFY_PATH}/:merchant`, async (request, reply) => {
    const profile = opts.profiles.byName(request.params.merchant)
    if (profile === undefined) return fail(reply, 404)
    const raw = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0)
    const opened = await openNotification({ keys: profile.keys, apiv3Key: profile.config.apiv3Key }, request.headers, raw)
    const log = request.log.child({ merchant: profile.name })
    if (!opened.ok) {
      opts.onReceived(profile.name, 'unknown', opened.result)
      if (opened.result === 'undecryptable') {
        log.error({ result: opened.result, reason: opened.message }, 'notification verified but NOT readable: answered 500 so that WeChat Pay sends it again; fix the APIv3 key of this profile')
      } else {
        log.warn({ result: opened.result, reason: opened.message }, 'notification refused: its signature does not verify (nothing relayed)')
      }
      return fail(reply, opened.status)
    }
    const { notification } = opened
    const event: RelayEvent = {
      id: notification.id,
      event_type: notification.event_type,
      create_time: notification.create_time,
      summary: notification.summary,
      merchant: profile.name,
      mchid: profile.mchid,
      ...(notification.original_type !== undefined && { original_type: notification.original_type }),
      resource: notification.resource,
      received_at: new Date().toISOString()
    }
    const subscribers = opts.subscribers.filter(s => matches(s, profile.name, event.event_type))
    let result: ReceivedResult
    try {
      result = await opts.relay.receive(event, subscribers)
    } catch (err) {
      result = 'unavailable'
      log.error({ notification: keyOf(event), reason: (err as Error).message }, 'notification could not be stored (Redis): answered 500 so that WeChat Pay sends it again')
    }
    opts.onReceived(profile.name, event.event_type, result)
    log.info({ notification: keyOf(event), eventType: event.event_type, result, subscribers: subscribers.map(s => s.name) }, 'notification')
    return result === 'failed' || result === 'unavailable' ? fail(reply, 500) : reply.code(204).send()
  })

  app.setNotFoundHandler((_request, reply) => fail(reply, 404))
  app.setErrorHandler((err: { statusCode?: number }, request, reply) => {
    const status = err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500
    if (status === 500) request.log.error({ err }, 'notification listener error')
    return fail(reply, status)
  })
  return app
}
