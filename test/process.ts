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
    env: { ...inherited, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', ...env },
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

/** The settings of a live gateway in front of `sandbox`, as an operator writes them. */
export function liveEnv (sandbox: RunningSandbox, extra: Record<string, string> = {}): Record<string, string> {
  const s = sandbox.gatewaySettings(0)
  return {
    WECHATPAY_MODE: 'live', WECHATPAY_BASE_URL: s.baseUrl, WECHATPAY_MCHID: s.mchid, WECHATPAY_APPID: s.appid ?? '',
    WECHATPAY_MERCHANT_SERIAL: s.merchantSerial, WECHATPAY_PRIVATE_KEY_FILE: s.privateKeyFile,
    WECHATPAY_MERCHANT_CERT_FILE: s.merchantCertFile ?? '', WECHATPAY_PUBLIC_KEY_ID: s.publicKeyId ?? '', WECHATPAY_PUBLIC_KEY_FILE: s.publicKeyFile ?? '',
    GATEWAY_TOKENS: `billing:${TOKENS.billing}`, ...extra
  }
}

