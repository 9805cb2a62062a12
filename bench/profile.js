// Summarizes a V8 .cpuprofile (the main thread of a process started with --cpu-prof): self time by package and by
// function, and main-thread time by the library it was spent for. Usable alone: `node bench/profile.js <file>`.
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/** Where a frame's code lives: a package, Node's own JS, the gateway's dist/, or a V8 pseudo-frame. */
export function category (frame) {
  const url = frame.url ?? ''
  if (url === '') {
    if (frame.functionName.startsWith('(')) return frame.functionName // (idle) (program) (garbage collector) (root)
    return '(native/V8 builtins)'
  }
  const nm = url.lastIndexOf('/node_modules/')
  if (nm !== -1) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/')
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]
  }
  if (url.startsWith('node:')) return 'node: core JS'
  const dist = url.indexOf('/dist/')
  if (dist !== -1) return 'gateway dist/'
  return url
}

function shortUrl (url) {
  const nm = url.lastIndexOf('/node_modules/')
  if (nm !== -1) return url.slice(nm + '/node_modules/'.length)
  const dist = url.indexOf('/dist/')
  if (dist !== -1) return url.slice(dist + 1)
  return url
}

function frameKey (frame) {
  const name = frame.functionName || '(anonymous)'
  if (!frame.url) return name
  return `${name} ${shortUrl(frame.url)}:${frame.lineNumber + 1}`
}

const NATIVE_WRITES = new Set(['writeLatin1String', 'writeUtf8String', 'writeAsciiString', 'writeUcs2String', 'writeBuffer', 'writev', 'writeString'])
const LIBRARIES = [
  [/^(pino|sonic-boom|@pinojs\/redact|fast-redact|pino-std-serializers|thread-stream|on-exit-leak-free)$/, 'pino logging (serialize, redact, write)'],
  [/^(undici)$/, 'undici: HTTP client to WeChat Pay (incl. llhttp wasm)'],
  [/^(zod|@fastify\/type-provider-zod)$/, 'zod validation'],
  [/^(prom-client|bintrees|tdigest)$/, 'prom-client metrics'],
  [/^(@fastify\/rate-limit)$/, '@fastify/rate-limit'],
  [/^(@fastify\/under-pressure)$/, '@fastify/under-pressure'],
  [/^(fastify|find-my-way|secure-json-parse|fast-json-stringify|avvio|light-my-request|fast-querystring|toad-cache|@fastify\/.*)$/, 'fastify (+ router, JSON body parsing, hooks, reply)']
]

/**
 * What each main-thread sample was working for: the nearest library or gateway file above it, so that the Node core
 * and native work a library triggers (socket writes, parsers) counts for that library. Sign/verify job submission
 * and raw write syscalls get buckets of their own.
 */
function attribute (id, byId, parent) {
  const leaf = byId.get(id).callFrame
  if (leaf.url === '' && leaf.functionName.startsWith('(')) return leaf.functionName
  let cur = id
  let crypto = false
  while (cur !== undefined) {
    const frame = byId.get(cur).callFrame
    const url = frame.url ?? ''
    if (/^node:internal\/crypto\/(sig|keys)$/.test(url)) crypto = true
    const cat = url.startsWith('wasm://') ? 'undici' : url === '' || url.startsWith('node:') ? undefined : category(frame)
    if (cat !== undefined) {
      if (crypto) return 'RSA sign/verify: job submission to the libuv pool (node:crypto)'
      if (NATIVE_WRITES.has(leaf.functionName)) {
        return cat === 'sonic-boom' ? 'log line writes (fs.write syscalls)' : 'socket write syscalls (answer to caller, request upstream)'
      }
      for (const [pattern, label] of LIBRARIES) if (pattern.test(cat)) return label
      if (cat === 'gateway dist/') return `gateway code: ${shortUrl(url)}`
      return cat
    }
    cur = parent.get(cur)
  }
  if (NATIVE_WRITES.has(leaf.functionName)) return 'socket write syscalls (answer to caller, request upstream)'
  return 'node core alone: HTTP server parsing, sockets, streams, timers'
}

