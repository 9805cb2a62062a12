import { readFileSync } from 'node:fs'
import { connect } from 'node:net'
import type { InjectOptions } from 'fastify'
import t, { type Test } from 'tap'
import { GATEWAY_ERRORS, OUTCOMES } from '../src/errors.js'
import { signatureHeaders, signingKey } from '../src/sandbox/protocol.js'
import { auth, freePort, hostileProxy, testGateway, testRedis, testSandbox, TOKENS, type GatewayOptions } from './helpers.js'

/**
 * The README's error table is the contract callers read. This test reads it, checks it against the catalogue in
 * src/errors.ts, and produces every documented (code, outcome) over HTTP: nothing in the table is fiction, and
 * nothing the code can answer is missing from it.
 */

interface Row { code: string, status: number, outcomes: string[] }

function readmeRows (): Row[] {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  const section = readme.slice(readme.indexOf('### Answers and errors'))
  const table = section.slice(section.indexOf('| code | status |'), section.indexOf('\n\n', section.indexOf('| code | status |')))
  return table.split('\n').slice(2).map(line => {
    const [, code = '', status = '', outcomes = ''] = line.split('|').map(c => c.trim())
    return { code: code.replaceAll('`', ''), status: Number(status), outcomes: outcomes.split('/').map(o => o.trim().replaceAll('`', '')) }
  })
}

t.test('the README lists exactly the catalogue: codes, statuses, outcomes', async t => {
  const rows = readmeRows()
  t.same(rows.map(r => r.code), Object.keys(GATEWAY_ERRORS), 'the same codes, in the same order')
  for (const row of rows) {
    const entry = GATEWAY_ERRORS[row.code as keyof typeof GATEWAY_ERRORS]
    t.equal(row.status, entry.status, `${row.code}: status`)
    t.same(row.outcomes, entry.outcomes, `${row.code}: outcomes`)
    for (const outcome of row.outcomes) t.ok((OUTCOMES as readonly string[]).includes(outcome), `${row.code}: ${outcome} is one of the documented outcomes`)
  }
})

const json = { 'content-type': 'application/json' }
const collect = { service_id: '2002000000000558128851361561536', sub_mchid: '1900000109' }
const pay = (id: string, extra: Record<string, string> = {}) =>
  ({ method: 'POST' as const, url: `/payscore/partner/serviceorder/${id}/pay`, headers: { ...json, ...auth(), ...extra }, payload: collect })

interface Answer { status: number, body: { code: string, detail: { outcome: string } } }

/** A raw request over a real connection (Node's own refusals never reach inject). */
async function rawAnswer (t: Test, opts: GatewayOptions, data: string): Promise<Answer> {
  const gw = await testGateway(t, opts)
  await gw.app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = gw.app.server.address() as { port: number }
  const text = await new Promise<string>(resolve => {
    const socket = connect(port, '127.0.0.1', () => socket.write(data))
    let out = ''
    socket.on('data', chunk => { out += chunk.toString() })
    socket.on('close', () => resolve(out))
  })
  return { status: Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1]), body: JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) }
}

