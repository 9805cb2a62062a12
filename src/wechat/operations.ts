import { z } from 'zod'
import { validationError, type FieldIssue } from '../errors.js'
import { OPERATION_RETRY_POLICY, type RetryPolicy } from './retry.js'

/**
 * The three WeChat Pay operations, described once. Each entry feeds the gateway route, the OpenAPI document and
 * the sandbox's validation. Field rules follow PROTOCOL.md part C; where it marks a rule [UNCONFIRMED] the rule
 * here is the safe reading, noted beside the field.
 */

// ---- field rules, each written once ---------------------------------------------------------------------------

/** Amounts are integers in the currency's smallest unit (PROTOCOL.md D.5): the commonest caller mistake is yuan. */
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

/** Body fields that belong to the merchant itself: they default from configuration and cannot be overridden. */
export type MerchantField = 'mchid' | 'appid'

export interface Operation {
  /** Stable id: the OpenAPI operationId, the metrics label and the name used in caller permissions. */
  id: string
  method: 'POST'
  /** The gateway's route (Fastify syntax). */
  route: string
  /** WeChat Pay's path template; `{name}` is replaced by the encoded path parameter. */
  upstreamPath: string
  summary: string
  description: string
  tags: string[]
  params: z.ZodObject
  /** The upstream body with WeChat Pay's rules: all required fields required. */
  body: z.ZodObject
  /** Body field → which merchant setting fills it when the caller leaves it out. */
  merchantFields: Record<string, MerchantField>
  /** The merchant fields a caller may not change (another merchant id is refused). */
  lockedFields: string[]
  successStatus: 204
  /**
   * How this operation is retried (which failures: retry.ts). WeChat Pay documents none of the three as idempotent,
   * so all use the default: only failures that mean "not done" are retried, never an unknown outcome.
   */
  retry: RetryPolicy
  /** One example call, used by the docs and the README. */
  example: { params: Record<string, string>, body: Record<string, unknown> }
}

const failNotify: Operation = {
  id: 'papayFailNotify',
  method: 'POST',
  route: '/contracts/:contract_id/fail-notify',
  upstreamPath: '/v3/papay/contracts/{contract_id}/fail-notify',
  summary: '重试扣费通知 / Retry-deduction notice',
  description: '扣费失败后，在可通知时间段内通知用户充值以便下次扣费（普通商户）。\n' +
    'After a failed deduction, remind the user to top up before the next attempt (direct merchant). ' +
    'Upstream: `POST /v3/papay/contracts/{contract_id}/fail-notify`.',
  tags: ['papay'],
  params: z.strictObject({ contract_id: contractId }),
  body: z.strictObject({
    mchid: merchantId('直连商户号（默认取网关配置）', 'direct merchant id (defaults to the gateway\'s WECHATPAY_MCHID)', '1230000109'),
    appid: appId('商户绑定的AppID（默认取 WECHATPAY_APPID）', 'AppID bound to the merchant (defaults to WECHATPAY_APPID)')
  }),
  merchantFields: { mchid: 'mchid', appid: 'appid' },
  lockedFields: ['mchid'],
  successStatus: 204,
  retry: OPERATION_RETRY_POLICY,
  example: { params: { contract_id: '123124412412423431' }, body: {} }
}

