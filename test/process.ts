import { spawn } from 'node:child_process'
import type { Test } from 'tap'
import { request } from 'undici'
import type { RunningSandbox } from '../src/sandbox/index.js'
import { TOKENS } from './helpers.js'

/** `src/server.ts` as a real process, run with the same TypeScript loader as this test (so coverage counts too). */
export function start (t: Test, env: Record<string, string>, opts: { fileLimit?: number } = {}) {
  const { NODE_ENV: _, ...inherited } = process.env
  const argv = [process.execPath, ...process.execArgv, 'src/server.ts']
  // With a file limit, through the shell's ulimit, as an operator's container would set it.
  const [command, args] = opts.fileLimit === undefined
    ? [argv[0] as string, argv.slice(1)]
    : ['bash', ['-c', `ulimit -n ${opts.fileLimit} && exec "$@"`, 'bash', ...argv]]
  const child = spawn(command, args, {
    // The notices' time window would make these tests depend on the time of day (its own tests pin a clock).
    env: { ...inherited, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', NOTIFY_PORT: '0', SANDBOX_NOTICE_WINDOW: 'off', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const out: string[] = []
  let err = ''
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  const listening = new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n').filter(Boolean)) {
        out.push(line)
        const url = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(line)?.[1]
        if (url !== undefined && !line.includes('"component":"sandbox"')) resolve(url)
      }
    })
    child.stderr.on('data', (chunk: Buffer) => { err += chunk.toString() })
    void exited.then(code => reject(new Error(`exited with ${code}: ${err}`)))
  })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  return { child, out, stderr: () => err, exited, listening }
}

export const post = (url: string, path: string, body: object, token?: string) => request(url + path, {
  method: 'POST',
  headers: { 'content-type': 'application/json', ...(token !== undefined && { authorization: `Bearer ${token}` }) },
  body: JSON.stringify(body)
})

/** The settings of a live gateway in front of `sandbox`, as an operator writes them: the sandbox's merchants file. */
export function liveEnv (sandbox: RunningSandbox, extra: Record<string, string> = {}): Record<string, string> {
  return {
    WECHATPAY_MODE: 'live',
    WECHATPAY_BASE_URL: sandbox.url,
    WECHATPAY_MERCHANTS_FILE: sandbox.merchantsFile,
    GATEWAY_TOKENS: `billing:${TOKENS.billing}`,
    ...extra
  }
}

/** The single-merchant settings (no merchants file) for one of the sandbox's merchants, as before profiles. */
export function singleMerchantEnv (sandbox: RunningSandbox, name: string, extra: Record<string, string> = {}): Record<string, string> {
  const m = sandbox.merchants.all.find(x => x.ids.name === name)
  if (m === undefined) throw new Error(`no sandbox merchant ${name}`)
  const file = (f: string): string => sandbox.merchants.path(m, f)
  return {
    WECHATPAY_MODE: 'live', WECHATPAY_BASE_URL: sandbox.url, WECHATPAY_MCHID: m.ids.mchid, WECHATPAY_APPID: m.ids.appid,
    WECHATPAY_MERCHANT_SERIAL: m.ids.merchant_serial, WECHATPAY_PRIVATE_KEY_FILE: file(m.files.merchantKey),
    WECHATPAY_MERCHANT_CERT_FILE: file(m.files.merchantCert), WECHATPAY_PUBLIC_KEY_ID: m.ids.wechatpay_public_key_id,
    WECHATPAY_PUBLIC_KEY_FILE: file(m.files.publicKey), GATEWAY_TOKENS: `billing:${TOKENS.billing}`, ...extra
  }
}
