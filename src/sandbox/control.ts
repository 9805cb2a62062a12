import { randomBytes } from 'node:crypto'
import type { FastifyInstance, FastifyReply } from 'fastify'
import { z } from 'zod'
import type { MerchantType } from '../wechat/profile.js'
import { contractEvent, orderEvent } from './business.js'
import { FAULTS } from './faults.js'
import type { SandboxMerchant } from './merchants.js'
import { NOTIFICATION_FAULTS, type NotificationEvent, type NotificationFault } from './notifier.js'
import { CONTRACT_STATES, ORDER_STATES, type SandboxState } from './state.js'

/**
 * The simulator's control API, for developers and tests (never part of WeChat Pay): recorded requests, faults, the
 * key mode, the state it remembers (orders and contracts, read or put in a given state), and notifications.
 */

const digits = z.string().regex(/^[0-9]{1,32}$/)
const code = z.string().regex(/^[0-9A-Za-z_\-|*]{1,32}$/)

const FaultSpec = z.strictObject({
  fault: z.enum(Object.keys(FAULTS) as [string, ...string[]]),
  times: z.int().positive().default(1),
  operation: z.string().optional(),
  delay_ms: z.int().nonnegative().optional()
})

const OrderSpec = z.strictObject({
  sp_mchid: digits.optional(),
  sub_mchid: digits,
  out_order_no: code,
  service_id: z.string().regex(/^[0-9A-Za-z]{1,32}$/).optional(),
  state: z.enum(ORDER_STATES),
  state_description: z.enum(['USER_CONFIRM', 'MCH_COMPLETE']).optional(),
  total_amount: z.int().positive().optional()
})

const ContractSpec = z.strictObject({
  mchid: digits.optional(),
  sub_mchid: digits.optional(),
  plan_id: z.int().positive().optional(),
  out_contract_code: code.optional(),
  contract_id: code.optional(),
  state: z.enum(CONTRACT_STATES)
})

const NotificationSpec = z.strictObject({
  event_type: z.string().regex(/^[A-Z][A-Z_]*(\.[A-Z_]+)*$/).max(32),
  merchant: z.string().min(1).optional(),
  url: z.url({ protocol: /^https?$/ }).optional(),
  summary: z.string().max(64).optional(),
  resource: z.record(z.string(), z.unknown()).optional(),
  id: z.string().min(1).max(36).optional(),
  fault: z.enum(Object.keys(NOTIFICATION_FAULTS) as [NotificationFault, ...NotificationFault[]]).optional()
})

/** The sub-merchant of sample orders and contracts (a service provider's). */
const SAMPLE_SUB_MCHID = '1900000109'

/**
 * A realistic notification of a well-known event, or undefined. Its order or contract is put in the state, so that a
 * receiver that settles the notification by a query (docs/wechatpay.md §8) finds it.
 */
function sampleEvent (state: SandboxState, eventType: string, merchant: SandboxMerchant): NotificationEvent | undefined {
  const { mchid, appid, type } = merchant.ids
  const code = `SBXN${randomBytes(8).toString('hex')}`
  switch (eventType) {
    case 'PAYSCORE.USER_PAID':
    case 'PAYSCORE.USER_CONFIRM': {
      const paid = eventType === 'PAYSCORE.USER_PAID'
      const order = state.putOrder({ mchid, appid, sub_mchid: SAMPLE_SUB_MCHID, out_order_no: code }, paid ? { state: 'DONE' } : { state: 'DOING', state_description: 'USER_CONFIRM' })
      return orderEvent(state, order, eventType)
    }
    case 'ENTRUST.SIGN':
    case 'ENTRUST.TERMINATE': {
      const sub = type === 'partner' ? SAMPLE_SUB_MCHID : ''
      const contract = state.putContract({ mchid, appid, sub_mchid: sub, out_contract_code: code }, eventType === 'ENTRUST.SIGN' ? 'SIGNED' : 'TERMINATED')
      return contractEvent(state, contract, type === 'partner', eventType)
    }
    default:
      return undefined
  }
}

function parse<T> (schema: z.ZodType<T>, raw: unknown, reply: FastifyReply): T | undefined {
  let json: unknown
  try {
    json = JSON.parse(Buffer.isBuffer(raw) ? raw.toString('utf8') : '')
  } catch {
    void reply.code(400).send({ code: 'PARAM_ERROR', message: 'send a JSON body' })
    return undefined
  }
  const result = schema.safeParse(json)
  if (result.success) return result.data
  const issue = result.error.issues[0]
  void reply.code(400).send({ code: 'PARAM_ERROR', message: `${issue?.path.join('/') ?? ''}: ${issue?.message ?? 'invalid'}` })
  return undefined
}

