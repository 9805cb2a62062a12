import closeWithGrace from 'close-with-grace'
import { z } from 'zod'
import { listenProblem } from '../listen.js'
import { createLogger } from '../logger.js'
import { startSandbox } from './index.js'
import { sandboxOptions, sandboxSettings } from './settings.js'

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
const sandbox = await startSandbox({ ...sandboxOptions(e), host: e.SANDBOX_HOST, port: e.SANDBOX_PORT, logger }).catch((err: NodeJS.ErrnoException) => {
  const problem = listenProblem(err, 'SANDBOX_PORT', 'SANDBOX_HOST', e.SANDBOX_HOST, e.SANDBOX_PORT)
  process.stderr.write(`wechatpay sandbox cannot start: ${problem ?? err.stack ?? String(err)}\n`)
  process.exit(1)
})
logger.info({ url: sandbox.url, dir: e.SANDBOX_DIR, key_mode: e.SANDBOX_KEY_MODE, merchants: sandbox.merchants.all.map(m => `${m.ids.name} (${m.ids.type} ${m.ids.mchid})`) },
  `WeChat Pay v3 sandbox ready; configure the gateway with WECHATPAY_MERCHANTS_FILE=${sandbox.merchantsFile}, or an SDK from ${e.SANDBOX_DIR}/sandbox.json`)
closeWithGrace({ delay: 5000, logger }, async () => { await sandbox.close() })
