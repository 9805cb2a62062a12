import { z } from 'zod'
import { validationError, type FieldIssue } from '../errors.js'
import type { MerchantType } from './profile.js'
import { OPERATION_RETRY_POLICY, READ_RETRY_POLICY, type RetryPolicy } from './retry.js'

/**
 * The WeChat Pay calls of the gateway, described once: three operations (POST) and the three queries (GET) that
 * settle their outcome. Each entry feeds the gateway route, the OpenAPI document and the sandbox's validation.
 * Field rules follow docs/wechatpay.md; where a rule is [UNCONFIRMED] the rule here is the safe reading, noted
 * beside the field.
 */

// ---- field rules, each written once ---------------------------------------------------------------------------

/** Amounts are integers in the currency's smallest unit (docs/wechatpay.md §6): the commonest caller mistake is yuan. */
const FEN = 'must be a positive integer number of fen (分): 1.00 CNY is 100'

/** Merchant ids are decimal digits (string[1,32]). */
const merchantId = (zh: string, en: string, example: string) =>
  z.string().regex(/^[0-9]{1,32}$/, 'must be 1-32 digits').describe(`${zh} / ${en}`).meta({ example })

/** AppIDs: string[1,32]; the example `wxd678efh567hg6787` shows they are not hex, so any letters and digits. */
const appId = (zh: string, en: string) =>
  z.string().regex(/^[0-9A-Za-z_-]{1,32}$/, 'must be 1-32 letters, digits, _ or -').describe(`${zh} / ${en}`)
    .meta({ example: 'wxd678efh567hg6787' })

/** Path parameters: a strict charset, so that no value can change the upstream path. */
const contractId = z.string().regex(/^[0-9A-Za-z_-]{1,32}$/, 'must be 1-32 letters, digits, _ or -')
  .describe('委托代扣协议ID（微信支付签约时返回）/ Contract id issued by WeChat Pay when the user signed the deduction contract')
  .meta({ example: '123124412412423431' })

const outOrderNo = z.string().regex(/^[0-9A-Za-z_\-|*]{1,32}$/, 'must be 1-32 characters of 0-9 A-Z a-z _ - | *')
  .describe('商户服务订单号 / Merchant service order number (1-32 of 0-9 A-Z a-z _ - | *)')
  .meta({ example: '1234323JKHDFE1243252' })

// ---- operation descriptions ------------------------------------------------------------------------------------

/** Profile settings that fill a body field the caller leaves out. */
export type ProfileField = 'mchid' | 'appid'

interface OperationBase {
  /** Stable id: the OpenAPI operationId, the metrics label and the name used in caller permissions. */
  id: string
  /** The gateway's route (Fastify syntax). */
  route: string
  /** WeChat Pay's path template; `{name}` is replaced by the encoded path parameter. */
  upstreamPath: string
  summary: string
  description: string
  tags: string[]
  /**
   * Which kind of WeChat Pay account calls it, and the field by which a caller names that account (the merchant
   * profile). `forwarded: false`: WeChat Pay's request has no such field (the account is the one that signs), so
   * the gateway takes it from the caller and does not send it on.
   */
  merchant: { type: MerchantType, field: 'mchid' | 'sp_mchid', forwarded: boolean }
  params: z.ZodObject
  /** How this call is retried (which failures: retry.ts). */
  retry: RetryPolicy
}

/** An operation: it changes something at WeChat Pay, so it is never done twice. */
export interface WriteOperation extends OperationBase {
  method: 'POST'
  /** The upstream body with WeChat Pay's rules: all required fields required. */
  body: z.ZodObject
  /** Body field → which setting of the chosen profile fills it when the caller leaves it out. */
  profileFields: Record<string, ProfileField>
  successStatus: 204
  /** One example call, used by the docs and the README. */
  example: { params: Record<string, string>, body: Record<string, unknown> }
}

