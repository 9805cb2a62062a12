import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type { WechatConfig } from '../config.js'
import { buildSandbox, type KeyMode } from './app.js'
import { ensureIdentity, type IdentityOverrides, type SandboxIdentity } from './identity.js'

export interface StartOptions {
  dir: string
  host: string
  port: number
  logger: FastifyBaseLogger
  keyMode?: KeyMode
  slowMs?: number
  bench?: boolean
  overrides?: IdentityOverrides
}

export interface RunningSandbox {
  url: string
  identity: SandboxIdentity
  app: FastifyInstance
  /** What a gateway (or any client) needs to call this sandbox, in the gateway's own settings. */
  gatewaySettings: (timeoutMs: number) => WechatConfig
  close: () => Promise<void>
}

/** Creates or loads the sandbox's keys in `dir` and starts the simulator on `host:port` (0 = any free port). */
export async function startSandbox (options: StartOptions): Promise<RunningSandbox> {
  const identity = await ensureIdentity(options.dir, options.overrides)
  const app = buildSandbox({
    identity,
    logger: options.logger,
    ...(options.keyMode !== undefined && { keyMode: options.keyMode }),
    ...(options.slowMs !== undefined && { slowMs: options.slowMs }),
    ...(options.bench !== undefined && { bench: options.bench })
  })
  await app.listen({ host: options.host, port: options.port })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : options.port
  const host = options.host.includes(':') ? `[${options.host}]` : options.host
  const url = `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`
  const { json, path } = identity
  return {
    url,
    identity,
    app,
    // The keys a merchant in this key mode has: the public key, the APIv3 key (platform certificates), or both.
    gatewaySettings: timeoutMs => ({
      baseUrl: url,
      mchid: json.mchid,
      appid: json.appid,
      merchantSerial: json.merchant_serial,
      privateKeyFile: path(json.merchant_private_key_file),
      merchantCertFile: path(json.merchant_cert_file),
      ...(app.sandbox.keyMode !== 'certificate' && { publicKeyId: json.wechatpay_public_key_id, publicKeyFile: path(json.wechatpay_public_key_file) }),
      ...(app.sandbox.keyMode !== 'public-key' && { apiv3Key: json.apiv3_key }),
      timeoutMs
    }),
    close: () => app.close()
  }
}
