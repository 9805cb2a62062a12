import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { Counter, Gauge } from 'prom-client'
import type { Dispatcher } from 'undici'
import { buildNotifyListener, type ReceivedResult } from '../notifications/listener.js'
import { MemoryRelay } from '../notifications/memory-relay.js'
import { RedisRelay } from '../notifications/redis-relay.js'
import { Deliverer, keyOf, type Relay } from '../notifications/relay.js'
import type { NotifyConfig } from '../config.js'

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
  http: { requestTimeoutMs: number, keepAliveTimeoutMs: number }
  /** Tests: how often the Redis relay looks for deliveries to retry. */
  pollMs?: number
  dispatcher?: Dispatcher
}

/** Event types worth a metric label of their own (docs/wechatpay.md §8); any other is OTHER. */
const KNOWN_EVENTS = new Set(['PAYSCORE.USER_CONFIRM', 'PAYSCORE.USER_PAID', 'PAYSCORE.USER_OPEN_SERVICE', 'PAYSCORE.USER_CLOSE_SERVICE',
  'ENTRUST.SIGN', 'ENTRUST.TERMINATE', 'TRANSACTION.SUCCESS', 'TRANSACTION.FAIL', 'unknown'])

/**
 * WeChat Pay's notifications: the public listener (notifications/listener.ts), the relay to subscribers (in memory
 * and synchronous, or stored in Redis and delivered with retries), and their metrics.
 */
async function notifications (app: FastifyInstance, opts: NotifyOptions): Promise<void> {
  const { registry } = app.metrics
  const received = new Counter({ name: 'wechatpay_gateway_notifications_received_total', help: 'Notifications from WeChat Pay, by merchant profile, event type and result (stored, delivered, duplicate, failed, unverified, probe, undecryptable, unavailable)', labelNames: ['merchant', 'event_type', 'result'], registers: [registry] })
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

export default fp(notifications, { name: 'notifications', fastify: '5.x', dependencies: ['redis', 'metrics', 'merchants'] })