/** A query: it changes nothing, so every transient failure is retried, and the answer is JSON. */
export interface ReadOperation extends OperationBase {
  method: 'GET'
  /** WeChat Pay's query parameters (without the merchant field when it is not forwarded). */
  query: z.ZodObject
  /** Pairs of query parameters of which exactly one is sent. */
  oneOf?: [string, string]
  /** The query parameters, in the order they are sent upstream. */
  upstreamQuery: readonly string[]
  /** WeChat Pay's answer as documented. WeChat adds fields: the answer is passed on as it is. */
  answer: z.ZodObject
  /** Fields of the answer a caller decides on: a 200 without one of them is `UPSTREAM_BAD_RESPONSE`. */
  relied: readonly string[]
  successStatus: 200
  example: { params: Record<string, string>, query: Record<string, string> }
}

export type Operation = WriteOperation | ReadOperation

const failNotify: WriteOperation = {
  id: 'papayFailNotify',
  method: 'POST',
  route: '/contracts/:contract_id/fail-notify',
  upstreamPath: '/v3/papay/contracts/{contract_id}/fail-notify',
  summary: '重试扣费通知 / Retry-deduction notice',
  description: '扣费失败后，在可通知时间段内通知用户充值以便下次扣费（普通商户）。\n' +
    'After a failed deduction, remind the user to top up before the next attempt (direct merchant). ' +
    'Upstream: `POST /v3/papay/contracts/{contract_id}/fail-notify`.',
  tags: ['papay'],
  merchant: { type: 'direct', field: 'mchid', forwarded: true },
  params: z.strictObject({ contract_id: contractId }),
  body: z.strictObject({
    mchid: merchantId('直连商户号：选择商户配置，只有一个直连商户时可省略', 'direct merchant id: chooses the merchant profile; may be left out when the gateway holds one direct merchant', '1230000109'),
    appid: appId('商户绑定的AppID（默认取商户配置的 appid）', 'AppID bound to the merchant (defaults to the profile\'s appid)')
  }),
  profileFields: { mchid: 'mchid', appid: 'appid' },
  successStatus: 204,
  retry: OPERATION_RETRY_POLICY,
  example: { params: { contract_id: '123124412412423431' }, body: {} }
}

const partnerNotify: WriteOperation = {
  id: 'partnerPapayNotify',
  method: 'POST',
  route: '/partner/contracts/:contract_id/notify',
  upstreamPath: '/v3/partner-papay/contracts/{contract_id}/notify',
  summary: '服务商预扣费通知 / Pre-deduction notice (service provider)',
  description: '通知用户即将扣费及预计扣费金额；仅 07:00–22:00（北京时间）可调用。\n' +
    'Tell the user about an upcoming deduction and its estimated amount; WeChat Pay accepts it 07:00–22:00 Beijing time. ' +
    'Upstream: `POST /v3/partner-papay/contracts/{contract_id}/notify`.',
  tags: ['partner-papay'],
  merchant: { type: 'partner', field: 'sp_mchid', forwarded: true },
  params: z.strictObject({ contract_id: contractId }),
  body: z.strictObject({
    sp_mchid: merchantId('服务商商户号：选择商户配置，只有一个服务商时可省略', 'service provider merchant id: chooses the merchant profile; may be left out when the gateway holds one service provider', '1900000100'),
    sp_appid: appId('服务商AppID（默认取商户配置的 appid）', 'service provider AppID (defaults to the profile\'s appid)'),
    sub_mchid: merchantId('子商户号', 'sub-merchant id', '12345512'),
    sub_appid: appId('子商户AppID', 'sub-merchant AppID').optional(),
    // [UNCONFIRMED] range of count: third-party specs list 1-3, the official page says "default 7 days": any positive integer.
    deduct_duration: z.strictObject({
      count: z.int().positive().describe('可扣费时长的数量 / Number of units during which deduction is allowed'),
      unit: z.enum(['DAY']).optional().describe('时长单位，仅 DAY / Unit, only DAY')
    }).optional().describe('可扣费时长，默认 7 天 / Deduction window after the waiting period (WeChat default: 7 days)')
      .meta({ example: { count: 1, unit: 'DAY' } }),
    estimated_amount: z.strictObject({
      amount: z.int({ error: FEN }).positive({ error: FEN }).describe('预计扣费金额，单位分 / Estimated amount, a positive integer number of fen (分, 1/100 CNY)')
        .meta({ example: 1 }),
      currency: z.enum(['CNY']).optional().describe('币种，仅 CNY / Currency, only CNY')
    }).describe('预计扣费金额 / Estimated deduction amount')
  }),
  profileFields: { sp_mchid: 'mchid', sp_appid: 'appid' },
  successStatus: 204,
  retry: OPERATION_RETRY_POLICY,
  example: {
    params: { contract_id: '123124412412423431' },
    body: { sub_mchid: '12345512', deduct_duration: { count: 1, unit: 'DAY' }, estimated_amount: { amount: 1, currency: 'CNY' } }
  }
}

