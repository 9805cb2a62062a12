// `npm run bench`: the gateway (live mode) in front of the sandbox, against the cost of the cryptography it must do
// (one RSA-2048 signature and one verification per call, measured in the same run) and the official Node SDK family
// calling the same upstream directly. See BENCHMARKS.md.
//
//   node bench/run.js              the benchmark (about 50 s; run `npm run build` first, `npm run bench` does)
//   node bench/run.js --cores 4    the gateway pinned to 4 cores (taskset), the upstream and load generator on the
//                                  others when the machine has more (default: every core, shared)
//   node bench/run.js --profile    the gateway's 32-connection run only, under --cpu-prof, with a summary of where
//                                  the main thread's time goes (the numbers of that run carry the profiler's overhead)
//   node bench/run.js --quick      the gateway's 32-connection run only, with its CPU per call (A/B runs)
//   BENCH_NODE=/path/to/node       run the gateway, the sandbox and the SDK on another Node binary (e.g. Node 24)
//   BENCH_GATEWAY_ENV='{"LOG_LEVEL":"warn"}'   extra settings for the gateway (A/B runs: what does a feature cost?)
//
// Exit status: 0 when the run completed (a missed target prints MISSED, it does not fail), 1 on a harness failure.
import autocannon from 'autocannon'
import { execFileSync, spawn } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { createServer } from 'node:net'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { printSummary, summarize } from './profile.js'

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)))
const PROFILE = process.argv.includes('--profile')
const QUICK = process.argv.includes('--quick')
const NODE = process.env.BENCH_NODE ?? process.execPath
const NPROC = os.availableParallelism()
const CORES = Math.min(NPROC, Number(process.argv[process.argv.indexOf('--cores') + 1] ?? NPROC) || NPROC)
/** CPU sets for taskset: the gateway's cores, and the rest for the upstream and the load generator (when there are). */
const CPUSETS = CORES < NPROC
  ? { gateway: `0-${CORES - 1}`, others: `${CORES}-${NPROC - 1}` }
  : undefined

const SETTINGS = {
  connections: 32,
  warmupSeconds: 2,
  durationSeconds: 10,
  singleSeconds: 5,
  ceilingMs: 3000,
  contractId: '123124412412423431',
  // Answers the sandbox signs before the run (its signing would otherwise compete for the gateway's cores): enough
  // for every call of the gateway's runs at up to ~2,500/s; past that it signs as it goes.
  presigned: 45_000,
  token: 'bench-token-0123456789abcdef'
}
/** Issue 13's targets: ratios within one run, so that they hold on any machine. */
const TARGETS = { cryptoRatio: 1.4, mainUs: 100, sdkRatio: 2.2, p99SingleMs: 5, rssMB: 150, readyMs: 1000 }
// The direct merchant's retry-deduction notice: the body is filled in from its profile (mchid, appid).
const ROUTE = `/contracts/${SETTINGS.contractId}/fail-notify`
const BODY = '{}'
const CLK_TCK = 100 // Linux USER_HZ; /proc/<pid>/stat counts CPU time in these ticks

// ---- children ----------------------------------------------------------------------------------------------------

const children = new Set()
const workDir = mkdtempSync(join(os.tmpdir(), 'wechatpay-bench-'))
let keepWorkDir = false

function killChildren () {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  children.clear()
}
process.on('exit', () => {
  killChildren()
  if (!keepWorkDir) rmSync(workDir, { recursive: true, force: true })
})
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130))

