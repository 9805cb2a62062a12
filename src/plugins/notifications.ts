import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { Counter, Gauge } from 'prom-client'
import type { Dispatcher } from 'undici'
import { buildNotifyListener, type ReceivedResult } from '../notifications/listener.js'
import { MemoryRelay } from '../notifications/memory-relay.js'
import { RedisRelay } from '../notifications/redis-relay.js'
import { Deliverer, keyOf, type Relay } from '../notifications/relay.js'
import type { NotifyConfig } from '../config.js'
import type { HttpTimings } from './connections.js'

declare module 'fastify' {
  interface FastifyInstance {
    notifications: {
      relay: Relay
      /** Starts the notification listener (when NOTIFY_PORT is not `off`); its address. */
      listen: () => Promise<string | undefined>
    }
  }
}

/** The notification settings (config.ts; no port: no listener), and what the plugin needs besides. */
export interface NotifyOptions extends NotifyConfig {
  http: HttpTimings
  /** Tests: how often the Redis relay looks for deliveries to retry. */
  pollMs?: number
  dispatcher?: Dispatcher
}

/** Event types worth a metric label of their own (docs/wechatpay.md §8); any other is OTHER. */
const KNOWN_EVENTS = new Set(['PAYSCORE.USER_CONFIRM', 'PAYSCORE.USER_PAID', 'PAYSCORE.USER_OPEN_SERVICE', 'PAYSCORE.USER_CLOSE_SERVICE',
  'ENTRUST.SIGN', 'ENTRUST.TERMINATE', 'TRANSACTION.SUCCESS', 'TRANSACTION.FAIL', 'unknown'])

/**
 * WeChat Pay's longest resend schedule (v3 payment results: 15 resends over 24 h 4 min, docs/wechatpay.md §8). With
 * Redis, WeChat Pay is answered at once, so the relay's own retries must last at least as long.
 */
const WECHAT_RESEND_MS = 86_640_000

/**
 * WeChat Pay's notifications: the public listener (notifications/listener.ts), the relay to subscribers (in memory
 * and synchronous, or stored in Redis and delivered with retries), and their metrics.
 */
async function notifications (app: FastifyInstance, opts: NotifyOptions): Promise<void> {
  const { registry } = app.metrics
  const received = new Counter({ name: 'wechatpay_gateway_notifications_received_total', help: 'Notifications from WeChat Pay, by merchant profile (OTHER: a path naming no profile), event type and result (stored, delivered, duplicate, failed, unverified, probe, undecryptable, unavailable, unknown_profile)', labelNames: ['merchant', 'event_type', 'result'], registers: [registry] })
  const deliveries = new Counter({ name: 'wechatpay_gateway_notification_deliveries_total', help: 'Attempts to deliver a notification to a subscriber, by outcome (delivered, failed, gave_up)', labelNames: ['subscriber', 'outcome'], registers: [registry] })
  const deliverer = new Deliverer({
    timeoutMs: opts.deliveryTimeoutMs,
    ...(opts.dispatcher !== undefined && { dispatcher: opts.dispatcher }),
    onAttempt: (subscriber, event, outcome, attempt) => {
      deliveries.inc({ subscriber: subscriber.name, outcome: outcome.ok ? 'delivered' : 'failed' })
      if (!outcome.ok) {
        app.log.warn({ notification: keyOf(event), subscriber: subscriber.name, attempt, status: outcome.status, error: outcome.error }, 'notification delivery failed')
      }
    }
  })
  const subscribers = new Map(opts.subscribers.map(s => [s.name, s]))
  const relay: Relay = app.redis === null
    ? new MemoryRelay(deliverer, subscribers)
    : new RedisRelay(app.redis, deliverer, subscribers, {
      retryBaseMs: opts.retry.baseMs,
      retryMaxMs: opts.retry.maxMs,
      retryHorizonMs: opts.retry.horizonMs,
      retentionMs: opts.retentionMs,
      deliveryTimeoutMs: opts.deliveryTimeoutMs,
      ...(opts.pollMs !== undefined && { pollMs: opts.pollMs }),
      onGiveUp: subscriber => { deliveries.inc({ subscriber, outcome: 'gave_up' }) }
    }, app.log)

  new Gauge({ // eslint-disable-line no-new
    name: 'wechatpay_gateway_notification_oldest_undelivered_seconds',
    help: 'Age of the oldest notification still waiting for a subscriber (0: none)',
    registers: [registry],
    async collect () {
      this.set(await relay.oldestUndeliveredSeconds().catch(() => 0))
    }
  })

  const listener = opts.port === undefined
    ? undefined
    : buildNotifyListener({
      logger: app.log,
      profiles: app.merchants,
      relay,
      subscribers: opts.subscribers,
      http: opts.http,
      onReceived: (merchant: string, eventType: string, result: ReceivedResult) => {
        received.inc({ merchant, event_type: KNOWN_EVENTS.has(eventType) ? eventType : 'OTHER', result })
      }
    })

  if (listener !== undefined) {
    // The internet-facing listener may hold half of the open files at most: the internal port keeps the rest.
    app.limitConnections(listener.server, 0.5)
    for (const profile of app.merchants.all) {
      if (profile.apiv3Key() !== undefined) continue
      app.log.warn({ merchant: profile.name }, `merchant profile ${profile.name} has no APIv3 key (${profile.config.labels.apiv3Key}): every notification for it will be answered 500 and never relayed; set it, or NOTIFY_PORT=off if this gateway receives no notifications`)
    }
  }
  if (app.redis !== null && opts.retry.horizonMs < WECHAT_RESEND_MS) {
    app.log.warn(`NOTIFY_RETRY_HORIZON_S is ${opts.retry.horizonMs / 1000} s, less than WeChat Pay's own resends (up to ${WECHAT_RESEND_MS / 1000} s): a notification is stored and acknowledged at once, so a subscriber down for longer misses it unless an operator redelivers it (the default is 25 h)`)
  }

  app.decorate('notifications', {
    relay,
    listen: async () => {
      if (listener === undefined || opts.port === undefined) return undefined
      return await listener.listen({ host: opts.host, port: opts.port })
    }
  })
  app.addHook('onReady', async () => { relay.start() })
  app.addHook('onClose', async () => {
    await listener?.close()
    await relay.close()
  })
}

export default fp(notifications, { name: 'notifications', fastify: '5.x', dependencies: ['redis', 'metrics', 'merchants', 'connections'] })