const payscoreCollect: WriteOperation = {
  id: 'payscorePartnerCollect',
  method: 'POST',
  route: '/payscore/partner/serviceorder/:out_order_no/pay',
  upstreamPath: '/v3/payscore/partner/serviceorder/{out_order_no}/pay',
  summary: '催收扣款 / Collect a PayScore order (service provider)',
  description: '对“待支付”状态的支付分订单发起催收扣款。\n' +
    'Ask WeChat Pay to collect a PayScore order that is waiting for payment. ' +
    'Upstream: `POST /v3/payscore/partner/serviceorder/{out_order_no}/pay`.',
  tags: ['payscore'],
  merchant: { type: 'partner', field: 'sp_mchid', forwarded: false },
  params: z.strictObject({ out_order_no: outOrderNo }),
  body: z.strictObject({
    service_id: z.string().regex(/^[0-9A-Za-z]{1,32}$/, 'must be 1-32 letters or digits').optional()
      .describe('支付分服务ID / PayScore service id').meta({ example: '2002000000000558128851361561536' }),
    sub_mchid: merchantId('子商户号', 'sub-merchant id', '1900000109')
  }),
  profileFields: {},
  successStatus: 204,
  retry: OPERATION_RETRY_POLICY,
  example: {
    params: { out_order_no: '1234323JKHDFE1243252' },
    body: { service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' }
  }
}

// ---- queries: what a caller reads to settle an outcome (docs/wechatpay.md, "Queries") -----------------------------

const serviceId = z.string().regex(/^[0-9A-Za-z]{1,32}$/, 'must be 1-32 letters or digits')
  .describe('支付分服务ID / PayScore service id').meta({ example: '2002000000000558128851361561536' })

/** plan_id is an integer at WeChat Pay; kept as its digits so that it goes into the path as sent. */
const planId = z.string().regex(/^[1-9][0-9]{0,18}$/, 'must be a positive integer')
  .describe('委托代扣模板ID / Deduction plan (template) id').meta({ example: '12535' })

// [UNCONFIRMED] the charset of out_contract_code (string(32), generated by the merchant): the safe reading is the
// one of the merchant's other numbers, so that no value can change the upstream path.
const outContractCode = z.string().regex(/^[0-9A-Za-z_\-|*]{1,32}$/, 'must be 1-32 characters of 0-9 A-Z a-z _ - | *')
  .describe('商户签约协议号 / The merchant\'s own contract code, given at signing').meta({ example: '1023658866' })

const fen = (zh: string, en: string) => z.int().describe(`${zh}，单位分 / ${en}, in fen (分)`)
const text = (zh: string, en: string) => z.string().describe(`${zh} / ${en}`)
const count = (zh: string, en: string) => z.int().describe(`${zh} / ${en}`)

/*
 * Answer schemas document WeChat Pay's answers; only the fields in an operation's `relied` are checked (and required
 * in the OpenAPI document). Every other field, nested ones included, is optional: the gateway passes an answer
 * without it, so the document must not promise it.
 */

const contractStates = ['SIGNED', 'TERMINATED', 'SIGN_FAILED', 'TO_BE_RENEWED'] as const
const contractCommon = {
  plan_id: z.int().describe('委托代扣模板ID / Plan id'),
  out_contract_code: text('商户签约协议号', 'merchant contract code'),
  contract_id: text('委托代扣协议ID（通知接口使用）', 'contract id, as the notices take it'),
  contract_display_account: text('签约用户的展示名称', 'account name shown to the user').optional(),
  // Documented values; an unknown one is passed on, not refused.
  contract_state: z.string().describe(`协议状态 / Contract state: ${contractStates.join(' | ')}. Notices are accepted only while SIGNED`)
    .meta({ example: 'SIGNED' }),
  contract_signed_time: text('签约时间（RFC 3339）', 'signed at (RFC 3339)').optional(),
  contract_expired_time: text('协议到期时间（RFC 3339）', 'expires at (RFC 3339)').optional(),
  contract_terminate_info: z.looseObject({
    contract_termination_mode: text('解约方式', 'how it ended: USER_TERMINATE, MCH_API_TERMINATE, ...').optional(),
    contract_terminated_time: text('解约时间（RFC 3339）', 'ended at (RFC 3339)').optional(),
    contract_termination_remark: text('解约备注', 'remark').optional()
  }).optional().describe('解约信息 / Termination, once TERMINATED'),
  out_user_code: text('商户侧用户标识', 'merchant\'s user code').optional(),
  deduct_schedule: z.looseObject({
    estimated_deduct_date: text('预计扣费日期（yyyy-MM-dd）', 'estimated deduction date').optional(),
    schedule_state: text('预约状态', 'NO_SCHEDULED | SCHEDULED | PAID | EXPIRED').optional()
  }).optional().describe('预约扣费信息 / Scheduled deduction (scheduled-deduction plans only)')
}

const payscoreQuery: ReadOperation = {
  id: 'payscorePartnerQuery',
  method: 'GET',
  route: '/payscore/partner/serviceorder',
  upstreamPath: '/v3/payscore/partner/serviceorder',
  summary: '查询支付分订单 / Query a PayScore order (service provider)',
  description: '按商户服务订单号（或 query_id）查询支付分订单：催收扣款（pay）是否已生效。\n' +
    'The order\'s state and collection: whether a `pay` took effect. Collected: `state` DONE and `collection.state` ' +
    'USER_PAID; still owed: `state` DOING, `state_description` MCH_COMPLETE, `collection.state` USER_PAYING. ' +
    'Send exactly one of `out_order_no` and `query_id`. Retried on every transient failure (a read changes nothing). ' +
    'Upstream: `GET /v3/payscore/partner/serviceorder`.',
  tags: ['payscore'],
  merchant: { type: 'partner', field: 'sp_mchid', forwarded: false },
  params: z.strictObject({}),
  query: z.strictObject({
    // [UNCONFIRMED] optional on the official page, required in the spec used by the SDKs: always sent.
    service_id: serviceId,
    out_order_no: outOrderNo.optional(),
    // WeChat's own id, handed to the merchant's front end (up to 512 characters). [UNCONFIRMED] its charset: neither
    // the official page nor the SDKs' spec says; any printable ASCII is taken, percent-encoded as sent and signed.
    query_id: z.string().regex(/^[\x21-\x7e]{1,512}$/, 'must be 1-512 printable ASCII characters').optional()
      .describe('微信支付服务订单查询ID（与 out_order_no 二选一）/ WeChat\'s query id, instead of out_order_no'),
    sub_mchid: merchantId('子商户号', 'sub-merchant id', '1900000109')
  }),
  oneOf: ['out_order_no', 'query_id'],
  upstreamQuery: ['service_id', 'out_order_no', 'query_id', 'sub_mchid'],
  // The fields of the official page and of the spec the SDKs use (docs/wechatpay.md §7.1); WeChat's spec marks more
  // of them required than `relied`, but only those are checked.
  answer: z.looseObject({
    out_order_no: text('商户服务订单号', 'merchant service order number'),
    service_id: text('支付分服务ID', 'PayScore service id'),
    appid: text('服务商AppID', 'the service provider\'s AppID').optional(),
    mchid: text('服务商商户号', 'the service provider\'s merchant id'),
    sub_appid: text('子商户AppID', 'sub-merchant AppID').optional(),
    sub_mchid: text('子商户号', 'sub-merchant id').optional(),
    service_introduction: text('服务信息', 'service description').optional(),
    state: z.string().describe('订单状态 / Order state: CREATED | DOING | DONE | REVOKED | EXPIRED (the last three are final)')
      .meta({ example: 'DONE' }),
    state_description: text('订单状态说明（仅 DOING）', 'only while DOING: USER_CONFIRM | MCH_COMPLETE').optional(),
    post_payments: z.array(z.looseObject({
      name: text('付费项目名称', 'item name').optional(),
      amount: fen('金额', 'amount').optional(),
      description: text('付费说明', 'description').optional(),
      count: count('付费数量', 'quantity').optional()
    })).optional().describe('后付费项目 / Items paid after the service'),
    post_discounts: z.array(z.looseObject({
      name: text('优惠名称', 'discount name').optional(),
      description: text('优惠说明', 'description').optional(),
      amount: fen('优惠金额', 'amount').optional(),
      count: count('优惠数量', 'quantity').optional()
    })).optional().describe('后付费商户优惠 / The merchant\'s discounts'),
    risk_fund: z.looseObject({
      name: text('风险金名称', 'name, e.g. DEPOSIT').optional(),
      amount: fen('风险金额', 'amount').optional(),
      description: text('风险说明', 'description').optional()
    }).optional().describe('订单风险金 / Risk fund of the order'),
    total_amount: fen('总金额', 'total amount').optional(),
    need_collection: z.boolean().describe('是否需要收款 / Whether PayScore collects the money').optional(),
    collection: z.looseObject({
      state: z.string().describe('收款状态 / Collection state: USER_PAYING (still owed) | USER_PAID (collected)').optional(),
      total_amount: fen('总金额', 'total amount').optional(),
      paying_amount: fen('待收金额', 'still owed').optional(),
      paid_amount: fen('已收金额', 'collected').optional(),
      details: z.array(z.looseObject({
        seq: z.int().describe('收款序号 / Sequence number').optional(),
        amount: fen('单笔收款金额', 'amount of this collection').optional(),
        paid_type: text('收款成功渠道', 'NEWTON (PayScore) | MCH (merchant)').optional(),
        paid_time: text('收款成功时间（yyyyMMddHHmmss）', 'paid at (yyyyMMddHHmmss)').optional(),
        transaction_id: text('微信支付交易单号', 'WeChat Pay transaction id').optional(),
        promotion_detail: z.array(z.looseObject({
          coupon_id: text('券ID', 'coupon id').optional(),
          name: text('优惠名称', 'name').optional(),
          scope: text('优惠范围', 'scope, e.g. GLOBAL').optional(),
          type: text('优惠类型', 'type, e.g. CASH').optional(),
          amount: fen('优惠券面额', 'coupon amount').optional(),
          stock_id: text('活动ID', 'stock (campaign) id').optional(),
          wechatpay_contribute: fen('微信出资', 'funded by WeChat Pay').optional(),
          merchant_contribute: fen('商户出资', 'funded by the merchant').optional(),
          other_contribute: fen('其他出资', 'funded by others').optional(),
          currency: text('优惠币种', 'currency').optional(),
          goods_detail: z.array(z.looseObject({})).optional().describe('单品列表 / Goods the discount applies to')
        })).optional().describe('优惠信息 / Discounts applied to this collection')
      })).optional().describe('收款明细 / Each collection')
    }).optional().describe('收款信息 / Collection'),
    time_range: z.looseObject({
      start_time: text('服务开始时间（yyyyMMddHHmmss）', 'service start (yyyyMMddHHmmss; also yyyyMMdd or OnAccept)').optional(),
      start_time_remark: text('服务开始时间备注', 'remark').optional(),
      end_time: text('服务结束时间（yyyyMMddHHmmss）', 'service end (yyyyMMddHHmmss)').optional(),
      end_time_remark: text('服务结束时间备注', 'remark').optional()
    }).optional().describe('服务时间 / Service period'),
    location: z.looseObject({
      start_location: text('服务开始地点', 'where the service starts').optional(),
      end_location: text('服务结束地点', 'where the service ends').optional()
    }).optional().describe('服务位置 / Service location'),
    attach: text('商户数据包', 'the merchant\'s own data, as given at creation').optional(),
    notify_url: text('商户回调地址', 'the merchant\'s notification URL').optional(),
    openid: text('用户在服务商AppID下的标识', 'user openid under the service provider\'s AppID').optional(),
    sub_openid: text('用户在子商户AppID下的标识', 'user openid under the sub-merchant\'s AppID').optional(),
    order_id: text('微信支付服务订单号', 'WeChat\'s service order id').optional()
  }).meta({ example: {
    out_order_no: '1234323JKHDFE1243252', service_id: '2002000000000558128851361561536', appid: 'wxd678efh567hg6787',
    mchid: '1900000100', sub_mchid: '1900000109', service_introduction: '某某酒店', state: 'DONE', total_amount: 50000,
    need_collection: true,
    collection: { state: 'USER_PAID', total_amount: 50000, paying_amount: 0, paid_amount: 50000,
      details: [{ seq: 1, amount: 50000, paid_type: 'NEWTON', paid_time: '20261202101500', transaction_id: '4200000000202612020000000001' }] }
  } }),
  relied: ['out_order_no', 'service_id', 'mchid', 'state'],
  successStatus: 200,
  retry: READ_RETRY_POLICY,
  example: { params: {}, query: { service_id: '2002000000000558128851361561536', out_order_no: '1234323JKHDFE1243252', sub_mchid: '1900000109' } }
}

const contractQuery: ReadOperation = {
  id: 'papayContractQuery',
  method: 'GET',
  route: '/papay/sign/contracts/plan-id/:plan_id/out-contract-code/:out_contract_code',
  upstreamPath: '/v3/papay/sign/contracts/plan-id/{plan_id}/out-contract-code/{out_contract_code}',
  summary: '查询签约协议 / Query a deduction contract (direct merchant)',
  description: '按模板ID与商户签约协议号查询签约关系：通知前确认协议仍有效（已解约的协议，微信支付不再接受通知）。\n' +
    'Whether a contract is still SIGNED before a notice is sent (WeChat Pay refuses notices on a terminated contract); ' +
    'its `contract_id` is what the notices take. Upstream: ' +
    '`GET /v3/papay/sign/contracts/plan-id/{plan_id}/out-contract-code/{out_contract_code}`.',
  tags: ['papay'],
  merchant: { type: 'direct', field: 'mchid', forwarded: false },
  params: z.strictObject({ plan_id: planId, out_contract_code: outContractCode }),
  query: z.strictObject({}),
  upstreamQuery: [],
  answer: z.looseObject({
    mchid: text('商户号', 'merchant id'),
    appid: text('AppID', 'AppID').optional(),
    ...contractCommon,
    openid: text('用户标识', 'user openid').optional()
  }).meta({ example: {
    mchid: '1230000109', appid: 'wxd678efh567hg6787', contract_id: '123124412412423431', plan_id: 12535,
    out_contract_code: '1023658866', contract_display_account: '微信代扣', contract_state: 'SIGNED',
    contract_signed_time: '2026-11-01T10:00:00+08:00', openid: 'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o'
  } }),
  relied: ['mchid', 'contract_id', 'plan_id', 'out_contract_code', 'contract_state'],
  successStatus: 200,
  retry: READ_RETRY_POLICY,
  example: { params: { plan_id: '12535', out_contract_code: '1023658866' }, query: {} }
}

const partnerContractQuery: ReadOperation = {
  id: 'partnerPapayContractQuery',
  method: 'GET',
  route: '/papay/sign/partner/contracts/plan-id/:plan_id/out-contract-code/:out_contract_code',
  upstreamPath: '/v3/papay/sign/partner/contracts/plan-id/{plan_id}/out-contract-code/{out_contract_code}',
  summary: '服务商查询签约协议 / Query a deduction contract (service provider)',
  description: '按模板ID与商户签约协议号查询子商户的签约关系：预扣费通知前确认协议仍有效。\n' +
    'Whether a sub-merchant\'s contract is still SIGNED before a pre-deduction notice; its `contract_id` is what the ' +
    'notice takes. Upstream: `GET /v3/papay/sign/partner/contracts/plan-id/{plan_id}/out-contract-code/{out_contract_code}`.',
  tags: ['partner-papay'],
  merchant: { type: 'partner', field: 'sp_mchid', forwarded: false },
  params: z.strictObject({ plan_id: planId, out_contract_code: outContractCode }),
  query: z.strictObject({ sub_mchid: merchantId('子商户号', 'sub-merchant id', '12345512') }),
  upstreamQuery: ['sub_mchid'],
  answer: z.looseObject({
    sp_mchid: text('服务商商户号', 'service provider merchant id'),
    sp_appid: text('服务商AppID', 'service provider AppID').optional(),
    sub_mchid: text('子商户号', 'sub-merchant id'),
    sub_appid: text('子商户AppID', 'sub-merchant AppID').optional(),
    ...contractCommon,
    sp_openid: text('用户在服务商AppID下的标识', 'user openid under sp_appid').optional(),
    sub_openid: text('用户在子商户AppID下的标识', 'user openid under sub_appid').optional()
  }).meta({ example: {
    sp_mchid: '1900000100', sp_appid: 'wxd678efh567hg6787', sub_mchid: '12345512', contract_id: '123124412412423431',
    plan_id: 12535, out_contract_code: '1023658866', contract_display_account: '微信代扣', contract_state: 'SIGNED',
    contract_signed_time: '2026-11-01T10:00:00+08:00'
  } }),
  relied: ['sp_mchid', 'sub_mchid', 'contract_id', 'plan_id', 'out_contract_code', 'contract_state'],
  successStatus: 200,
  retry: READ_RETRY_POLICY,
  example: { params: { plan_id: '12535', out_contract_code: '1023658866' }, query: { sub_mchid: '12345512' } }
}

export const operations: readonly Operation[] = [failNotify, partnerNotify, payscoreCollect, payscoreQuery, contractQuery, partnerContractQuery]

/**
 * The body a caller sends: the fields a profile fills in may be left out, and an operation whose WeChat body does
 * not name the merchant takes its merchant field from the caller (not sent on).
 */
export function callerBody (op: WriteOperation): z.ZodObject {
  const optional = Object.fromEntries(Object.keys(op.profileFields).map(field => [field, true as const]))
  const body = op.body.partial(optional as Record<string, true> & Record<number, never>)
  return op.merchant.forwarded ? body : body.extend({ [op.merchant.field]: merchantChoice(op) })
}

/** The query string a caller sends: WeChat's parameters and the merchant field, with the one-of rule. */
export function callerQuery (op: ReadOperation): z.ZodType {
  return withOneOf(op, op.query.extend({ [op.merchant.field]: merchantChoice(op) }))
}

const wechatQueries = new WeakMap<ReadOperation, z.ZodType>()

/** WeChat Pay's own query string rules (the sandbox checks them), made once per operation. */
export function wechatQuery (op: ReadOperation): z.ZodType {
  let schema = wechatQueries.get(op)
  if (schema === undefined) {
    schema = withOneOf(op, op.query)
    wechatQueries.set(op, schema)
  }
  return schema
}

function withOneOf (op: ReadOperation, schema: z.ZodObject): z.ZodType {
  if (op.oneOf === undefined) return schema
  const [a, b] = op.oneOf
  return schema.superRefine((value, ctx) => {
    if ((value[a] === undefined) === (value[b] === undefined)) {
      ctx.addIssue({ code: 'custom', path: [a], message: `send exactly one of ${a} and ${b}` })
    }
  })
}

/** A merchant field that is not sent on: it only chooses the profile. */
function merchantChoice (op: Operation) {
  const [zh, en] = op.merchant.type === 'partner'
    ? ['服务商商户号', 'service provider merchant id'] as const
    : ['直连商户号', 'direct merchant id'] as const
  return merchantId(`${zh}：选择商户配置（不发送给微信支付：签名的商户即此商户），只有一个时可省略`,
    `${en}: chooses the merchant profile (not sent to WeChat Pay, which knows the signing merchant); may be left out when the gateway holds one`,
    op.merchant.type === 'partner' ? '1900000100' : '1230000109').optional()
}

/**
 * The upstream request-target, encoded exactly as sent and signed: path parameters, then the query parameters in
 * the operation's order (those the caller left out are not sent).
 */
export function upstreamTarget (op: Operation, params: Record<string, string>, query: Record<string, unknown> = {}): string {
  const path = op.upstreamPath.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(params[name] ?? ''))
  if (op.method !== 'GET') return path
  const pairs = op.upstreamQuery.flatMap(name => typeof query[name] === 'string' ? [`${name}=${encodeURIComponent(query[name])}`] : [])
  return pairs.length > 0 ? `${path}?${pairs.join('&')}` : path
}

