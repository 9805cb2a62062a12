import { setTimeout as sleep } from 'node:timers/promises'
import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { createLogger } from './logger.js'
import { loadMerchantsFile } from './merchants-file.js'
import { callerMerchantProblems, ConfigError, loadConfig, SHUTDOWN_MARGIN_MS, type AppConfig } from './config.js'
import { NOTIFY_PATH } from './notifications/listener.js'
import { checkSubscriberMerchants } from './notifications/subscribers.js'
import { listenProblem } from './listen.js'
import { KeyError } from './wechat/keys.js'

/** The only module that listens. Loads config, starts the built-in sandbox in sandbox mode, shuts down gracefully. */

function fail (err: unknown): never {
  if (err instanceof ConfigError || err instanceof KeyError) {
    process.stderr.write(`wechatpay-gateway cannot start:\n${err.problems.map(p => `  - ${p}`).join('\n')}\n`)
  } else {
    process.stderr.write(`wechatpay-gateway cannot start: ${(err as Error).stack ?? String(err)}\n`)
  }
  process.exit(1)
}

async function main (): Promise<void> {
  // A SIGHUP that arrives while starting (a key rotation script, say) must not kill the process: the keys are read
  // during the start anyway. Replaced by the reload once the gateway runs.
  let reload = (): void => {}
  process.on('SIGHUP', () => { reload() })
  const config = loadConfig()
  const logger = createLogger(config.logLevel)
  for (const warning of config.warnings ?? []) logger.warn(warning)
  const closers: Array<() => Promise<void>> = []

  let appConfig: AppConfig = config
  /** Sandbox mode: where the simulator sends notifications once the gateway's listener is up. */
  let notifySandbox: ((notifyAddress: string) => void) | undefined
  if (config.mode === 'sandbox') {
    // Loaded only in sandbox mode: nothing of the simulator exists in a live process.
    const [{ startSandbox }, { sandboxOptions }] = await Promise.all([import('./sandbox/index.js'), import('./sandbox/settings.js')])
    // On loopback; on a free port unless SANDBOX_PORT says which (to reach its control API, e.g. for notifications).
    const port = (process.env.SANDBOX_PORT ?? '') !== '' ? config.sandbox.SANDBOX_PORT : 0
    const sandbox = await startSandbox({ ...sandboxOptions(config.sandbox), host: '127.0.0.1', port, logger: logger.child({ component: 'sandbox' }) })
      .catch((err: NodeJS.ErrnoException) => { throw listenError(err, 'SANDBOX_PORT', 'SANDBOX_HOST', '127.0.0.1', port) })
    closers.push(() => sandbox.close())
    // The sandbox's own merchants file, exactly as an operator would point WECHATPAY_MERCHANTS_FILE at it.
    const problems: string[] = []
    const merchants = loadMerchantsFile(sandbox.merchantsFile, { baseUrl: sandbox.url }, problems)
    problems.push(...callerMerchantProblems(config.auth.tokens, merchants), ...checkSubscriberMerchants(config.notify.subscribers, merchants.map(m => m.name)))
    if (problems.length > 0) throw new ConfigError(problems)
    appConfig = { ...config, merchants }
    const { notifier } = sandbox.app.sandbox
    notifySandbox = address => { notifier.url ??= `${address.replace('0.0.0.0', '127.0.0.1')}${NOTIFY_PATH}/{merchant}` }
    logger.warn({ sandbox: sandbox.url, merchantsFile: sandbox.merchantsFile, keyMode: config.sandbox.SANDBOX_KEY_MODE, merchants: merchants.map(m => `${m.name} (${m.types[0] ?? ''} ${m.mchid})`) },
      '*** SANDBOX MODE: calls go to the built-in WeChat Pay simulator, not to WeChat Pay. Set WECHATPAY_MODE=live (or NODE_ENV=production) with real credentials for production. ***')
  }

  if (!config.auth.enabled) {
    logger.warn('caller authentication is OFF: any caller that can reach this port can use the operations' +
      (config.mode === 'sandbox' ? ' (sandbox mode without GATEWAY_TOKENS)' : ' (GATEWAY_AUTH=off)'))
  }
  // OpenTelemetry only when an OTLP endpoint is configured: otherwise none of its modules is loaded.
  const tracing = config.tracing ? (await import('./telemetry.js')).startTracing() : undefined
  const app = await buildApp(appConfig, { logger, ...(tracing !== undefined && { tracing }) })
  closers.unshift(() => app.close())
  if (tracing !== undefined) {
    logger.info('OpenTelemetry tracing is on (OTEL_EXPORTER_OTLP_ENDPOINT)')
    // Last: the final spans are flushed, for at most a second; an unreachable collector is logged, never waited on.
    closers.push(async () => {
      const flushed = tracing.shutdown().catch(err => { logger.warn({ reason: (err as Error).message }, 'the last spans could not be exported') })
      await Promise.race([flushed, sleep(SHUTDOWN_MARGIN_MS)])
    })
  }

  // On SIGTERM/SIGINT: not ready at once, calls still taken for the drain delay, then the listener stops and calls
  // in flight finish (lifecycle.ts). If the grace period runs out, calls still in flight answer "unknown" first.
  // SIGHUP is not a stop signal here: it reloads the key files (below), and nothing else.
  closeWithGrace({ delay: config.shutdownGraceMs, logger, skip: ['SIGHUP'] }, async ({ signal, err }) => {
    if (err !== undefined) logger.error({ err }, 'shutting down after an error')
    else logger.info({ signal, drainMs: config.shutdownDrainDelayMs }, 'shutting down: not ready, draining')
    setTimeout(() => { app.lifecycle.abortCalls() }, Math.max(0, config.shutdownGraceMs - SHUTDOWN_MARGIN_MS)).unref()
    app.lifecycle.drain()
    if (err === undefined) await sleep(config.shutdownDrainDelayMs)
    logger.info('shutting down: no new connections; finishing the calls in flight')
    for (const close of closers) await close()
  })

  // Rotated key files are picked up on SIGHUP too (they are also watched).
  reload = () => { app.reloadCredentials() }

  await app.listen({ host: config.host, port: config.port }).catch((err: NodeJS.ErrnoException) => {
    throw listenError(err, 'PORT', 'HOST', config.host, config.port)
  })
  const { port: notifyPort, host: notifyHost } = config.notify
  const notifyAddress = await app.notifications.listen().catch((err: NodeJS.ErrnoException) => {
    throw listenError(err, 'NOTIFY_PORT', 'NOTIFY_HOST', notifyHost, notifyPort ?? 0)
  })
  if (notifyAddress !== undefined) {
    logger.info({ address: notifyAddress, urls: appConfig.merchants.map(m => `<public base URL>${NOTIFY_PATH}/${m.name}`), subscribers: config.notify.subscribers.map(s => s.name) },
      'WeChat Pay notifications: listening (give WeChat Pay each profile\'s URL as notify_url)')
    notifySandbox?.(notifyAddress)
  }
}

/** A listen failure, as the setting to change. */
function listenError (err: NodeJS.ErrnoException, portSetting: string, hostSetting: string, host: string, port: number): Error {
  const problem = listenProblem(err, portSetting, hostSetting, host, port)
  return problem !== undefined ? new ConfigError([problem]) : err
}

main().catch(fail)
