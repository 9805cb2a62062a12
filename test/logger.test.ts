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

t.test('every redaction path censors what it names: removing one fails here', async t => {
  for (const [i, path] of REDACT_PATHS.entries()) {
    const logs = new LogCapture()
    const log = createLogger('info', logs)
    const secret = `secret-value-${i}`
    const object: Record<string, unknown> = {}
    let at = object
    const keys = path.split('.')
    for (const key of keys.slice(0, -1)) at = (at[key] = {}) as Record<string, unknown>
    at[keys.at(-1) as string] = secret
    log.info(object, 'x')
    t.notMatch(logs.raw.join('\n'), secret, path)
    t.match(logs.raw.join('\n'), '[redacted]', `${path}: censored, not dropped`)
  }
})
