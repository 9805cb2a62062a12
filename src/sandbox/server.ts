import closeWithGrace from 'close-with-grace'
import { z } from 'zod'
import { createLogger } from '../logger.js'
import { startSandbox } from './index.js'

/** `npm run sandbox`: the simulator alone, e.g. for an official SDK or the Compose file. */

const env = z.object({
  SANDBOX_DIR: z.string().min(1).default('.sandbox'),
  SANDBOX_PORT: z.coerce.number().int().min(0).max(65_535).default(8080),
  SANDBOX_HOST: z.string().min(1).default('127.0.0.1'),
  SANDBOX_KEY_MODE: z.enum(['public-key', 'certificate', 'migration']).default('public-key'),
  SANDBOX_SLOW_MS: z.coerce.number().int().min(0).default(15_000),
  SANDBOX_BENCH: z.enum(['0', '1']).default('0'),
  SANDBOX_MCHID: z.string().regex(/^\d{1,32}$/).optional(),
  SANDBOX_APPID: z.string().regex(/^[0-9A-Za-z_-]{1,32}$/).optional(),
  SANDBOX_MERCHANT_SERIAL: z.string().regex(/^[0-9A-Fa-f]{8,40}$/).optional(),
  SANDBOX_PUBLIC_KEY_ID: z.string().regex(/^PUB_KEY_ID_\d+$/).optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info')
}).safeParse(process.env)

if (!env.success) {
  process.stderr.write(`wechatpay sandbox cannot start:\n${env.error.issues.map(i => `  - ${i.path.join('.')}: ${i.message}`).join('\n')}\n`)
  process.exit(1)
}
const e = env.data
const logger = createLogger(e.LOG_LEVEL)
const sandbox = await startSandbox({
  dir: e.SANDBOX_DIR,
  host: e.SANDBOX_HOST,
  port: e.SANDBOX_PORT,
  logger,
  keyMode: e.SANDBOX_KEY_MODE,
  slowMs: e.SANDBOX_SLOW_MS,
  bench: e.SANDBOX_BENCH === '1',
  overrides: { mchid: e.SANDBOX_MCHID, appid: e.SANDBOX_APPID, merchantSerial: e.SANDBOX_MERCHANT_SERIAL, publicKeyId: e.SANDBOX_PUBLIC_KEY_ID }
})
logger.info({ url: sandbox.url, dir: e.SANDBOX_DIR, key_mode: e.SANDBOX_KEY_MODE, mchid: sandbox.identity.json.mchid },
  `WeChat Pay v3 sandbox ready; configure clients from ${e.SANDBOX_DIR}/sandbox.json`)
closeWithGrace({ delay: 5000, logger }, async () => { await sandbox.close() })
