/**
 * Renders the global Effect metric registry as Prometheus text for `GET /metrics`, through
 * `@effect/opentelemetry`'s metric producer and the OpenTelemetry Prometheus serializer (no server
 * of its own). Values that only exist at scrape time (cache counters, summary age) are read then.
 */
import * as OtelMetrics from "@effect/opentelemetry/Metrics"
import * as OtelResource from "@effect/opentelemetry/Resource"
import { HttpServerResponse } from "@effect/platform"
import { PrometheusExporter, PrometheusSerializer } from "@opentelemetry/exporter-prometheus"
import { Effect, Option } from "effect"
import { VERSION } from "../Version.js"
import {
  cacheErrors,
  cacheHits,
  cacheL2Degraded,
  cacheMisses,
  type CacheTier,
  preregister,
  summaryAge,
  tierLabels
} from "./Metrics.js"

/** Every dashcast metric name starts with it; nothing else in the registry is exported. */
export const METRIC_PREFIX = "dashcast_"

export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

/** Counters of one cache tier since start (structurally what `CacheManager.stats` returns). */
export interface CacheTierCounts {
  readonly hits: number
  readonly misses: number
  readonly errors: number
}

export interface CacheCounts {
  readonly l1: CacheTierCounts
  readonly l2: CacheTierCounts & {
    /** 1 while L2 is failing and the cache runs on L1 alone, else 0. */
    readonly degraded: number
  }
}

/** What is read at each scrape. */
export interface ScrapeInputs {
  readonly cacheStats: Effect.Effect<CacheCounts>
  /** Age of the current summary in seconds; none before the first summary. */
  readonly summaryAgeSeconds: Effect.Effect<Option.Option<number>>
}

const CACHE_COUNTERS = [["hits", cacheHits], ["misses", cacheMisses], ["errors", cacheErrors]] as const

export class MetricsExporter extends Effect.Service<MetricsExporter>()("dashcast/MetricsExporter", {
  scoped: Effect.gen(function*() {
    // Arguments: no prefix, no timestamps, no resource labels, no `target_info`, no `otel_scope_*`
    // labels: the series carry only their own labels, as a hand-written exporter would.
    const serializer = new PrometheusSerializer("", false, undefined, true, true)
    const reader = new PrometheusExporter({ preventServerStart: true })
    yield* OtelMetrics.registerProducer(yield* OtelMetrics.makeProducer, () => reader)
    preregister()

    /**
     * The cache keeps its own running totals; the Prometheus counters follow them by the amount each
     * grew since the last scrape. A total that went down (a restarted store) grows by its new value,
     * as Prometheus treats a counter reset.
     */
    const lastSeen = new Map<string, number>()
    const follow = (tier: CacheTier, counts: CacheTierCounts) => {
      for (const [name, counter] of CACHE_COUNTERS) {
        const key = `${tier}.${name}`
        const previous = lastSeen.get(key) ?? 0
        const now = counts[name]
        counter.unsafeUpdate(now >= previous ? now - previous : now, tierLabels(tier))
        lastSeen.set(key, now)
      }
    }

    const readScrapeInputs = (inputs: ScrapeInputs) =>
      Effect.gen(function*() {
        const stats = yield* inputs.cacheStats
        const age = yield* inputs.summaryAgeSeconds
        follow("l1", stats.l1)
        follow("l2", stats.l2)
        cacheL2Degraded.unsafeUpdate(stats.l2.degraded, [])
        // NaN, not 0: "no summary yet" must not read as "perfectly fresh".
        summaryAge.unsafeUpdate(Option.getOrElse(age, () => Number.NaN), [])
      })

    const render = Effect.fn("MetricsExporter.render")(function*(inputs: ScrapeInputs) {
      yield* readScrapeInputs(inputs)
      // The producer reads the registry synchronously and resolves at once; it does not reject.
      const { resourceMetrics } = yield* Effect.promise(() => reader.collect())
      // Effect's runtime also counts fibers in the same registry (`effect_fiber_*`, on by default,
      // undocumented, 34 buckets): only our own families are exported.
      const ours = {
        ...resourceMetrics,
        scopeMetrics: resourceMetrics.scopeMetrics.map((scope) => ({
          ...scope,
          metrics: scope.metrics.filter((metric) => metric.descriptor.name.startsWith(METRIC_PREFIX))
        }))
      }
      // The bridge gives every instrument unit "1", which the serializer prints as an OpenMetrics
      // `# UNIT` comment; units are in the names, so the misleading comments go.
      return serializer.serialize(ours).replace(/^# UNIT .*\n/gm, "")
    })

    /** The `GET /metrics` response; mount with `HttpRouter.get("/metrics", exporter.handler(inputs))`. */
    const handler = (inputs: ScrapeInputs): Effect.Effect<HttpServerResponse.HttpServerResponse> =>
      Effect.map(render(inputs), (body) =>
        HttpServerResponse.text(body, { contentType: CONTENT_TYPE, headers: { "cache-control": "no-store" } }))

    return { render, handler } as const
  }),
  dependencies: [OtelResource.layer({ serviceName: "dashcast", serviceVersion: VERSION })]
}) {}
