import { createHash, randomBytes } from 'node:crypto'
import { beijingTime, fail, type WechatError } from './protocol.js'

/**
 * What the simulator remembers, per merchant and in memory: PayScore orders and papay contracts. Each comes into
 * being in a useful state when first referenced (a `pay` finds an order waiting for payment, a notice a signed
 * contract), or through the control API in any state, and moves as at WeChat Pay (docs/wechatpay.md, "Queries").
 */

export const ORDER_STATES = ['CREATED', 'DOING', 'DONE', 'REVOKED', 'EXPIRED'] as const
export const CONTRACT_STATES = ['SIGNED', 'TERMINATED', 'SIGN_FAILED', 'TO_BE_RENEWED'] as const
export type OrderState = typeof ORDER_STATES[number]
export type ContractState = typeof CONTRACT_STATES[number]

export interface Collection {
  seq: number
  amount: number
  paid_type: 'NEWTON'
  paid_time: string
  transaction_id: string
}

export interface PayscoreOrder {
  /** The service provider that owns it (the signing merchant). */
  mchid: string
  appid: string
  sub_mchid: string
  out_order_no: string
  service_id: string
  /** WeChat's own id for the order, as the merchant's front end receives it. */
  query_id: string
  state: OrderState
  state_description?: 'USER_CONFIRM' | 'MCH_COMPLETE' | undefined
  total_amount: number
  /** Every collection made: a second one for the same order is the bug this simulator exists to catch. */
  collections: Collection[]
}

export interface Contract {
  /** The merchant that signed it up: the direct merchant, or the service provider. */
  mchid: string
  appid: string
  /** Service providers' contracts belong to a sub-merchant; '' for a direct merchant's. */
  sub_mchid: string
  contract_id: string
  plan_id: number
  out_contract_code: string
  state: ContractState
  signed_at: Date
  terminated_at?: Date
  /** Notices accepted for it. */
  notices: number
}

/** When first referenced: an order the merchant has completed, waiting for the user's payment. */
const DEFAULT_AMOUNT = 50_000
const DEFAULT_PLAN_ID = 12535
/** A bound on memory: the oldest entries go first (the simulator is for development, not for volume). */
const MAX_ENTRIES = 10_000

/** yyyyMMddHHmmss in Beijing time, as PayScore writes times. */
function payscoreTime (date: Date): string {
  return beijingTime(date).slice(0, 19).replace(/[-T:]/g, '')
}

/** A stable 18-digit contract id for a contract first seen through its plan and code. */
function contractIdFor (mchid: string, subMchid: string, planId: number, code: string): string {
  const digest = createHash('sha256').update(`${mchid}|${subMchid}|${planId}|${code}`).digest()
  return (digest.readBigUInt64BE(0) % 10n ** 17n + 10n ** 17n).toString()
}

function bounded<K, V> (map: Map<K, V>, key: K, value: V): V {
  if (map.size >= MAX_ENTRIES) map.delete(map.keys().next().value as K)
  map.set(key, value)
  return value
}

export interface OrderRef { mchid: string, appid: string, sub_mchid: string, out_order_no?: string | undefined, query_id?: string | undefined, service_id?: string | undefined }
export interface ContractRef { mchid: string, appid: string, sub_mchid: string, contract_id?: string, plan_id?: number, out_contract_code?: string }

export class SandboxState {
  private readonly orders = new Map<string, PayscoreOrder>()
  private readonly contracts = new Map<string, Contract>()

  /** `now`: the clock of paid times and of the notice window (tests pin it). */
  constructor (private readonly now: () => Date = () => new Date()) {}

  // ---- PayScore orders ----------------------------------------------------------------------------------------

