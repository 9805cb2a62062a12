import t from 'tap'
import { createLogger, REDACT_PATHS } from '../src/logger.js'
import { LogCapture } from './helpers.js'

t.test('pino censors authorization headers and key material if they are ever logged', async t => {
  const logs = new LogCapture()
  const log = createLogger('info', logs)
  log.info({ headers: { authorization: 'Bearer secret-token-1' } }, 'a')
  log.info({ req: { headers: { authorization: 'Bearer secret-token-2', host: 'x' } } }, 'b')
  log.info({ authorization: 'Bearer secret-token-3', token: 'secret-token-4', apiv3Key: 'k'.repeat(32), privateKey: 'PEM' }, 'c')
  log.info({ wechat: { apiv3Key: 'k'.repeat(32), mchid: '1230000109' } }, 'd')
  const text = logs.raw.join('\n')
  t.notMatch(text, /secret-token|kkkk|PEM/)
  t.match(logs.lines[1], { req: { headers: { authorization: '[redacted]', host: 'x' } } })
  t.match(logs.lines[3], { wechat: { apiv3Key: '[redacted]', mchid: '1230000109' } })
  t.ok(REDACT_PATHS.every(p => !p.includes('*')), 'exact paths only')
})