function freePort () {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

/** `command` under `taskset -c cpuset` when a CPU set is given. */
function pinned (cpuset, command) {
  return cpuset === undefined ? [command[0], command.slice(1)] : ['taskset', ['-c', cpuset, ...command]]
}

/** Starts `node <args>` with its output in files of the work directory; never inherits the caller's WECHATPAY_* settings. */
function startNode (name, args, env, cpuset) {
  const out = openSync(join(workDir, `${name}.log`), 'w')
  const err = openSync(join(workDir, `${name}.err`), 'w')
  const [command, argv] = pinned(cpuset, [NODE, ...args])
  const child = spawn(command, argv, {
    cwd: ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', out, err]
  })
  closeSync(out)
  closeSync(err)
  children.add(child)
  child.name = name
  child.exited = new Promise(resolve => child.on('exit', (code, signal) => resolve({ code, signal })))
  return child
}

function childOutput (name) {
  const read = ext => existsSync(join(workDir, `${name}.${ext}`)) ? readFileSync(join(workDir, `${name}.${ext}`), 'utf8') : ''
  return `${read('err')}${read('log')}`.trim().split('\n').slice(-15).join('\n')
}

function get (port, path) {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, agent: false }, res => {
      res.resume()
      res.on('end', () => resolve(res.statusCode))
    })
    req.on('error', reject)
    req.setTimeout(1000, () => req.destroy(new Error('timeout')))
    req.end()
  })
}

/** Polls GET /healthz every 5 ms until 200; fails if the child exits or `limitMs` passes. */
async function waitHealthy (child, port, limitMs) {
  const deadline = performance.now() + limitMs
  let exited = false
  child.exited.then(() => { exited = true })
  while (performance.now() < deadline) {
    if (exited) throw new Error(`${child.name} exited before it was ready:\n${childOutput(child.name)}`)
    try {
      if (await get(port, '/healthz') === 200) return
    } catch {}
    await new Promise(resolve => setTimeout(resolve, 5))
  }
  throw new Error(`${child.name} was not ready after ${limitMs} ms:\n${childOutput(child.name)}`)
}

async function stopChild (child, signal = 'SIGTERM', graceMs = 10_000) {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill(signal)
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
  await child.exited
  clearTimeout(timer)
  children.delete(child)
}

// ---- /proc accounting ----------------------------------------------------------------------------------------------

/** CPU ms of each thread of a process: { tid: ms }. The main thread's tid is the pid. */
function threadCpu (pid) {
  const out = {}
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      out[tid] = (Number(fields[11]) + Number(fields[12])) * 1000 / CLK_TCK
    } catch {} // a thread that ended
  }
  return out
}

function processCpu (pid) {
  return Object.values(threadCpu(pid)).reduce((a, b) => a + b, 0)
}

/** Busy and total CPU ms of the whole machine, all cores. */
function machineCpu () {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
  const total = fields.reduce((a, b) => a + b, 0)
  const idle = fields[3] + fields[4]
  return { busy: (total - idle) * 1000 / CLK_TCK, total: total * 1000 / CLK_TCK }
}

