// The official Node SDK family (wechatpay-axios-plugin) calling the upstream directly: N concurrent async loops.
// Run by run.js as a child process so that its CPU is its own: `node bench/sdk-load.js '<json options>'`.
// Prints one JSON line with the results on stdout.
import { generateKeyPairSync } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Wechatpay } from 'wechatpay-axios-plugin'

const opts = JSON.parse(process.argv[2] ?? '{}')
const { dir, baseUrl, concurrency, warmupMs, durationMs, contractId } = opts
const sandbox = JSON.parse(readFileSync(join(dir, 'sandbox.json'), 'utf8'))

function client (publicKey) {
  return new Wechatpay({
    mchid: sandbox.mchid,
    serial: sandbox.merchant_serial,
    privateKey: readFileSync(join(dir, sandbox.merchant_private_key_file)),
    // Public-key mode: WeChat Pay's answers are verified with the key of this id.
    certs: { [sandbox.wechatpay_public_key_id]: publicKey },
    baseURL: `${baseUrl}/`
  })
}

const wxpay = client(readFileSync(join(dir, sandbox.wechatpay_public_key_file)))
// The same call as the gateway's benchmark: the direct merchant's retry-deduction notice.
const call = c => c.v3.papay.contracts._contract_id_['fail-notify'].post({ mchid: sandbox.mchid, appid: sandbox.appid }, { contract_id: contractId })

function describe (err) {
  const status = err?.response?.status
  const data = err?.response?.data
  return `${err?.code ?? ''} ${err?.message ?? String(err)}${status !== undefined ? ` (HTTP ${status} ${JSON.stringify(data)})` : ''}`.trim()
}

// One call first: a failing setup is reported as such, not as zero throughput.
try {
  const first = await call(wxpay)
  if (first.status !== 204) throw new Error(`expected 204, got ${first.status}`)
} catch (err) {
  process.stdout.write(JSON.stringify({ fatal: `the SDK's first call failed: ${describe(err)}` }) + '\n')
  process.exit(1)
}

let measuring = false
let stop = false
let windowStart = 0
let windowEnd = Infinity
let ok = 0
let errors = 0
const errorSamples = new Map()
const latencies = []

async function loop () {
  while (!stop) {
    const t0 = performance.now()
    let success = false
    try {
      const res = await call(wxpay)
      success = res.status === 204
      if (!success) throw new Error(`unexpected status ${res.status}`)
    } catch (err) {
      if (measuring && performance.now() <= windowEnd) {
        const key = describe(err).slice(0, 200)
        errorSamples.set(key, (errorSamples.get(key) ?? 0) + 1)
      }
    }
    const t1 = performance.now()
    if (!measuring || t0 < windowStart || t1 > windowEnd) continue
    if (success) {
      ok++
      latencies.push(t1 - t0)
    } else {
      errors++
    }
  }
}

const loops = Array.from({ length: concurrency }, loop)
await new Promise(resolve => setTimeout(resolve, warmupMs))
const cpu0 = process.cpuUsage()
process.stdout.write('{"phase":"measure"}\n')
windowStart = performance.now()
measuring = true
await new Promise(resolve => setTimeout(resolve, durationMs))
windowEnd = performance.now()
process.stdout.write('{"phase":"end"}\n')
const cpu = process.cpuUsage(cpu0)
stop = true
await Promise.all(loops)

// Verification is real: the same call with a wrong WeChat Pay public key must be refused.
let verifies = false
try {
  await call(client(generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' })))
} catch (err) {
  verifies = /EV3_RES_HEADER_SIGNATURE_DIGEST/.test(String(err?.code ?? err?.message))
}

const seconds = (windowEnd - windowStart) / 1000
latencies.sort((a, b) => a - b)
const pct = p => latencies.length === 0 ? NaN : latencies[Math.min(latencies.length - 1, Math.ceil(p / 100 * latencies.length) - 1)]
process.stdout.write(JSON.stringify({
  ok,
  errors,
  errorSamples: Object.fromEntries(errorSamples),
  seconds,
  rps: ok / seconds,
  p50: pct(50),
  p99: pct(99),
  cpuMs: (cpu.user + cpu.system) / 1000,
  rssMB: process.memoryUsage().rss / 1048576,
  verifies
}) + '\n')
process.exit(0)
