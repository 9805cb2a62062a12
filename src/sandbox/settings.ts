import { z } from 'zod'
import type { MerchantType } from '../wechat/profile.js'
import type { StartOptions } from './index.js'

/** An account the simulator plays. */
export interface MerchantSpec {
  name: string
  type: MerchantType
  mchid: string
  appid?: string | undefined
  merchantSerial?: string | undefined
  publicKeyId?: string | undefined
}

/** `SANDBOX_MERCHANTS`: `name:type:mchid,...`, e.g. `direct:direct:1230000109,partner:partner:1900000100`. */
function parseMerchantSpecs (value: string): MerchantSpec[] | string {
  const specs: MerchantSpec[] = []
  for (const entry of value.split(',').map(e => e.trim()).filter(Boolean)) {
    const [name = '', type = '', mchid = ''] = entry.split(':')
    if (!/^[a-z0-9][a-z0-9_-]{0,31}$/.test(name) || (type !== 'direct' && type !== 'partner') || !/^\d{1,32}$/.test(mchid)) {
      return `"${entry}" is not name:direct|partner:mchid`
    }
    specs.push({ name, type, mchid })
  }
  return specs.length > 0 ? specs : 'lists no merchant'
}

/**
 * The simulator's settings, read alike by `npm start` (sandbox mode: the simulator in the gateway's process) and by
 * `npm run sandbox` (the simulator alone). Only where it listens differs: in sandbox mode it listens on loopback, on
 * SANDBOX_PORT when it is set, else on a free port, so SANDBOX_HOST applies to `npm run sandbox` only.
 */
export const sandboxSettings = z.object({
  SANDBOX_DIR: z.string().min(1).default('.sandbox'),
  SANDBOX_PORT: z.coerce.number().int().min(0).max(65_535).default(8080),
  SANDBOX_HOST: z.string().min(1).default('127.0.0.1'),
  SANDBOX_KEY_MODE: z.enum(['public-key', 'certificate', 'migration']).default('public-key'),
  SANDBOX_SLOW_MS: z.coerce.number().int().min(0).default(15_000),
  SANDBOX_BENCH: z.enum(['0', '1']).default('0'),
  // Benchmarks: `direct:40000` signs 40000 empty answers of the merchant `direct` ahead of time (presigned.ts).
  SANDBOX_BENCH_PRESIGN: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,31}:\d{1,7}$/, 'must be <merchant name>:<count>').optional()
    .transform(v => v === undefined ? undefined : { [v.split(':')[0] as string]: Number(v.split(':')[1]) }),
  SANDBOX_NOTICE_WINDOW: z.enum(['on', 'off']).default('on'),
  SANDBOX_NOTIFY_URL: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL; {merchant} stands for the merchant\'s name' }).optional(),
  // Optional rather than defaulted (to 1, by the notifier), so that settings objects written before it stay valid.
  SANDBOX_NOTIFY_SCALE: z.coerce.number().positive().optional(),
  SANDBOX_MCHID: z.string().regex(/^\d{1,32}$/, 'must be 1-32 digits').optional(),
  SANDBOX_APPID: z.string().regex(/^[0-9A-Za-z_-]{1,32}$/, 'must be 1-32 letters, digits, _ or -').optional(),
  // As a certificate's serial reads back: whole bytes (an even count of digits), no leading 00 byte.
  SANDBOX_MERCHANT_SERIAL: z.string().regex(/^(?!00)(?:[0-9A-Fa-f]{2}){4,20}$/, 'must be 8-40 hexadecimal digits, an even count, not starting with 00 (as a certificate serial reads back)').optional(),
  SANDBOX_PUBLIC_KEY_ID: z.string().regex(/^PUB_KEY_ID_\d+$/, 'must look like PUB_KEY_ID_0112...').optional(),
  SANDBOX_MERCHANTS: z.string().transform((value, ctx): MerchantSpec[] => {
    const specs = parseMerchantSpecs(value)
    if (typeof specs === 'string') ctx.addIssue({ code: 'custom', message: `${specs}: expected name:direct|partner:mchid,...` })
    return typeof specs === 'string' ? [] : specs
  }).optional()
})

export type SandboxSettings = z.infer<typeof sandboxSettings>

/** What the simulator is started with, from its settings (where it listens is the caller's business). */
export function sandboxOptions (s: SandboxSettings): Omit<StartOptions, 'host' | 'port' | 'logger'> {
  return {
    dir: s.SANDBOX_DIR,
    keyMode: s.SANDBOX_KEY_MODE,
    slowMs: s.SANDBOX_SLOW_MS,
    bench: s.SANDBOX_BENCH === '1',
    ...(s.SANDBOX_BENCH_PRESIGN !== undefined && { presign: s.SANDBOX_BENCH_PRESIGN }),
    noticeWindow: s.SANDBOX_NOTICE_WINDOW === 'on',
    ...(s.SANDBOX_MERCHANTS !== undefined && { merchants: s.SANDBOX_MERCHANTS }),
    notify: {
      ...(s.SANDBOX_NOTIFY_URL !== undefined && { url: s.SANDBOX_NOTIFY_URL }),
      ...(s.SANDBOX_NOTIFY_SCALE !== undefined && { scale: s.SANDBOX_NOTIFY_SCALE })
    },
    overrides: { mchid: s.SANDBOX_MCHID, appid: s.SANDBOX_APPID, merchantSerial: s.SANDBOX_MERCHANT_SERIAL, publicKeyId: s.SANDBOX_PUBLIC_KEY_ID }
  }
}