/** V8 heap figures from the gateway's own Prometheus endpoint, when it has one; undefined otherwise. */
async function heapFromMetrics (port) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`)
    if (res.status !== 200) return undefined
    const text = await res.text()
    const mb = name => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN) / 1048576
    return { usedMB: mb('nodejs_heap_size_used_bytes'), totalMB: mb('nodejs_heap_size_total_bytes'), externalMB: mb('nodejs_external_memory_bytes') }
  } catch {
    return undefined
  }
}

function memory (pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = name => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN)
  return { rssMB: kb('VmRSS') / 1024, hwmMB: kb('VmHWM') / 1024 }
}

/** Snapshots CPU of the named processes, this process and the machine; `.delta()` gives ms used since. */
function cpuMeter (pids, selfLabel = 'harness (autocannon)') {
  const t0 = performance.now()
  const threads0 = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, threadCpu(pid)]))
  const self0 = process.cpuUsage()
  const machine0 = machineCpu()
  return {
    delta () {
      const wallMs = performance.now() - t0
      const result = { wallMs, processes: {} }
      for (const [name, pid] of Object.entries(pids)) {
        const now = threadCpu(pid)
        const before = threads0[name]
        const used = tid => (now[tid] ?? 0) - (before[tid] ?? 0)
        const main = used(String(pid))
        const total = Object.keys(now).reduce((sum, tid) => sum + used(tid), 0)
        result.processes[name] = { main, helpers: total - main, total }
      }
      const self = process.cpuUsage(self0)
      result.processes[selfLabel] = { total: (self.user + self.system) / 1000 }
      const machine = machineCpu()
      result.machineBusy = machine.busy - machine0.busy
      result.machineTotal = machine.total - machine0.total
      const ours = Object.values(result.processes).reduce((sum, p) => sum + p.total, 0)
      result.other = Math.max(0, result.machineBusy - ours)
      return result
    }
  }
}

// ---- measurements ------------------------------------------------------------------------------------------------

async function signingCeiling () {
  const pem = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' })
  const threads = os.availableParallelism()
  const results = await Promise.all(Array.from({ length: threads }, () => new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./sign-worker.js', import.meta.url), { workerData: { pem, ms: SETTINGS.ceilingMs } })
    worker.once('message', resolve)
    worker.once('error', reject)
  })))
  const perThread = results.map(r => r.signatures / (r.ms / 1000))
  const mean = values => values.reduce((a, b) => a + b, 0) / values.length
  // What one call must cost at least: one signature (the request) and one verification (the answer), on one core.
  const signUs = mean(results.map(r => 1000 * r.ms / r.signatures))
  const verifyUs = mean(results.map(r => 1000 * r.verifyMs / r.verifications))
  return { threads, perThread, total: perThread.reduce((a, b) => a + b, 0), messageBytes: results[0].messageBytes, signUs, verifyUs, cryptoUs: signUs + verifyUs }
}

function percentile (sorted, p) {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p / 100 * sorted.length) - 1))]
}

/** One autocannon run against the gateway; latencies are recorded exactly (autocannon's histogram keeps whole ms). */
async function cannon (port, connections, seconds) {
  let latencies = new Float64Array(1 << 16)
  let n = 0
  const instance = autocannon({
    url: `http://127.0.0.1:${port}${ROUTE}`,
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${SETTINGS.token}` },
    body: BODY,
    connections,
    duration: seconds,
    timeout: 10
  })
  instance.on('response', (_client, statusCode, _bytes, ms) => {
    if (statusCode !== 204) return
    if (n === latencies.length) {
      const bigger = new Float64Array(latencies.length * 2)
      bigger.set(latencies)
      latencies = bigger
    }
    latencies[n++] = ms
  })
  const result = await instance
  const sorted = latencies.subarray(0, n).sort()
  const ok = result.statusCodeStats['204']?.count ?? 0
  const otherStatuses = Object.entries(result.statusCodeStats).filter(([code]) => code !== '204')
  return {
    connections,
    seconds: result.duration,
    ok,
    rps: ok / result.duration,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted[n - 1] ?? NaN,
    errors: result.errors + result.timeouts + otherStatuses.reduce((sum, [, s]) => sum + s.count, 0),
    errorDetail: { connectionErrors: result.errors, timeouts: result.timeouts, statuses: Object.fromEntries(otherStatuses.map(([c, s]) => [c, s.count])) }
  }
}

async function sanityCall (port) {
  const res = await fetch(`http://127.0.0.1:${port}${ROUTE}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${SETTINGS.token}` },
    body: BODY
  })
  const text = await res.text()
  if (res.status !== 204) throw new Error(`the gateway answered ${res.status} instead of 204 to the benchmark call: ${text}`)
}

/**
 * Runs bench/sdk-load.js; its CPU, the sandbox's and the machine's are metered over the child's measured window
 * (it prints {"phase":"measure"} and {"phase":"end"} around it).
 */