  /**
   * The order named by `ref`, made on first reference by its out_order_no (waiting for payment). An unknown
   * query_id is WeChat's id of no order: 404, as for an order of another sub-merchant.
   */
  order (ref: OrderRef): PayscoreOrder | WechatError {
    // [UNCONFIRMED] the query's answer for an unknown order: the official page's error table could not be read. The
    // code and message are those a community thread and WeChat's knowledge base report; 404 is the status of
    // ORDER_NOT_EXIST in WeChat's general status table. The gateway reads any 404 as "not found" either way.
    const notFound = fail(404, 'ORDER_NOT_EXIST', '查询单据不存在')
    if (ref.query_id !== undefined) {
      const found = [...this.orders.values()].find(o => o.query_id === ref.query_id)
      return found !== undefined && found.mchid === ref.mchid && found.sub_mchid === ref.sub_mchid ? this.sameService(found, ref) : notFound
    }
    const key = `${ref.mchid}|${ref.sub_mchid}|${ref.out_order_no ?? ''}`
    const found = this.orders.get(key)
    if (found !== undefined) return this.sameService(found, ref)
    return this.putOrder({ ...ref, out_order_no: ref.out_order_no ?? '' }, { state: 'DOING', state_description: 'MCH_COMPLETE' })
  }

  putOrder (ref: OrderRef & { out_order_no: string }, spec: { state: OrderState, state_description?: PayscoreOrder['state_description'], total_amount?: number }): PayscoreOrder {
    const order: PayscoreOrder = {
      mchid: ref.mchid,
      appid: ref.appid,
      sub_mchid: ref.sub_mchid,
      out_order_no: ref.out_order_no,
      service_id: ref.service_id ?? '2002000000000558128851361561536',
      query_id: randomBytes(24).toString('base64url'),
      state: spec.state,
      ...(spec.state === 'DOING' && { state_description: spec.state_description ?? 'MCH_COMPLETE' }),
      total_amount: spec.total_amount ?? DEFAULT_AMOUNT,
      collections: []
    }
    if (spec.state === 'DONE') order.collections.push(this.collection(order))
    return bounded(this.orders, `${ref.mchid}|${ref.sub_mchid}|${ref.out_order_no}`, order)
  }

  /**
   * `pay` (催收扣款): only an order the merchant completed and the user has not paid can be collected; the
   * refusals are WeChat Pay's (docs/wechatpay.md: the collect operation's errors).
   */
  pay (order: PayscoreOrder): WechatError | undefined {
    if (order.state === 'DONE') return fail(400, 'ORDER_DONE', '订单已完成')
    if (order.state === 'REVOKED') return fail(400, 'ORDER_CANCELED', '订单已取消')
    if (order.state !== 'DOING' || order.state_description !== 'MCH_COMPLETE') {
      return fail(400, 'INVALID_ORDER_STATE', '当前订单状态不合法：仅服务订单支付状态为待支付时，才可使用此能力')
    }
    order.collections.push(this.collection(order))
    order.state = 'DONE'
    delete order.state_description
    return undefined
  }

  /** The order as the query answers it. */
  orderAnswer (order: PayscoreOrder): Record<string, unknown> {
    const paid = order.collections.reduce((sum, c) => sum + c.amount, 0)
    const collecting = order.state === 'DONE' || order.state_description === 'MCH_COMPLETE'
    return {
      out_order_no: order.out_order_no,
      service_id: order.service_id,
      appid: order.appid,
      mchid: order.mchid,
      sub_mchid: order.sub_mchid,
      service_introduction: '沙箱服务',
      state: order.state,
      ...(order.state_description !== undefined && { state_description: order.state_description }),
      total_amount: order.total_amount,
      need_collection: true,
      ...(collecting && {
        collection: {
          state: paid >= order.total_amount ? 'USER_PAID' : 'USER_PAYING',
          total_amount: order.total_amount,
          paying_amount: Math.max(0, order.total_amount - paid),
          paid_amount: paid,
          details: order.collections
        }
      }),
      order_id: `sbx${order.query_id.slice(0, 29)}`
    }
  }

  /** Every order, for the control API. */
  allOrders (): PayscoreOrder[] {
    return [...this.orders.values()]
  }

  // ---- papay contracts ------------------------------------------------------------------------------------------

  /** The contract named by its id (the notices) or by plan and code (the queries); made SIGNED on first reference. */
  contract (ref: ContractRef): Contract {
    const found = ref.contract_id !== undefined
      ? this.contracts.get(`${ref.mchid}|${ref.sub_mchid}|${ref.contract_id}`)
      : [...this.contracts.values()].find(c => c.mchid === ref.mchid && c.sub_mchid === ref.sub_mchid &&
        c.plan_id === ref.plan_id && c.out_contract_code === ref.out_contract_code)
    return found ?? this.putContract(ref, 'SIGNED')
  }