t.test('every documented code and outcome can be produced', async t => {
  const sandbox = await testSandbox(t, { slowMs: 400 })
  const gw = (opts: GatewayOptions = {}) => testGateway(t, { sandbox, ...opts })
  const { app } = await gw()
  const inject = async (request: InjectOptions, on = app): Promise<Answer> => {
    const res = await on.inject(request)
    return { status: res.statusCode, body: res.body === '' ? {} as Answer['body'] : res.json() }
  }
  const dead = `http://127.0.0.1:${await freePort()}`

  const scenarios: Record<string, Partial<Record<string, () => Promise<Answer>>>> = {
    VALIDATION_ERROR: { not_executed: () => inject({ ...pay('1'), payload: { sub_mchid: 'x' } }) },
    INVALID_JSON: { not_executed: () => inject({ ...pay('1'), payload: '{"sub_mchid":' }) },
    BAD_REQUEST: { not_executed: () => rawAnswer(t, { sandbox }, 'NOT HTTP\r\n\r\n') },
    UNAUTHORIZED: { not_executed: () => inject({ ...pay('1'), headers: json }) },
    FORBIDDEN: { not_executed: () => inject({ method: 'POST', url: '/contracts/1/fail-notify', headers: { ...json, ...auth(TOKENS.orders) }, payload: {} }) },
    ROUTE_NOT_FOUND: { not_executed: () => inject({ method: 'GET', url: '/nowhere' }) },
    NOTIFICATION_NOT_FOUND: { not_executed: () => inject({ method: 'GET', url: '/notifications/partner/EV-none', headers: auth() }) },
    METHOD_NOT_ALLOWED: { not_executed: () => inject({ method: 'PUT', url: '/contracts/1/fail-notify' }) },
    REQUEST_TIMEOUT: {
      not_executed: () => rawAnswer(t, { sandbox, config: { http: { requestTimeoutMs: 300, keepAliveTimeoutMs: 5000, maxConnections: 100, maxConnectionsPerAddress: 0 } } },
        `POST /contracts/1/fail-notify HTTP/1.1\r\nHost: gw\r\nAuthorization: ${auth().authorization}\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{`)
    },
    IDEMPOTENCY_IN_PROGRESS: {
      not_executed: async () => {
        const answers = await Promise.all(Array.from({ length: 34 }, () => inject(pay('SANDBOX_SLOW', { 'idempotency-key': 'busy-1' }))))
        return answers.find(a => a.status === 409) ?? answers[0] as Answer
      }
    },
    IDEMPOTENCY_OUTCOME_UNKNOWN: {
      unknown: async () => {
        const { app: short } = await gw({ build: { idempotency: { callMs: 50 } } })
        const first = short.inject(pay('SANDBOX_SLOW', { 'idempotency-key': 'lost-1' }))
        await new Promise(resolve => setTimeout(resolve, 150))
        const second = await inject(pay('SANDBOX_SLOW', { 'idempotency-key': 'lost-1' }), short)
        await first
        return second
      }
    },
    PAYLOAD_TOO_LARGE: { not_executed: () => inject({ ...pay('1'), payload: JSON.stringify({ sub_mchid: 'x'.repeat(20_000) }) }) },
    UNSUPPORTED_MEDIA_TYPE: { not_executed: () => inject({ ...pay('1'), headers: { ...auth(), 'content-type': 'text/plain' }, payload: 'x' }) },
    IDEMPOTENCY_KEY_REUSED: {
      not_executed: async () => {
        await inject(pay('1', { 'idempotency-key': 'reused-1' }))
        return await inject(pay('2', { 'idempotency-key': 'reused-1' }))
      }
    },
    RATE_LIMITED: {
      not_executed: async () => {
        const { app: limited } = await gw({ config: { rateLimit: { max: 1, windowMs: 60_000 } } })
        await limited.inject(pay('1'))
        return await inject(pay('1'), limited)
      }
    },
    HEADERS_TOO_LARGE: { not_executed: () => rawAnswer(t, { sandbox }, `GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`) },
    INTERNAL_ERROR: {
      not_executed: async () => {
        const { app: faulty } = await gw()
        faulty.addHook('preHandler', async request => { if (request.headers['x-fault'] === 'before') throw new Error('a bug before the call') })
        return await inject(pay('bug-before', { 'x-fault': 'before' }), faulty)
      },
      unknown: async () => {
        const { app: faulty } = await gw()
        let thrown = false
        faulty.addHook('onSend', async (request, _reply, payload) => {
          if (request.headers['x-fault'] === 'after' && !thrown) { thrown = true; throw new Error('a bug after the call') }
          return payload
        })
        return await inject(pay('bug-after', { 'x-fault': 'after' }), faulty)
      }
    },
    UPSTREAM_UNAVAILABLE: {
      not_executed: async () => inject(pay('1'), (await gw({ wechat: { baseUrl: dead } })).app),
      unknown: () => inject(pay('SANDBOX_RESET'))
    },
    UPSTREAM_SIGNATURE_INVALID: { unknown: () => inject(pay('SANDBOX_BAD_SIGNATURE')) },
    UPSTREAM_UNVERIFIED_ERROR: { unknown: () => inject(pay('SANDBOX_UNSIGNED_ERROR')) },
    UPSTREAM_BAD_RESPONSE: { unknown: () => inject(pay('SANDBOX_NOT_JSON')) },
    UPSTREAM_RETRY_LATER: { not_executed: () => inject(pay('SANDBOX_ACCEPTED')) },
    OVERLOADED: {
      not_executed: async () => {
        const { app: pressed } = await gw({ config: { maxEventLoopDelayMs: 10 } })
        await pressed.ready()
        const until = Date.now() + 1500
        while (Date.now() < until) { await new Promise(resolve => setImmediate(resolve)); const stop = Date.now() + 50; while (Date.now() < stop); }
        return await inject(pay('1'), pressed)
      }
    },
    MERCHANT_UNAVAILABLE: {
      not_executed: async () => {
        const certificates = await testSandbox(t, { keyMode: 'certificate' })
        const { app: expired } = await testGateway(t, { sandbox: certificates })
        await expired.ready()
        expired.merchants.byName('partner')?.keys.setCertificates(new Map()) // its certificates have all expired
        return await inject(pay('1'), expired)
      }
    },
    SHUTTING_DOWN: {
      not_executed: async () => {
        const { app: stopping } = await gw()
        await stopping.ready()
        stopping.lifecycle.stopTaking()
        return await inject(pay('1'), stopping)
      }
    },
    IDEMPOTENCY_STORE_UNAVAILABLE: {
      not_executed: async () => {
        const redis = await testRedis(t)
        const { app: shared } = await gw({ config: { redisUrl: redis.url } })
        await redis.stop()
        return await inject(pay('1', { 'idempotency-key': 'down-1' }), shared)
      }
    },
    NOTIFICATIONS_STORE_UNAVAILABLE: {
      not_executed: async () => {
        const redis = await testRedis(t)
        const { app: shared } = await gw({ config: { redisUrl: redis.url } })
        await redis.stop()
        return await inject({ method: 'GET', url: '/notifications', headers: auth() }, shared)
      }
    },
    IDEMPOTENCY_STORE_FULL: {
      not_executed: async () => {
        const { app: small } = await gw({ config: { idempotencyMemory: { maxKeys: 1, maxKeysPerOwner: 1 } } })
        await small.inject(pay('1', { 'idempotency-key': 'full-1' }))
        return await inject(pay('1', { 'idempotency-key': 'full-2' }), small)
      }
    },
    UPSTREAM_TIMEOUT: { unknown: async () => inject(pay('SANDBOX_SLOW'), (await gw({ wechat: { timeoutMs: 150 } })).app) }
  }

  for (const row of readmeRows()) {
    for (const outcome of row.outcomes) {
      const produce = scenarios[row.code]?.[outcome]
      if (produce === undefined) {
        t.fail(`${row.code} / ${outcome}: documented, but no scenario produces it`)
        continue
      }
      const answer = await produce()
      t.match(answer, { status: row.status, body: { code: row.code, detail: { outcome } } }, `${row.code} / ${outcome}`)
    }
  }
})

