import closeWithGrace from 'close-with-grace'
import { z } from 'zod'
import { createLogger } from '../logger.js'
import { startSandbox } from './index.js'
import { sandboxSettings } from './settings.js'

/** `npm run sandbox`: the simulator alone, e.g. for an official SDK or the Compose file. */

const env = sandboxSettings.extend({
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