const partnerNotify: Operation = {
  id: 'partnerPapayNotify',
  method: 'POST',
  route: '/partner/contracts/:contract_id/notify',
  upstreamPath: '/v3/partner-papay/contracts/{contract_id}/notify',
  summary: '服务商预扣费通知 / Pre-deduction notice (service provider)',
  description: '通知用户即将扣费及预计扣费金额；仅 07:00–22:00（北京时间）可调用。\n' +
    'Tell the user about an upcoming deduction and its estimated amount; WeChat Pay accepts it 07:00–22:00 Beijing time. ' +
    'Upstream: `POST /v3/partner-papay/contracts/{contract_id}/notify`.',
  tags: ['partner-papay'],
  params: z.strictObject({ contract_id: contractId }),
  body: z.strictObject({
    sp_mchid: merchantId('服务商商户号（默认取网关配置）', 'service provider merchant id (defaults to WECHATPAY_MCHID)', '1230000109'),
    sp_appid: appId('服务商AppID（默认取 WECHATPAY_APPID）', 'service provider AppID (defaults to WECHATPAY_APPID)'),
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
  merchantFields: { sp_mchid: 'mchid', sp_appid: 'appid' },
  lockedFields: ['sp_mchid'],
  successStatus: 204,
  retry: OPERATION_RETRY_POLICY,
  example: {
    params: { contract_id: '123124412412423431' },
    body: { sub_mchid: '12345512', deduct_duration: { count: 1, unit: 'DAY' }, estimated_amount: { amount: 1, currency: 'CNY' } }
  }
}

const payscoreCollect: Operation = {
  id: 'payscorePartnerCollect',
  method: 'POST',
  route: '/payscore/partner/serviceorder/:out_order_no/pay',
  upstreamPath: '/v3/payscore/partner/serviceorder/{out_order_no}/pay',
  summary: '催收扣款 / Collect a PayScore order (service provider)',
  description: '对“待支付”状态的支付分订单发起催收扣款。\n' +
    'Ask WeChat Pay to collect a PayScore order that is waiting for payment. ' +
    'Upstream: `POST /v3/payscore/partner/serviceorder/{out_order_no}/pay`.',
  tags: ['payscore'],
  params: z.strictObject({ out_order_no: outOrderNo }),
  body: z.strictObject({
    service_id: z.string().regex(/^[0-9A-Za-z]{1,32}$/, 'must be 1-32 letters or digits').optional()
      .describe('支付分服务ID / PayScore service id').meta({ example: '2002000000000558128851361561536' }),
    sub_mchid: merchantId('子商户号', 'sub-merchant id', '1900000109')
  }),
  merchantFields: {},
  lockedFields: [],
  successStatus: 204,
  retry: OPERATION_RETRY_POLICY,
  example: {
    params: { out_order_no: '1234323JKHDFE1243252' },
    body: { service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' }
  }
}

export const operations: readonly Operation[] = [failNotify, partnerNotify, payscoreCollect]

/** The body a caller sends: the merchant's own fields may be left out (the gateway fills them in). */
export function callerBody (op: Operation): z.ZodObject {
  const optional = Object.fromEntries(Object.keys(op.merchantFields).map(field => [field, true as const]))
  return op.body.partial(optional as Record<string, true> & Record<number, never>)
}

/** The upstream request-target for these path parameters, encoded exactly as sent and signed. */
export function upstreamTarget (op: Operation, params: Record<string, string>): string {
  return op.upstreamPath.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(params[name] ?? ''))
}

/** Matches an upstream path back to its operation (used by the sandbox). */
export function matchUpstream (path: string): { op: Operation, params: Record<string, string> } | undefined {
  for (const op of operations) {
    const names: string[] = []
    const pattern = op.upstreamPath.replace(/\{(\w+)\}/g, (_, name: string) => { names.push(name); return '([^/]+)' })
    const match = new RegExp(`^${pattern}$`).exec(path)
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
 * The body sent upstream: the caller's body with the merchant's own fields filled in from configuration.
 * A caller naming another merchant id is refused; a field that is still missing is named.
 */
export function upstreamBody (op: Operation, body: Record<string, unknown>,
  merchant: Partial<Record<MerchantField, string>>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...body }
  const issues: FieldIssue[] = []
  for (const [field, setting] of Object.entries(op.merchantFields)) {
    const configured = merchant[setting]
    if (out[field] === undefined) {
      if (configured !== undefined) out[field] = configured
      else issues.push({ location: 'body', field: `/${field}`, issue: `required: send it, or configure WECHATPAY_${setting.toUpperCase()} on the gateway` })
    } else if (op.lockedFields.includes(field) && out[field] !== configured) {
      issues.push({ location: 'body', field: `/${field}`, issue: `must be this gateway's merchant id ${configured ?? ''} or be left out` })
    }
  }
  if (issues.length > 0) throw validationError(issues)
  return out
}
