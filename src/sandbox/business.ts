import type { Operation } from '../wechat/operations.js'
import type { SandboxMerchant } from './merchants.js'
import type { NotificationEvent } from './notifier.js'
import { fail, type WechatError } from './protocol.js'
import type { Contract, PayscoreOrder, SandboxState } from './state.js'

/**
 * What each WeChat Pay call does to the simulator's state, what it answers (204, 200 with JSON, or an error), and the
 * notifications it causes.
 */

export type Outcome = { status: 200, body: string } | { status: 204 } | WechatError

export interface CallInput {
  params: Record<string, string>
  /** The query string (queries) or the body (operations), checked against WeChat Pay's rules. */
  fields: Record<string, unknown>
}

export interface BusinessOptions {
  /** Enforce the notices' 07:00-22:00 Beijing-time window. */
  noticeWindow: boolean
  /** Sends the notification of an event that happened (docs/wechatpay.md §8). */
  notify: (merchant: SandboxMerchant, event: NotificationEvent) => void
}

const SUMMARIES = {
  'PAYSCORE.USER_PAID': '支付成功',
  'PAYSCORE.USER_CONFIRM': '确认订单',
  'ENTRUST.SIGN': '委托代扣签约通知',
  'ENTRUST.TERMINATE': '委托代扣解约通知'
} as const

/** A PayScore notification: the order as the query answers it (`mchid` the service provider, docs/wechatpay.md §8). */
export function orderEvent (state: SandboxState, order: PayscoreOrder, eventType: 'PAYSCORE.USER_PAID' | 'PAYSCORE.USER_CONFIRM'): NotificationEvent {
  return { event_type: eventType, summary: SUMMARIES[eventType], resource: state.orderAnswer(order) }
}

/** A v3 papay contract notification: the contract as the query answers it, its termination included (docs/wechatpay.md §8). */
export function contractEvent (state: SandboxState, contract: Contract, partner: boolean, eventType: 'ENTRUST.SIGN' | 'ENTRUST.TERMINATE'): NotificationEvent {
  return { event_type: eventType, summary: SUMMARIES[eventType], resource: state.contractAnswer(contract, partner) }
}

const str = (value: unknown): string | undefined => typeof value === 'string' ? value : undefined

export function carryOut (state: SandboxState, op: Operation, merchant: SandboxMerchant, input: CallInput, options: BusinessOptions): Outcome {
  const { params, fields } = input
  const { mchid, appid } = merchant.ids
  const sub = str(fields.sub_mchid) ?? ''
  const json = (value: Record<string, unknown>): Outcome => ({ status: 200, body: JSON.stringify(value) })
  switch (op.id) {
    case 'payscorePartnerCollect':
    case 'payscorePartnerQuery': {
      const order = state.order({
        mchid, appid, sub_mchid: sub, service_id: str(fields.service_id),
        out_order_no: params.out_order_no ?? str(fields.out_order_no), query_id: str(fields.query_id)
      })
      if ('code' in order) return order
      if (op.method === 'GET') return json(state.orderAnswer(order))
      const refused = state.pay(order)
      if (refused !== undefined) return refused
      // Collected: the service provider hears of it (docs/wechatpay.md §8), whatever becomes of this answer.
      options.notify(merchant, orderEvent(state, order, 'PAYSCORE.USER_PAID'))
      return { status: 204 }
    }
    case 'papayFailNotify':
    case 'partnerPapayNotify': {
      // [UNCONFIRMED] whether fail-notify has the pre-deduction notice's window: the stricter reading is simulated.
      const contract = state.contract({ mchid, appid, sub_mchid: sub, contract_id: params.contract_id ?? '' })
      return state.notice(contract, options.noticeWindow) ?? { status: 204 }
    }
    case 'papayContractQuery':
    case 'partnerPapayContractQuery': {
      const contract = state.contract({
        mchid, appid, sub_mchid: sub, plan_id: Number(params.plan_id), out_contract_code: params.out_contract_code ?? ''
      })
      return json(state.contractAnswer(contract, op.merchant.type === 'partner'))
    }
    default:
      return fail(404, 'NOT_FOUND', 'no such API')
  }
}