/**
 * Why a query's 200 answer cannot be used: not a JSON object, or a field the caller decides on is missing or of
 * another type. Other differences from the documented schema are passed on (WeChat Pay adds fields).
 */
export function answerProblem (op: ReadOperation, answer: unknown): string | undefined {
  if (answer === null || typeof answer !== 'object' || Array.isArray(answer)) return 'a 200 answer that is not a JSON object'
  const shape = op.answer.shape as Record<string, z.ZodType>
  const wrong = op.relied.filter(field => !(shape[field] as z.ZodType).safeParse((answer as Record<string, unknown>)[field]).success)
  return wrong.length > 0 ? `the answer lacks ${wrong.join(', ')} (or has another type)` : undefined
}

/** Each operation's upstream path as a pattern, and the names of its parameters, made once. */
const upstreamPatterns = operations.map(op => {
  const names: string[] = []
  const pattern = new RegExp(`^${op.upstreamPath.replace(/\{(\w+)\}/g, (_, name: string) => { names.push(name); return '([^/]+)' })}$`)
  return { op, names, pattern }
})

/** Matches an upstream path back to its operation (used by the sandbox). */
export function matchUpstream (path: string): { op: Operation, params: Record<string, string> } | undefined {
  for (const { op, names, pattern } of upstreamPatterns) {
    const match = pattern.exec(path)
    if (match !== null) {
      try {
        return { op, params: Object.fromEntries(names.map((name, i) => [name, decodeURIComponent(match[i + 1] ?? '')])) }
      } catch {
        return undefined
      }
    }
  }
  return undefined
}

/**
 * The body sent upstream: the caller's body with the profile's own fields filled in, and without the merchant field
 * when WeChat Pay's body has none. A field that is still missing is named.
 */
export function upstreamBody (op: WriteOperation, body: Record<string, unknown>,
  profile: { [F in ProfileField]?: string | undefined }): Record<string, unknown> {
  const out: Record<string, unknown> = { ...body }
  if (!op.merchant.forwarded) delete out[op.merchant.field]
  const issues: FieldIssue[] = []
  for (const [field, setting] of Object.entries(op.profileFields)) {
    if (out[field] !== undefined) continue
    const value = profile[setting]
    if (value !== undefined) out[field] = value
    else issues.push({ location: 'body', field: `/${field}`, issue: `required: send it, or set ${setting} in the merchant profile` })
  }
  if (issues.length > 0) throw validationError(issues)
  return out
}
