import { z } from 'zod'
import { validationError, type FieldIssue } from '../errors.js'
import type { MerchantType } from './profile.js'
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

/** Profile settings that fill a body field the caller leaves out. */
export type ProfileField = 'mchid' | 'appid'

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
  /**
   * Which kind of WeChat Pay account calls it (PROTOCOL.md, the table at the top), and the field by which a caller
   * names that account (the merchant profile). `forwarded: false`: WeChat Pay's body has no such field (the account
   * is the one that signs), so the gateway takes it from the caller and does not send it on.
   */
  merchant: { type: MerchantType, field: 'mchid' | 'sp_mchid', forwarded: boolean }
  params: z.ZodObject
  /** The upstream body with WeChat Pay's rules: all required fields required. */
  body: z.ZodObject
  /** Body field → which setting of the chosen profile fills it when the caller leaves it out. */
  profileFields: Record<string, ProfileField>
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

export const operations: readonly Operation[] = [failNotify, partnerNotify, payscoreCollect]

/**
 * The body a caller sends: the fields a profile fills in may be left out, and an operation whose WeChat body does
 * not name the merchant takes its merchant field from the caller (not sent on).
 */
export function callerBody (op: Operation): z.ZodObject {
  const optional = Object.fromEntries(Object.keys(op.profileFields).map(field => [field, true as const]))
  const body = op.body.partial(optional as Record<string, true> & Record<number, never>)
  if (op.merchant.forwarded) return body
  return body.extend({
    [op.merchant.field]: merchantId('服务商商户号：选择商户配置（不发送给微信支付：签名的商户即服务商），只有一个服务商时可省略',
      'service provider merchant id: chooses the merchant profile (not sent to WeChat Pay, which knows the signing merchant); may be left out when the gateway holds one service provider', '1900000100').optional()
  })
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
 * The body sent upstream: the caller's body with the profile's own fields filled in, and without the merchant field
 * when WeChat Pay's body has none. A field that is still missing is named.
 */
export function upstreamBody (op: Operation, body: Record<string, unknown>,
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
