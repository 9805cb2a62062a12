import type { FastifyPluginAsyncZod } from '@fastify/type-provider-zod'
import type { FastifyBaseLogger } from 'fastify'
import { z } from 'zod'
import { gatewayError, validationError } from '../errors.js'
import { ErrorBody } from '../plugins/errors.js'
import { keyOf, type NotificationRecord } from '../notifications/relay.js'

/**
 * The relay's log, for operators (internal listener, caller tokens allowed `notifications`): recent notifications
 * with each subscriber's delivery state, one of them, and a new delivery of one.
 */

const Delivery = z.object({
  subscriber: z.string(),
  state: z.enum(['pending', 'delivered', 'failed']).describe('pending: being delivered or retried; failed: given up after NOTIFY_RETRY_HORIZON_S'),
  attempts: z.int(),
  last_attempt_at: z.string().optional(),
  last_status: z.int().optional().describe('The subscriber\'s HTTP status at the last attempt'),
  last_error: z.string().optional().describe('Why the last attempt got no status (TIMEOUT, ECONNREFUSED...)'),
  delivered_at: z.string().optional(),
  history: z.array(z.object({
    at: z.string(),
    status: z.int().optional().describe('The subscriber\'s HTTP status'),
    error: z.string().optional().describe('Why there was no status (TIMEOUT, ECONNREFUSED...)')
  })).optional().describe('The latest attempts (up to 10), oldest first')
})
/** The body POSTed to subscribers (relay.ts RelayEvent). */
const Event = z.object({
  id: z.string().describe('微信支付通知ID：订阅者的幂等键 / WeChat\'s notification id: the subscriber\'s idempotency key'),
  event_type: z.string().meta({ example: 'PAYSCORE.USER_PAID' }),
  create_time: z.string(),
  summary: z.string(),
  merchant: z.string().describe('商户配置名称 / Merchant profile name'),
  mchid: z.string(),
  original_type: z.string().optional(),
  resource: z.record(z.string(), z.unknown()).describe('解密后的业务数据 / The decrypted resource'),
  received_at: z.string()
}).describe('The body delivered to subscribers (README, "Notifications")')
const Record = z.object({
  key: z.string().describe('`<merchant>/<id>`'),
  event: Event,
  deliveries: z.array(Delivery)
}).meta({ id: 'NotificationRecord' })

const params = z.strictObject({
  merchant: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, 'must be a merchant profile name').describe('商户配置名称 / Merchant profile name'),
  id: z.string().min(1).max(64).describe('微信支付通知ID / WeChat Pay\'s notification id')
})
const errors = { 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 503: ErrorBody }
const common = { tags: ['notifications'], security: [{ bearer: [] }] }

const notificationRoutes: FastifyPluginAsyncZod = async (app) => {
  app.addHook('onRequest', app.authenticate)
  // The relay's store failing (Redis away or hung) is a clear 503, not an internal error with a driver's stack.
  const store = async <T>(log: FastifyBaseLogger, read: () => Promise<T>): Promise<T> => {
    try {
      return await read()
    } catch (err) {
      log.error({ reason: (err as Error).message }, 'the notification relay\'s store cannot be reached (REDIS_URL)')
      throw gatewayError('NOTIFICATIONS_STORE_UNAVAILABLE', 'The notification relay\'s store (Redis) cannot be reached; nothing was changed. Try again once /readyz is ready')
    }
  }
  // A caller limited to some merchant profiles sees their notifications only.
  const visible = (merchants: readonly string[] | undefined, record: NotificationRecord): boolean =>
    merchants === undefined || merchants.includes(record.event.merchant)
  const config = { operation: 'notifications' }

  app.get('/notifications', {
    config,
    schema: {
      ...common,
      operationId: 'listNotifications',
      summary: '最近的回调通知 / Recent notifications and their deliveries',
      description: 'Newest first. Without Redis: this replica\'s, in memory; with Redis: every replica\'s.',
      querystring: z.strictObject({ limit: z.coerce.number().int().min(1).max(500).default(50).describe('条数 / How many') }),
      response: { 200: z.object({ notifications: z.array(Record) }), ...errors }
    }
  }, async request => {
    return { notifications: await store(request.log, () => app.notifications.relay.list(request.query.limit, request.callerMerchants)) }
  })

  const find = async (log: FastifyBaseLogger, merchant: string, id: string, callerMerchants: readonly string[] | undefined): Promise<NotificationRecord> => {
    const record = await store(log, () => app.notifications.relay.get(keyOf({ merchant, id })))
    if (record === undefined || !visible(callerMerchants, record)) {
      throw gatewayError('NOTIFICATION_NOT_FOUND', `No notification ${id.slice(0, 64)} of merchant ${merchant} in the relay's log (kept NOTIFY_RETENTION_S; without Redis, in this replica's memory)`)
    }
    return record
  }

  app.get('/notifications/:merchant/:id', {
    config,
    schema: { ...common, operationId: 'getNotification', summary: '一条回调通知 / One notification and its deliveries', params, response: { 200: Record, ...errors } }
  }, async request => await find(request.log, request.params.merchant, request.params.id, request.callerMerchants))

  app.post('/notifications/:merchant/:id/redeliver', {
    config,
    schema: {
      ...common,
      operationId: 'redeliverNotification',
      summary: '重新投递 / Deliver a notification again',
      description: 'To every subscriber it was meant for, or to one. Without Redis the delivery is made before the answer; with Redis it is queued (its state is `pending`).',
      params,
      querystring: z.strictObject({ subscriber: z.string().min(1).max(32).optional().describe('只投递给此订阅者 / Only this subscriber') }),
      response: { 200: Record, ...errors }
    }
  }, async request => {
    const { merchant, id } = request.params
    const { subscriber } = request.query
    const record = await find(request.log, merchant, id, request.callerMerchants)
    if (subscriber !== undefined && !record.deliveries.some(d => d.subscriber === subscriber)) {
      throw validationError([{ location: 'querystring', field: '/subscriber', issue: `not a subscriber of this notification (${record.deliveries.map(d => d.subscriber).join(', ') || 'none'})` }])
    }
    request.log.info({ notification: record.key, subscriber }, 'notification redelivery requested')
    return await store(request.log, () => app.notifications.relay.redeliver(record.key, subscriber)) ?? record
  })
}

export default notificationRoutes