function runSdk (sandboxDir, baseUrl, sandboxPid) {
  return new Promise((resolve, reject) => {
    const options = {
      dir: sandboxDir,
      baseUrl,
      concurrency: SETTINGS.connections,
      warmupMs: SETTINGS.warmupSeconds * 1000,
      durationMs: SETTINGS.durationSeconds * 1000,
      contractId: SETTINGS.contractId
    }
    const [command, argv] = pinned(CPUSETS?.others, [NODE, join(ROOT, 'bench', 'sdk-load.js'), JSON.stringify(options)])
    const child = spawn(command, argv, {
      cwd: ROOT,
      env: { PATH: process.env.PATH, HOME: process.env.HOME },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    children.add(child)
    let meter
    let cpu
    let pending = ''
    let result
    let err = ''
    child.stdout.on('data', d => {
      pending += d
      let nl
      while ((nl = pending.indexOf('\n')) !== -1) {
        const line = pending.slice(0, nl)
        pending = pending.slice(nl + 1)
        let msg
        try { msg = JSON.parse(line) } catch { err += line + '\n'; continue }
        if (msg.phase === 'measure') meter = cpuMeter({ sdk: child.pid, sandbox: sandboxPid }, 'harness (idle)')
        else if (msg.phase === 'end') cpu = meter?.delta()
        else result = msg
      }
    })
    child.stderr.on('data', d => { err += d })
    child.on('error', reject)
    child.on('exit', code => {
      children.delete(child)
      if (result === undefined || result.fatal !== undefined || code !== 0 || cpu === undefined) {
        reject(new Error(`the SDK load generator failed (exit ${code}): ${result?.fatal ?? ''}\n${err}`.trim()))
      } else {
        resolve({ ...result, cpu })
      }
    })
  })
}

// ---- output ------------------------------------------------------------------------------------------------------

const f0 = x => Number.isFinite(x) ? x.toFixed(0) : 'n/a'
const f2 = x => Number.isFinite(x) ? x.toFixed(2) : 'n/a'

function machineInfo () {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8')
  const field = name => new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(cpuinfo)?.[1]
  const model = field('model name') ?? os.cpus()[0]?.model ?? 'unknown'
  return {
    nproc: os.availableParallelism(),
    cpu: `${model} (family ${field('cpu family') ?? '?'}, model ${field('model') ?? '?'}, ${field('cpu MHz') ?? '?'} MHz)`,
    memGB: os.totalmem() / 2 ** 30,
    node: process.version,
    openssl: process.versions.openssl,
    kernel: os.release(),
    load: os.loadavg().map(l => l.toFixed(2)).join(' ')
  }
}

/** CPU use over a measured window: % of one core, and µs per successful call when `calls` is given. */
function printCpu (label, meter, calls) {
  const { wallMs, processes, other, machineTotal, machineBusy } = meter
  const pct = ms => `${(100 * ms / wallMs).toFixed(0)}%`
  const per = ms => calls ? ` = ${(1000 * ms / calls).toFixed(0)} µs/call` : ''
  console.log(`  CPU during ${label} (100% = one core; machine busy ${pct(machineBusy)} of ${pct(machineTotal)}):`)
  for (const [name, p] of Object.entries(processes)) {
    const threads = p.main !== undefined ? ` (main thread ${pct(p.main)}${per(p.main)}, other threads ${pct(p.helpers)}${per(p.helpers)})` : ''
    console.log(`    ${name.padEnd(22)} ${pct(p.total).padStart(4)}${per(p.total)}${threads}`)
  }
  console.log(`    ${'other processes'.padEnd(22)} ${pct(other).padStart(4)}   <- not part of the benchmark: disturbance`)
}

function verdict (ok) {
  return ok ? 'met' : 'MISSED'
}

// ---- main --------------------------------------------------------------------------------------------------------

async function main () {
  const machine = machineInfo()
  console.log(`machine: ${machine.nproc} cores, ${machine.cpu}, ${machine.memGB.toFixed(1)} GB RAM, Linux ${machine.kernel}, ` +
    `harness Node ${machine.node} (OpenSSL ${machine.openssl}), load average ${machine.load}`)
  machine.childNode = execFileSync(NODE, ['-p', 'process.version + " (OpenSSL " + process.versions.openssl + ")"'], { encoding: 'utf8' }).trim()
  console.log(`gateway, sandbox and SDK on Node ${machine.childNode}; ` + (CPUSETS === undefined
    ? `every process shares all ${NPROC} cores`
    : `gateway pinned to cores ${CPUSETS.gateway}, sandbox, SDK and load generator to ${CPUSETS.others}`))
  if (CPUSETS !== undefined) execFileSync('taskset', ['-cp', CPUSETS.others, String(process.pid)], { stdio: 'ignore' })
  if (!existsSync(join(ROOT, 'dist', 'server.js'))) throw new Error('dist/server.js is missing: run `npm run build` (or `npm run bench`)')

  let ceiling
  if (!PROFILE && !QUICK) {
    process.stdout.write(`signing ceiling: ${os.availableParallelism()} worker threads x ${SETTINGS.ceilingMs / 1000} s of RSA-2048 SHA-256 ... `)
    const meter = cpuMeter({})
    ceiling = await signingCeiling()
    const cpu = meter.delta()
    ceiling.otherPct = 100 * cpu.other / cpu.wallMs
    console.log(`${f0(ceiling.total)} signatures/s (${ceiling.perThread.map(f0).join(' + ')}, ${ceiling.messageBytes}-byte message; ` +
      `other processes used ${f0(ceiling.otherPct)}% of a core meanwhile)`)
    console.log(`cryptography per call on one core: sign ${f0(ceiling.signUs)} µs + verify ${f0(ceiling.verifyUs)} µs = ${f0(ceiling.cryptoUs)} µs`)
  }

  // The upstream: the sandbox, reusing its own response signatures within a second (SANDBOX_BENCH=1).
  const sandboxDir = join(workDir, 'sandbox')
  const sandboxPort = await freePort()
  const sandbox = startNode('sandbox', ['dist/sandbox/server.js'],
    { SANDBOX_DIR: sandboxDir, SANDBOX_PORT: String(sandboxPort), SANDBOX_BENCH: '1', SANDBOX_BENCH_PRESIGN: `direct:${SETTINGS.presigned}`, LOG_LEVEL: 'warn' }, CPUSETS?.others)
  await waitHealthy(sandbox, sandboxPort, 120_000)
  const upstream = `http://127.0.0.1:${sandboxPort}`

  // The gateway, live mode, production settings, logging every call at info (to a file).
  const gatewayPort = await freePort()
  const profileDir = join(workDir, 'cpuprofile')
  const gatewayStart = performance.now()
  // The same V8 setting as `npm start` and the Docker image.
  const gateway = startNode('gateway', ['--max-semi-space-size=8', ...(PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []), 'dist/server.js'], {
    NODE_ENV: 'production',
    WECHATPAY_MODE: 'live',
    WECHATPAY_BASE_URL: upstream,
    // The sandbox's two accounts (a direct merchant and a service provider), as an operator configures them.
    WECHATPAY_MERCHANTS_FILE: join(sandboxDir, 'merchants.json'),
    GATEWAY_TOKENS: `bench:${SETTINGS.token}`,
    // One caller sends everything here: keep the per-caller rate limiter running (its cost is measured) but far
    // above what the machine can do, so that it never answers 429.
    RATE_LIMIT_MAX: '1000000',
    PORT: String(gatewayPort),
    HOST: '127.0.0.1',
    NOTIFY_PORT: 'off',
    LOG_LEVEL: 'info',
    ...JSON.parse(process.env.BENCH_GATEWAY_ENV ?? '{}')
  }, CPUSETS?.gateway)
  await waitHealthy(gateway, gatewayPort, 10_000)
  const readyMs = performance.now() - gatewayStart
  const readyRssMB = memory(gateway.pid).rssMB
  console.log(`gateway ready ${f0(readyMs)} ms after spawn (first 200 from /healthz), RSS ${f0(readyRssMB)} MB; upstream: sandbox at ${upstream}`)
  await sanityCall(gatewayPort)

  // Gateway, 32 connections: warm-up, then the measured run.
  await cannon(gatewayPort, SETTINGS.connections, SETTINGS.warmupSeconds)
  const meter32 = cpuMeter({ gateway: gateway.pid, sandbox: sandbox.pid })
  const g32 = await cannon(gatewayPort, SETTINGS.connections, SETTINGS.durationSeconds)
  const cpu32 = meter32.delta()
  const mem = memory(gateway.pid)
  const heap = await heapFromMetrics(gatewayPort)

  if (PROFILE) {
    printCpu('the 32-connection run', cpu32, g32.ok)
    console.log(`gateway (profiled): ${f0(g32.rps)} req/s, p50 ${f2(g32.p50)} ms, p99 ${f2(g32.p99)} ms, errors ${g32.errors}, RSS ${f0(mem.rssMB)} MB`)
    const operations = countLogLines()
    const mainCpuMs = threadCpu(gateway.pid)[String(gateway.pid)]
    await stopChild(gateway)
    const files = existsSync(profileDir) ? readdirSync(profileDir).filter(f => f.endsWith('.cpuprofile')) : []
    if (files.length === 0) throw new Error(`no .cpuprofile written in ${profileDir}`)
    const summary = summarize(JSON.parse(readFileSync(join(profileDir, files[0]), 'utf8')))
    console.log(`(the profile covers the whole process life: start-up, warm-up and the measured run, ${operations} operations in all)`)
    printSummary(summary, { requests: operations })
    console.log(`\nFor comparison, /proc says the main thread used ${f0(mainCpuMs)} ms of CPU over the same life ` +
      `(${f0(1000 * mainCpuMs / operations)} µs per request) against ${f0(summary.busyMs)} ms of busy wall-clock time in the profile.`)
    keepWorkDir = true
    console.log(`\nprofile kept: ${join(profileDir, files[0])} (open it in Chrome DevTools > Performance, or VS Code)`)
    return
  }

  if (QUICK) {
    printCpu('the 32-connection run', cpu32, g32.ok)
    console.log(`gateway: ${f0(g32.rps)} req/s, p99 ${f2(g32.p99)} ms, errors ${g32.errors}, RSS ${f0(mem.rssMB)} MB; ` +
      `CPU per call ${f0(1000 * cpu32.processes.gateway.total / g32.ok)} µs, main thread ${f0(1000 * cpu32.processes.gateway.main / g32.ok)} µs`)
    return
  }

  // Gateway, one connection.
  const meter1 = cpuMeter({ gateway: gateway.pid, sandbox: sandbox.pid })
  const g1 = await cannon(gatewayPort, 1, SETTINGS.singleSeconds)
  const cpu1 = meter1.delta()

  // The SDK calling the sandbox directly, same call, same concurrency; the gateway sits idle.
  const sdk = await runSdk(sandboxDir, upstream, sandbox.pid)
  const logErrors = gatewayLogProblems()

  // ---- report ----
  const rows = [
    ['', 'req/s', 'p50 ms', 'p99 ms', 'max ms', 'ok', 'errors', 'RSS MB'],
    [`gateway, ${SETTINGS.connections} conns, ${SETTINGS.durationSeconds} s`, f0(g32.rps), f2(g32.p50), f2(g32.p99), f2(g32.max), g32.ok, g32.errors, `${f0(mem.rssMB)} (peak ${f0(mem.hwmMB)})`],
    [`gateway, 1 conn, ${SETTINGS.singleSeconds} s`, f0(g1.rps), f2(g1.p50), f2(g1.p99), f2(g1.max), g1.ok, g1.errors, f0(memory(gateway.pid).rssMB)],
    [`SDK direct, ${SETTINGS.connections} loops, ${SETTINGS.durationSeconds} s`, f0(sdk.rps), f2(sdk.p50), f2(sdk.p99), '', sdk.ok, sdk.errors, `${f0(sdk.rssMB)} (SDK process)`],
    [`signing ceiling, ${ceiling.threads} threads`, f0(ceiling.total), '', '', '', '', '', '']
  ]
  const widths = rows[0].map((_, i) => Math.max(...rows.map(r => String(r[i]).length)))
  console.log('')
  for (const r of rows) console.log('  ' + r.map((c, i) => i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i])).join('  '))
  console.log('')
  printCpu(`gateway, ${SETTINGS.connections} conns`, cpu32, g32.ok)
  printCpu('gateway, 1 conn', cpu1, g1.ok)
  printCpu(`SDK direct, ${SETTINGS.connections} loops`, sdk.cpu, sdk.ok)
  if (g32.errors + g1.errors > 0) console.log(`  gateway errors: 32 conns ${JSON.stringify(g32.errorDetail)}, 1 conn ${JSON.stringify(g1.errorDetail)}`)
  if (sdk.errors > 0) console.log(`  SDK errors: ${JSON.stringify(sdk.errorSamples)}`)
  if (heap !== undefined) {
    console.log(`  gateway memory after the ${SETTINGS.connections}-connection run: RSS ${f0(mem.rssMB)} MB (${f0(readyRssMB)} MB when ready), ` +
      `V8 heap ${f0(heap.usedMB)} MB used of ${f0(heap.totalMB)} MB, external ${f0(heap.externalMB)} MB`)
  }
  if (logErrors.length > 0) console.log(`  gateway log lines at warn or above: ${logErrors.length}; first: ${logErrors[0]}`)
  console.log(`  SDK verifies WeChat Pay's signatures (a wrong public key is refused): ${sdk.verifies ? 'yes' : 'NO'}`)

  const sdkRatio = g32.rps / sdk.rps
  const gatewayUs = 1000 * cpu32.processes.gateway.total / g32.ok
  const mainUs = 1000 * cpu32.processes.gateway.main / g32.ok
  const cryptoRatio = gatewayUs / ceiling.cryptoUs
  const ceilingRatio = g32.rps / (CORES * 1e6 / ceiling.signUs)
  const checks = [
    [`gateway CPU per call = ${f0(gatewayUs)} µs = ${f2(cryptoRatio)}x sign+verify (${f0(ceiling.cryptoUs)} µs)`, `<= ${TARGETS.cryptoRatio}x`, cryptoRatio <= TARGETS.cryptoRatio],
    [`gateway main-thread CPU per call = ${f0(mainUs)} µs`, `<= ${TARGETS.mainUs} µs`, mainUs <= TARGETS.mainUs],
    [`gateway / SDK direct throughput = ${f2(sdkRatio)}x`, `>= ${TARGETS.sdkRatio}x`, sdkRatio >= TARGETS.sdkRatio],
    [`gateway errors = ${g32.errors + g1.errors}`, '= 0', g32.errors + g1.errors === 0],
    [`p99 latency, 1 connection = ${f2(g1.p99)} ms`, `<= ${TARGETS.p99SingleMs} ms`, g1.p99 <= TARGETS.p99SingleMs],
    [`gateway RSS after the 32-connection run = ${f0(mem.rssMB)} MB`, `<= ${TARGETS.rssMB} MB`, mem.rssMB <= TARGETS.rssMB],
    [`time to ready (spawn to /healthz 200) = ${f0(readyMs)} ms`, `< ${TARGETS.readyMs} ms`, readyMs < TARGETS.readyMs]
  ]
  console.log(`\ngateway throughput = ${(100 * ceilingRatio).toFixed(0)}% of the signing ceiling of its ${CORES} core(s) (${f0(CORES * 1e6 / ceiling.signUs)}/s)`)
  console.log('\ntargets:')
  for (const [what, target, ok] of checks) console.log(`  ${verdict(ok).padEnd(6)}  ${what.padEnd(72)} (target ${target})`)
  const missed = checks.filter(c => !c[2]).length
  console.log(missed === 0 ? '\nall targets met' : `\n${missed} target(s) MISSED`)
  console.log(`\n${JSON.stringify({ machine, cores: CORES, readyMs, readyRssMB, ceiling, gateway32: g32, gateway1: g1, rssMB: mem.rssMB, peakRssMB: mem.hwmMB, heap, sdk, sdkRatio, gatewayUs, mainUs, cryptoRatio, ceilingRatio, cpu32, cpu1 })}`)

  if (g32.ok === 0 || g1.ok === 0) throw new Error('the gateway answered no call with 204: the benchmark measured nothing')
}

function gatewayLines () {
  const file = join(workDir, 'gateway.log')
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : []
}

function countLogLines () {
  return gatewayLines().filter(l => l.includes('"msg":"operation"')).length
}

function gatewayLogProblems () {
  return gatewayLines().filter(l => /"level":"(warn|error|fatal)"/.test(l)).map(l => l.slice(0, 300))
}

const started = performance.now()
main().then(() => {
  console.log(`\nbench finished in ${((performance.now() - started) / 1000).toFixed(1)} s`)
  killChildren()
  process.exit(0)
}, err => {
  console.error(`\nbench FAILED: ${err.stack ?? err}`)
  killChildren()
  process.exit(1)
})
