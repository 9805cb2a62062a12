import { FastifyOtelInstrumentation } from '@fastify/otel'
import { context, propagation, trace, type TextMapPropagator } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { UndiciInstrumentation } from '@opentelemetry/instrumentation-undici'
import { resourceFromAttributes } from '@opentelemetry/resources'
import { BatchSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace'
import type { FastifyPluginCallback, FastifyRequest } from 'fastify'
import { NAME, VERSION } from './version.js'

/**
 * OpenTelemetry tracing, with the official instrumentation: @fastify/otel for the gateway's own spans, undici's
 * for the calls it makes. Loaded (by a dynamic import) only when an OTLP endpoint is configured: without one, none
 * of these modules is even read. The exporter takes its endpoint and headers from the standard OTEL_EXPORTER_OTLP_*
 * variables.
 */
export interface Tracing {
  /** Registered first on the gateway, before any other plugin, hook or route. */
  plugin: FastifyPluginCallback
  /** The gateway's span of a request, for the `traceparent` of its answer. */
  spanId: (request: FastifyRequest) => string | undefined
  forceFlush: () => Promise<void>
  shutdown: () => Promise<void>
}

export function startTracing (): Tracing {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  // Trace context is read from callers but never written on outgoing calls: WeChat Pay is not known to accept an
  // unknown header, and the relay to internal services sets its own.
  const w3c = new W3CTraceContextPropagator()
  const extractOnly: TextMapPropagator = {
    inject: () => {},
    extract: (ctx, carrier, getter) => w3c.extract(ctx, carrier, getter),
    fields: () => w3c.fields()
  }
  propagation.setGlobalPropagator(extractOnly)
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ 'service.name': NAME, 'service.version': VERSION }),
    spanProcessors: [new BatchSpanProcessor({ exporter: new OTLPTraceExporter() })]
  })
  trace.setGlobalTracerProvider(provider)
  const undici = new UndiciInstrumentation()
  const fastify = new FastifyOtelInstrumentation({
    ignorePaths: ({ url }) => url === '/healthz' || url === '/readyz' || url === '/metrics',
    instrumentHooks: false,
    requestHook: (span, request) => { span.updateName(`${request.method} ${request.routeOptions.url ?? 'unmatched'}`) }
  })
  return {
    plugin: fastify.plugin(),
    spanId: request => request.opentelemetry?.()?.span?.spanContext().spanId,
    forceFlush: () => provider.forceFlush(),
    async shutdown () {
      undici.disable()
      fastify.disable()
      await provider.shutdown()
    }
  }
}
