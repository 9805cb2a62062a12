import { createServer } from 'node:http'
import { gunzipSync } from 'node:zlib'
import t from 'tap'
import { auth, testGateway, testSandbox } from './helpers.js'

/** W3C trace context on every request, and OpenTelemetry export when an OTLP endpoint is configured. */

const CALLER_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const CALLER_SPAN = '00f067aa0ba902b7'
const call = (traceparent?: string) => ({
  method: 'POST' as const,
  url: '/contracts/1/fail-notify',
  headers: { 'content-type': 'application/json', ...auth(), ...(traceparent !== undefined && { traceparent }) },
  payload: {}
})

t.test('a caller\'s trace is continued: logged on every line, returned, never sent to WeChat Pay', async t => {
  const { app, logs, sandbox } = await testGateway(t)
  const res = await app.inject(call(`00-${CALLER_TRACE}-${CALLER_SPAN}-01`))
  t.equal(res.statusCode, 204)
  t.match(res.headers.traceparent, new RegExp(`^00-${CALLER_TRACE}-[0-9a-f]{16}-01$`), 'the same trace, the gateway\'s own span')
  t.not((res.headers.traceparent as string).split('-')[2], CALLER_SPAN)
  const lines = logs.lines.filter(l => l.reqId === res.headers['x-request-id'])
  t.ok(lines.length > 0)
  t.ok(lines.every(l => l.traceId === CALLER_TRACE), 'every line of the request carries the trace id')
  t.equal(sandbox.app.sandbox.requests.at(-1)?.headers.traceparent, undefined, 'not passed on to WeChat Pay')

  const fresh = await app.inject(call())
  const freshTrace = /^00-([0-9a-f]{32})-[0-9a-f]{16}-01$/.exec(fresh.headers.traceparent as string)?.[1]
  t.ok(freshTrace, 'without one, a trace is started')
  t.equal(logs.find('operation').at(-1)?.traceId, freshTrace)
  for (const bad of ['00-00000000000000000000000000000000-00f067aa0ba902b7-01', '01-xyz', `00-${CALLER_TRACE}-0000000000000000-01`]) {
    const res = await app.inject(call(bad))
    t.notMatch(res.headers.traceparent, new RegExp(CALLER_TRACE), `${bad}: not continued`)
  }
})

t.test('with an OTLP endpoint, spans of the gateway and of its upstream calls are exported', async t => {
  const spans: Array<{ traceId: string, spanId: string, parentSpanId?: string, name: string, kind: number }> = []
  const receiver = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const raw = Buffer.concat(chunks)
      const body = JSON.parse((req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw).toString()) as
        { resourceSpans: Array<{ scopeSpans: Array<{ spans: typeof spans }> }> }
      for (const r of body.resourceSpans) for (const s of r.scopeSpans) spans.push(...s.spans)
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
    })
  })
  await new Promise<void>(resolve => receiver.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { receiver.close() })
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = `http://127.0.0.1:${(receiver.address() as { port: number }).port}`
  const { startTracing } = await import('../src/telemetry.js')
  const tracing = startTracing()
  t.teardown(() => tracing.shutdown())
  const sandbox = await testSandbox(t)
  const { app } = await testGateway(t, { sandbox, build: { tracing } })

  const res = await app.inject(call(`00-${CALLER_TRACE}-${CALLER_SPAN}-01`))
  t.equal(res.statusCode, 204)
  await tracing.forceFlush()
  const server = spans.find(s => s.name === 'POST /contracts/:contract_id/fail-notify')
  t.match(server, { traceId: CALLER_TRACE, parentSpanId: CALLER_SPAN, kind: 2 }, 'the gateway\'s span continues the caller\'s trace')
  t.equal((res.headers.traceparent as string).split('-')[2], server?.spanId, 'the answer names the exported span')
  const client = spans.find(s => s.kind === 3)
  t.match(client, { traceId: CALLER_TRACE, name: 'POST' }, 'the call to WeChat Pay has its own span in the same trace')
  t.equal(sandbox.app.sandbox.requests.at(-1)?.headers.traceparent, undefined, 'and still no traceparent upstream')
})
