import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify'
import { serverOptions, type HttpTimings } from '../plugins/connections.js'
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

export type ReceivedResult = ReceiveResult | 'unverified' | 'probe' | 'undecryptable' | 'unavailable' | 'unknown_profile'

/** The metric label of a POST to a path that names no profile: never the path's text, so series stay bounded. */
const UNKNOWN_PROFILE = 'OTHER'
/** A wrong notify_url is logged at most this often (the internet can POST anything, as often as it likes). */
const UNKNOWN_PROFILE_LOG_MS = 60_000

export interface ListenerOptions {
  logger: FastifyBaseLogger
  profiles: MerchantProfiles
  relay: Relay
  subscribers: Subscriber[]
  /** Every notification's outcome, for metrics. */
  onReceived: (merchant: string, eventType: string, result: ReceivedResult) => void
  /** The main port's timeouts (the notifications plugin applies its connection caps to this listener too). */
  http: HttpTimings
}

export function buildNotifyListener (opts: ListenerOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: opts.logger.child({ listener: 'notify' }),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT,
    ...serverOptions(opts.http),
    return503OnClosing: true
  })
  // The signature covers the exact bytes: nothing parses the body before it is verified.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => { done(null, body) })

  const fail = (reply: FastifyReply, status: number): FastifyReply => reply.code(status).type('application/json').send(FAIL)

  app.get('/healthz', async () => ({ status: 'ok' }))

  // A notify_url with a mistyped profile would otherwise fail unseen: WeChat Pay just resends, then gives up.
  let unknownLoggedAt = -Infinity
  let unlogged = 0
  const unknownProfile = (request: { ip: string, log: FastifyBaseLogger }, name: string): void => {
    opts.onReceived(UNKNOWN_PROFILE, 'unknown', 'unknown_profile')
    const now = Date.now()
    if (now - unknownLoggedAt < UNKNOWN_PROFILE_LOG_MS) {
      unlogged++
      return
    }
    request.log.warn({ profile: name.slice(0, 64), client: request.ip, unlogged, profiles: opts.profiles.all.map(p => p.name) },
      'notification for a merchant profile this gateway does not have: answered 404; check the notify_url given to WeChat Pay (one such line a minute at most; the metric counts each)')
    unknownLoggedAt = now
    unlogged = 0
  }

  app.post<{ Params: { merchant: string } }>(`${NOTIFY_PATH}/:merchant`, async (request, reply) => {
    const profile = opts.profiles.byName(request.params.merchant)
    if (profile === undefined) {
      unknownProfile(request, request.params.merchant)
      return fail(reply, 404)
    }
    const raw = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0)
    const opened = await openNotification({ keys: profile.keys, apiv3Key: profile.apiv3Key(), previousApiv3Key: profile.previousApiv3Key() }, request.headers, raw)
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