  putContract (ref: ContractRef, state: ContractState): Contract {
    const planId = ref.plan_id ?? DEFAULT_PLAN_ID
    const code = ref.out_contract_code ?? `SBX${(ref.contract_id ?? '').slice(0, 29)}`
    const contract: Contract = {
      mchid: ref.mchid,
      appid: ref.appid,
      sub_mchid: ref.sub_mchid,
      contract_id: ref.contract_id ?? contractIdFor(ref.mchid, ref.sub_mchid, planId, code),
      plan_id: planId,
      out_contract_code: code,
      state,
      signed_at: new Date(this.now().getTime() - 30 * 24 * 3600_000),
      ...(state === 'TERMINATED' && { terminated_at: this.now() }),
      notices: 0
    }
    const key = `${contract.mchid}|${contract.sub_mchid}|${contract.contract_id}`
    this.contracts.delete(key)
    return bounded(this.contracts, key, contract)
  }

  /**
   * A notice (预扣费通知 / 重试扣费通知): WeChat Pay refuses it on a contract that is not SIGNED, and outside
   * 07:00-22:00 Beijing time when `window` is on.
   */
  notice (contract: Contract, window: boolean): WechatError | undefined {
    if (contract.state !== 'SIGNED') {
      // [UNCONFIRMED] the HTTP status of CONTRACT_NOT_EXIST: 400, as WeChat's other refusals of a request's business rule.
      return fail(400, 'CONTRACT_NOT_EXIST', `签约协议不存在或已解约 / the contract is ${contract.state}`)
    }
    if (window) {
      const hour = (this.now().getUTCHours() + 8) % 24
      // [UNCONFIRMED] the code and status of a notice outside the window: RULE_LIMIT (业务规则限制), the documented code
      // for a business rule, with 400, where WeChat's status table puts refusals of a business rule (the one page
      // found that lists RULE_LIMIT, for another API, says 403: docs/wechatpay.md §9). Callers get WeChat's status either way.
      if (hour < 7 || hour >= 22) return fail(400, 'RULE_LIMIT', '为了不打扰用户，商户只能在北京时间每天 7:00~22:00 调用预扣费通知')
    }
    // A repeated notice is accepted like the first: WeChat Pay's answer to a repeat (RESOURCE_ALREADY_EXISTS?), its
    // status and what counts as a repeat are [UNCONFIRMED], so it is not simulated (docs/wechatpay.md §6.2).
    contract.notices++
    return undefined
  }

  contractAnswer (contract: Contract, partner: boolean): Record<string, unknown> {
    return {
      ...(partner
        ? { sp_mchid: contract.mchid, sp_appid: contract.appid, sub_mchid: contract.sub_mchid }
        : { mchid: contract.mchid, appid: contract.appid }),
      contract_id: contract.contract_id,
      plan_id: contract.plan_id,
      out_contract_code: contract.out_contract_code,
      contract_display_account: '沙箱用户',
      contract_state: contract.state,
      contract_signed_time: beijingTime(contract.signed_at),
      ...(contract.terminated_at !== undefined && {
        contract_terminate_info: { contract_termination_mode: 'USER_TERMINATE', contract_terminated_time: beijingTime(contract.terminated_at) }
      }),
      [partner ? 'sp_openid' : 'openid']: 'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o'
    }
  }

  allContracts (): Contract[] {
    return [...this.contracts.values()]
  }

  private sameService (order: PayscoreOrder, ref: OrderRef): PayscoreOrder | WechatError {
    if (ref.service_id !== undefined && ref.service_id !== order.service_id) {
      return fail(400, 'PARAM_ERROR', `service_id 与订单不一致 / the order ${order.out_order_no} belongs to service ${order.service_id}`)
    }
    return order
  }

  private collection (order: PayscoreOrder): Collection {
    const now = this.now()
    return {
      seq: order.collections.length + 1,
      amount: order.total_amount,
      paid_type: 'NEWTON',
      paid_time: payscoreTime(now),
      transaction_id: `42${payscoreTime(now).slice(0, 8)}${randomBytes(8).readBigUInt64BE().toString().padStart(18, '0').slice(0, 18)}`
    }
  }
}