t.test('the README\'s table of WeChat Pay\'s verified answers: each row, produced by a signed answer', async t => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  const start = readme.indexOf('| WeChat Pay\'s verified answer | status | code | `detail.outcome` |')
  const rows = readme.slice(start, readme.indexOf('\n\n', start)).split('\n').slice(2).map(line => line.split('|').map(c => c.trim()))
  t.equal(rows.length, 5)
  const sandbox = await testSandbox(t)
  const merchant = sandbox.app.sandbox.merchants.all.find(m => m.ids.type === 'partner')
  if (merchant === undefined) throw new Error('the sandbox has no service provider')
  const proxy = await hostileProxy(t, sandbox.url, body => signatureHeaders(signingKey(merchant, 'public-key', undefined), body))
  const { app } = await testGateway(t, { sandbox, wechat: { baseUrl: proxy.url } })
  for (const [, what = '', status = '', code = '', outcome = ''] of rows) {
    if (what === '2xx') continue // every passing test
    // The row's first status and code: `4xx, e.g. `PARAM_ERROR`` is a 400 PARAM_ERROR, `5xx (`SYSTEM_ERROR`...)` a 500.
    const upstream = Number(/^`?(\d)(\d\d|xx)/.exec(what)?.slice(1).join('').replace('xx', '00'))
    const wechatCode = /`([A-Z_]+)`/.exec(what.replace(/^`\d+ /, '`'))?.[1] ?? ''
    proxy.state.mode = 'answer'
    proxy.state.answer = { status: upstream, code: wechatCode }
    const res = await app.inject({ method: 'POST', url: '/payscore/partner/serviceorder/row/pay', headers: { ...json, ...auth() }, payload: collect })
    const expected = status.startsWith('WeChat') ? upstream : Number(status.replaceAll('`', ''))
    t.equal(res.statusCode, expected, `${what}: status`)
    t.match(res.json(), { code: code.startsWith('WeChat') ? wechatCode : code.replaceAll('`', ''), detail: { outcome: outcome.replaceAll('`', ''), upstream_status: upstream } }, what)
  }
})