export function summarize (profile) {
  const { nodes, samples, timeDeltas, startTime, endTime } = profile
  const byId = new Map(nodes.map(n => [n.id, n]))
  const parent = new Map()
  for (const n of nodes) for (const c of n.children ?? []) parent.set(c, n.id)

  // Self time per node from the sample stream (timeDeltas[i + 1] is the time sample i stood for).
  const selfUs = new Map()
  for (let i = 0; i < samples.length; i++) {
    const dt = timeDeltas[i + 1] ?? 0
    selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + dt)
  }
  const totalUs = endTime - startTime

  const byCategory = new Map()
  const byFunction = new Map()
  for (const [id, us] of selfUs) {
    const frame = byId.get(id).callFrame
    const cat = category(frame)
    byCategory.set(cat, (byCategory.get(cat) ?? 0) + us)
    const key = frameKey(frame)
    byFunction.set(key, (byFunction.get(key) ?? 0) + us)
  }

  const byWork = new Map()
  for (const [id, us] of selfUs) {
    const bucket = attribute(id, byId, parent)
    byWork.set(bucket, (byWork.get(bucket) ?? 0) + us)
  }

  const idle = byCategory.get('(idle)') ?? 0
  const sortDesc = m => [...m].sort((a, b) => b[1] - a[1])
  return {
    totalMs: totalUs / 1000,
    busyMs: (totalUs - idle) / 1000,
    categories: sortDesc(byCategory).map(([name, us]) => ({ name, ms: us / 1000, pct: 100 * us / totalUs })),
    functions: sortDesc(byFunction).map(([name, us]) => ({ name, ms: us / 1000, pct: 100 * us / totalUs })),
    work: sortDesc(byWork).map(([name, us]) => ({ name, ms: us / 1000, pct: 100 * us / totalUs }))
  }
}

export function printSummary (summary, { top = 25, requests } = {}) {
  const { totalMs, busyMs } = summary
  const perReq = ms => requests ? `  ${(1000 * ms / requests).toFixed(1).padStart(6)} µs/req` : ''
  const line = ({ name, ms, pct }) => `  ${pct.toFixed(1).padStart(5)}%  ${ms.toFixed(0).padStart(7)} ms${perReq(ms)}  ${name}`
  console.log(`\nMain thread of the gateway: ${totalMs.toFixed(0)} ms profiled, ${busyMs.toFixed(0)} ms busy (${(100 * busyMs / totalMs).toFixed(1)}%)` +
    (requests ? `, ${requests} requests: ${(1000 * busyMs / requests).toFixed(1)} µs of main-thread time per request` : ''))
  console.log('\nMain-thread time by what it was for (each sample once; Node core and native work count for the library that called it):')
  const shown = summary.work.filter(w => w.pct >= 0.3)
  for (const w of shown) console.log(line(w))
  const rest = summary.work.filter(w => w.pct < 0.3)
  if (rest.length > 0) {
    const ms = rest.reduce((sum, w) => sum + w.ms, 0)
    console.log(line({ name: `${rest.length} more below 0.3% each (start-up, module loading, ...)`, ms, pct: 100 * ms / summary.totalMs }))
  }
  console.log('\nSelf time by package / category:')
  for (const c of summary.categories.slice(0, 12)) console.log(line(c))
  console.log(`\nTop ${top} functions by self time:`)
  for (const f of summary.functions.filter(f => f.name !== '(idle)').slice(0, top)) console.log(line(f))
  console.log('\nCaveat: the profiler samples wall-clock time. When both cores are busy, a thread woken from the pool (or the')
  console.log('caller woken by a socket write) preempts the main thread, and the sample lands on the call that woke it: the')
  console.log('job-submission and write-syscall rows include such waits; CPU time from /proc is the exact measure.')
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = process.argv[2]
  if (file === undefined) {
    console.error('usage: node bench/profile.js <file.cpuprofile> [requests]')
    process.exit(2)
  }
  printSummary(summarize(JSON.parse(readFileSync(file, 'utf8'))), { requests: Number(process.argv[3]) || undefined })
}