export function controlRoutes (app: FastifyInstance): void {
  const { faults, requests, merchants, state, notifier } = app.sandbox

  /** The merchant a control call names, or the first of the kind. */
  const merchantOf = (type: MerchantType, mchid: string | undefined, reply: FastifyReply): SandboxMerchant | undefined => {
    const found = merchants.all.find(m => m.ids.type === type && (mchid === undefined || m.ids.mchid === mchid))
    if (found === undefined) void reply.code(400).send({ code: 'PARAM_ERROR', message: `no ${type} merchant ${mchid ?? ''} in this sandbox` })
    return found
  }

  /** The merchant named (by name or mchid), else the first service provider for PayScore (docs/wechatpay.md §8), else the first. */
  const notifiedMerchant = (named: string | undefined, eventType: string): SandboxMerchant | undefined => {
    if (named !== undefined) return merchants.all.find(m => m.ids.name === named || m.ids.mchid === named)
    const partner = eventType.startsWith('PAYSCORE.') ? merchants.all.find(m => m.ids.type === 'partner') : undefined
    return partner ?? merchants.all[0]
  }

  app.get('/sandbox/requests', async () => ({ requests }))
  app.delete('/sandbox/requests', async (_request, reply) => {
    requests.length = 0
    return reply.code(204).send()
  })

  app.get('/sandbox/faults', async () => ({ faults: Object.fromEntries(Object.entries(FAULTS).map(([k, v]) => [k, v.what])) }))
  app.post('/sandbox/faults', async (request, reply) => {
    const spec = parse(FaultSpec, request.body, reply)
    if (spec === undefined) return reply
    faults.arm({
      fault: spec.fault,
      times: spec.times,
      ...(spec.operation !== undefined && { operation: spec.operation }),
      ...(spec.delay_ms !== undefined && { delayMs: spec.delay_ms })
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
    app.sandbox.keyMode = mode
    return reply.code(204).send()
  })

  // The state: every order and contract, and new ones in any state (e.g. a cancelled order, a terminated contract).
  app.get('/sandbox/orders', async () => ({ orders: state.allOrders() }))
  app.post('/sandbox/orders', async (request, reply) => {
    const spec = parse(OrderSpec, request.body, reply)
    if (spec === undefined) return reply
    const merchant = merchantOf('partner', spec.sp_mchid, reply)
    if (merchant === undefined) return reply
    const order = state.putOrder(
      { mchid: merchant.ids.mchid, appid: merchant.ids.appid, sub_mchid: spec.sub_mchid, out_order_no: spec.out_order_no, service_id: spec.service_id },
      { state: spec.state, state_description: spec.state_description, ...(spec.total_amount !== undefined && { total_amount: spec.total_amount }) })
    return reply.code(201).send(order)
  })
  app.get('/sandbox/contracts', async () => ({ contracts: state.allContracts() }))
  app.post('/sandbox/contracts', async (request, reply) => {
    const spec = parse(ContractSpec, request.body, reply)
    if (spec === undefined) return reply
    const merchant = merchantOf(spec.sub_mchid !== undefined ? 'partner' : 'direct', spec.mchid, reply)
    if (merchant === undefined) return reply
    const contract = state.putContract({
      mchid: merchant.ids.mchid,
      appid: merchant.ids.appid,
      sub_mchid: spec.sub_mchid ?? '',
      ...(spec.contract_id !== undefined && { contract_id: spec.contract_id }),
      ...(spec.plan_id !== undefined && { plan_id: spec.plan_id }),
      ...(spec.out_contract_code !== undefined && { out_contract_code: spec.out_contract_code })
    }, spec.state)
    // Putting a contract is the moment the user signs it or ends it: WeChat Pay tells the merchant either way.
    // (A contract made on first reference by a notice or a query was signed before: nothing is sent for it.)
    const event = spec.state === 'SIGNED' ? 'ENTRUST.SIGN' : spec.state === 'TERMINATED' ? 'ENTRUST.TERMINATE' : undefined
    if (event !== undefined) notifier.notify(merchant, contractEvent(state, contract, merchant.ids.type === 'partner', event))
    return reply.code(201).send(contract)
  })

  // Notifications: sent (faulted if asked) and resent as WeChat Pay does, and what became of each.
  app.get('/sandbox/notifications', async () => ({ notifications: notifier.records }))
  app.post('/sandbox/notifications', async (request, reply) => {
    const spec = parse(NotificationSpec, request.body, reply)
    if (spec === undefined) return reply
    const refuse = (message: string): FastifyReply => reply.code(400).send({ code: 'PARAM_ERROR', message })
    const merchant = notifiedMerchant(spec.merchant, spec.event_type)
    if (merchant === undefined) return refuse(`merchant: no merchant ${spec.merchant ?? ''} in this sandbox`)
    const url = spec.url ?? notifier.url
    if (url === undefined) return refuse('url: give one, or set SANDBOX_NOTIFY_URL')
    const sample = spec.resource === undefined ? sampleEvent(state, spec.event_type, merchant) : undefined
    const event: NotificationEvent = {
      event_type: spec.event_type,
      summary: spec.summary ?? sample?.summary ?? '沙箱通知',
      resource: spec.resource ?? sample?.resource ?? {}
    }
    const sent = notifier.send(merchant, event, { url, ...(spec.id !== undefined && { id: spec.id }), ...(spec.fault !== undefined && { fault: spec.fault }) })
    return reply.code(202).send({ id: sent.id })
  })
}
