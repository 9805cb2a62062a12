import { z } from 'zod'

/**
 * The simulator's settings, read alike by `npm start` (sandbox mode: the simulator in the gateway's process) and by
 * `npm run sandbox` (the simulator alone). Only where it listens differs: in sandbox mode it takes a free loopback
 * port, so SANDBOX_PORT and SANDBOX_HOST apply to `npm run sandbox` only.
 */
export const sandboxSettings = z.object({
  SANDBOX_DIR: z.string().min(1).default('.sandbox'),
  SANDBOX_PORT: z.coerce.number().int().min(0).max(65_535).default(8080),
  SANDBOX_HOST: z.string().min(1).default('127.0.0.1'),
  SANDBOX_KEY_MODE: z.enum(['public-key', 'certificate', 'migration']).default('public-key'),
  SANDBOX_SLOW_MS: z.coerce.number().int().min(0).default(15_000),
  SANDBOX_BENCH: z.enum(['0', '1']).default('0'),
  SANDBOX_MCHID: z.string().regex(/^\d{1,32}$/, 'must be 1-32 digits').optional(),
  SANDBOX_APPID: z.string().regex(/^[0-9A-Za-z_-]{1,32}$/, 'must be 1-32 letters, digits, _ or -').optional(),
  SANDBOX_MERCHANT_SERIAL: z.string().regex(/^[0-9A-Fa-f]{8,40}$/, 'must be 8-40 hexadecimal digits').optional(),
  SANDBOX_PUBLIC_KEY_ID: z.string().regex(/^PUB_KEY_ID_\d+$/, 'must look like PUB_KEY_ID_0112...').optional()
})

export type SandboxSettings = z.infer<typeof sandboxSettings>
