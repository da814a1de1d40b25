/**
 * `GET /metrics`: every family is exported from the first scrape, the helpers move the series they
 * name, the text is valid Prometheus exposition format, and scrape-time values render. The metric
 * registry is global (and shared with other tests in the worker), so assertions compare deltas.
 */
import { describe, expect, it } from "@effect/vitest"
import { HttpApp, HttpRouter } from "@effect/platform"
import { Effect, Fiber, Option, TestClock } from "effect"
import { UpstreamError, UpstreamReason } from "../../src/market/MarketData.js"
import * as Metrics from "../../src/metrics/Metrics.js"
import { CONTENT_TYPE, type CacheCounts, MetricsExporter, type ScrapeInputs } from "../../src/metrics/MetricsExporter.js"

// ---------------------------------------------------------------------------------------------
// Parsing the exposition text.

const NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*"
const LABEL_VALUE = String.raw`"(?:[^"\\\n]|\\[\\"n])*"`
const LABEL = `[a-zA-Z_][a-zA-Z0-9_]*=${LABEL_VALUE}`
const VALUE = String.raw`(?:[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]Inf|NaN)`
const HELP_LINE = new RegExp(`^# HELP (${NAME}) \\S.*$`)
const TYPE_LINE = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`)
const SAMPLE_LINE = new RegExp(`^(${NAME})(\\{${LABEL}(?:,${LABEL})*\\})? (${VALUE})(?: -?\\d+)?$`)

interface Exposition {
  /** Family name to its `# TYPE`. */
  readonly types: ReadonlyMap<string, string>
  /** `name{labels sorted}` to value. */
  readonly samples: ReadonlyMap<string, number>
}

const seriesKey = (name: string, labels: Record<string, string> = {}) => {
  const sorted = Object.entries(labels).sort(([a], [b]) => a.localeCompare(b))
  return `${name}{${sorted.map(([k, v]) => `${k}="${v}"`).join(",")}}`
}

const parseLabels = (block: string | undefined): Record<string, string> =>
  Object.fromEntries(
    [...(block ?? "").matchAll(new RegExp(`([a-zA-Z_][a-zA-Z0-9_]*)=(${LABEL_VALUE})`, "g"))].map((m) => [
      m[1] ?? "",
      JSON.parse(m[2] ?? '""') as string
    ])
  )

const parse = (text: string): Exposition => {
  const types = new Map<string, string>()
  const samples = new Map<string, number>()
  for (const line of text.split("\n")) {
    const type = TYPE_LINE.exec(line)
    if (type) types.set(type[1] ?? "", type[2] ?? "")
    const sample = SAMPLE_LINE.exec(line)
    if (sample) {
      const raw = sample[3] ?? ""
      samples.set(seriesKey(sample[1] ?? "", parseLabels(sample[2])), raw === "+Inf" ? Infinity : raw === "-Inf" ? -Infinity : Number(raw))
    }
  }
  return { types, samples }
}

/** A series' value; a missing series fails the test rather than reading as 0. */
const valueOf = (exposition: Exposition, name: string, labels: Record<string, string> = {}): number => {
  const value = exposition.samples.get(seriesKey(name, labels))
  if (value === undefined) throw new Error(`series ${seriesKey(name, labels)} is not exported`)
  return value
}

// ---------------------------------------------------------------------------------------------
// Scraping.

const noCacheActivity: CacheCounts = { l1: { hits: 0, misses: 0, errors: 0 }, l2: { hits: 0, misses: 0, errors: 0, degraded: 0 } }
const quietInputs: ScrapeInputs = { cacheStats: Effect.succeed(noCacheActivity), summaryAgeSeconds: Effect.succeed(Option.none()) }

const scrape = (inputs: ScrapeInputs = quietInputs) =>
  Effect.flatMap(MetricsExporter, (exporter) => exporter.render(inputs)).pipe(Effect.map((text) => ({ text, ...parse(text) })))

/** How much each series moved while `body` ran, read through two scrapes. */
const deltasAround = <E, R>(body: Effect.Effect<unknown, E, R>) =>
  Effect.gen(function*() {
    const before = yield* scrape()
    yield* body
    const after = yield* scrape()
    return (name: string, labels: Record<string, string> = {}) => valueOf(after, name, labels) - valueOf(before, name, labels)
  })

const FAMILIES: ReadonlyArray<readonly [string, string]> = [
  ["dashcast_connections_active", "gauge"],
  ["dashcast_connections_opened_total", "counter"],
  ["dashcast_connections_closed_total", "counter"],
  ["dashcast_connection_duration_seconds", "histogram"],
  ["dashcast_broadcasts_total", "counter"],
  ["dashcast_broadcast_recipients", "histogram"],
  ["dashcast_broadcast_publish_duration_seconds", "histogram"],
  ["dashcast_ping_rtt_seconds", "histogram"],
  ["dashcast_updates_total", "counter"],
  ["dashcast_upstream_fetch_duration_seconds", "histogram"],
  ["dashcast_upstream_errors_total", "counter"],
  ["dashcast_rate_limited_total", "counter"],
  ["dashcast_cache_hits_total", "counter"],
  ["dashcast_cache_misses_total", "counter"],
  ["dashcast_cache_errors_total", "counter"],
  ["dashcast_cache_l2_degraded", "gauge"],
  ["dashcast_consecutive_failures", "gauge"],
  ["dashcast_backoffs_total", "counter"],
  ["dashcast_summary_age_seconds", "gauge"],
  ["dashcast_websocket_sent_bytes_total", "counter"],
  ["dashcast_alerts_fired_total", "counter"],
  ["dashcast_webhook_attempts_total", "counter"],
  ["dashcast_webhook_deliveries_total", "counter"],
  ["dashcast_sse_sent_bytes_total", "counter"],
  ["dashcast_sse_frames_skipped_total", "counter"]
]

const ENDPOINTS = ["coins_markets", "global", "market_chart", "fear_greed"] as const
const CONDITIONS = ["price_above", "price_below", "change_24h_above", "change_24h_below", "rsi_above", "rsi_below", "fear_greed_above", "fear_greed_below"]
const SOURCES = ["scheduled_update", "force_update", "request_update", "refresh"] as const

const withExporter = <A, E>(self: Effect.Effect<A, E, MetricsExporter>) => Effect.provide(self, MetricsExporter.Default)

describe("Metrics", () => {
  it.effect("exports every family, and every known label combination, before anything happens", () =>
    withExporter(Effect.gen(function*() {
      const { types, samples } = yield* scrape()
      expect(Object.fromEntries([...types].sort())).toEqual(Object.fromEntries([...FAMILIES].sort()))
      const series = (name: string, labels: Record<string, string>) => samples.has(seriesKey(name, labels))
      for (const transport of ["websocket", "sse"]) {
        for (const reason of ["normal", "going_away", "policy_violation", "message_too_big", "error", "other"]) {
          expect(series("dashcast_connections_closed_total", { transport, reason })).toBe(true)
        }
        for (const name of ["dashcast_connections_active", "dashcast_connections_opened_total", "dashcast_connection_duration_seconds_count"]) {
          expect(series(name, { transport })).toBe(true)
        }
      }
      for (const source of SOURCES) {
        for (const outcome of ["delivered", "no_subscribers"]) {
          expect(series("dashcast_broadcasts_total", { source, outcome })).toBe(true)
        }
      }
      for (const outcome of ["success", "partial", "failure"]) expect(series("dashcast_updates_total", { outcome })).toBe(true)
      for (const endpoint of ENDPOINTS) {
        expect(series("dashcast_upstream_fetch_duration_seconds_count", { endpoint })).toBe(true)
        for (const reason of ["timeout", "http_status", "rate_limited", "blocked", "too_large", "decode", "network"]) {
          expect(series("dashcast_upstream_errors_total", { endpoint, reason })).toBe(true)
        }
      }
      for (const kind of ["upstream_429", "client_message", "request_update", "force_update"]) {
        expect(series("dashcast_rate_limited_total", { kind })).toBe(true)
      }
      for (const tier of ["l1", "l2"]) {
        for (const name of ["dashcast_cache_hits_total", "dashcast_cache_misses_total", "dashcast_cache_errors_total"]) {
          expect(series(name, { tier })).toBe(true)
        }
      }
      for (const condition of CONDITIONS) expect(series("dashcast_alerts_fired_total", { condition })).toBe(true)
      for (const outcome of ["delivered", "http_status", "timeout", "network", "refused"]) {
        expect(series("dashcast_webhook_attempts_total", { outcome })).toBe(true)
      }
      for (const outcome of ["delivered", "gave_up", "cancelled"]) expect(series("dashcast_webhook_deliveries_total", { outcome })).toBe(true)
    })))

  it.effect("renders valid exposition text: HELP then TYPE per family, samples of that family, cumulative buckets", () =>
    withExporter(Effect.gen(function*() {
      // Values with every shape: fractions, NaN, labels, histogram spread over several buckets.
      Metrics.connectionClosed(1000, 0.25)
      Metrics.pingRtt(0.03)
      Metrics.pingRtt(7)
      const { text, samples } = yield* scrape()
      expect(text.endsWith("\n")).toBe(true)
      const lines = text.slice(0, -1).split("\n")
      let family: { name: string; type: string } | undefined
      let help: string | undefined
      for (const line of lines) {
        const h = HELP_LINE.exec(line)
        if (h) {
          help = h[1]
          continue
        }
        const t = TYPE_LINE.exec(line)
        if (t) {
          expect(t[1], `TYPE ${t[1]} right after its HELP`).toBe(help)
          family = { name: t[1] ?? "", type: t[2] ?? "" }
          continue
        }
        const s = SAMPLE_LINE.exec(line)
        expect(s, `valid line: ${JSON.stringify(line)}`).not.toBeNull()
        expect(family, `sample before any TYPE: ${line}`).toBeDefined()
        const allowed = family?.type === "histogram"
          ? ["_bucket", "_sum", "_count"].map((suffix) => `${family?.name}${suffix}`)
          : [family?.name]
        expect(allowed, `sample ${line} in family ${family?.name}`).toContain(s?.[1])
        expect(s?.[1]?.startsWith("dashcast_")).toBe(true)
      }

      // Every histogram series: buckets non-decreasing in `le`, the +Inf bucket equals _count.
      const histograms = FAMILIES.filter(([, type]) => type === "histogram").map(([name]) => name)
      for (const name of histograms) {
        const countKeys = [...samples.keys()].filter((key) => key.startsWith(`${name}_count{`))
        expect(countKeys.length).toBeGreaterThan(0)
        for (const countKey of countKeys) {
          const labels = parseLabels(countKey.slice(countKey.indexOf("{")))
          const buckets = [...samples]
            .filter(([key]) => key.startsWith(`${name}_bucket{`))
            .map(([key, value]) => ({ labels: parseLabels(key.slice(key.indexOf("{"))), value }))
            .filter((b) => Object.entries(labels).every(([k, v]) => b.labels[k] === v))
            .map((b) => ({ le: b.labels["le"] === "+Inf" ? Infinity : Number(b.labels["le"]), value: b.value }))
            .sort((a, b) => a.le - b.le)
          expect(buckets.length).toBeGreaterThan(1)
          expect(buckets.at(-1)?.le).toBe(Infinity)
          for (let i = 1; i < buckets.length; i++) {
            expect(buckets[i]?.value ?? -1).toBeGreaterThanOrEqual(buckets[i - 1]?.value ?? 0)
          }
          expect(buckets.at(-1)?.value).toBe(valueOf({ types: new Map(), samples }, `${name}_count`, labels))
          expect(samples.has(seriesKey(`${name}_sum`, labels))).toBe(true)
        }
      }
      expect(text).not.toContain("target_info")
      expect(text).not.toContain("otel_scope")
      expect(text).not.toContain("# UNIT")
    })))

  it("maps WebSocket close codes to reasons", () => {
    const cases: ReadonlyArray<readonly [number, Metrics.CloseReason]> = [
      [1000, "normal"],
      [1005, "normal"],
      [1001, "going_away"],
      [1008, "policy_violation"],
      [1009, "message_too_big"],
      [1006, "error"],
      [1011, "error"],
      [1002, "error"],
      [1012, "other"],
      [4000, "other"]
    ]
    for (const [code, reason] of cases) expect(Metrics.closeReason(code), `code ${code}`).toBe(reason)
  })

  it.effect("socket helpers move their counters, gauge and histograms synchronously", () =>
    withExporter(Effect.gen(function*() {
      const delta = yield* deltasAround(Effect.sync(() => {
        Metrics.connectionOpened()
        Metrics.connectionOpened()
        Metrics.connectionOpened()
        Metrics.connectionClosed(1000, 0.5)
        Metrics.connectionClosed(1006, 45)
        Metrics.connectionOpened("sse")
        Metrics.connectionOpened("sse")
        Metrics.transportClosed("sse", "going_away", 3)
        Metrics.sseBytesSent(100, 4)
        Metrics.sseBytesSent(100, 0)
        Metrics.sseFrameSkipped()
        Metrics.pingRtt(0.02)
        Metrics.bytesSent(120)
        Metrics.bytesSent(-1) // Bun: backpressure
        Metrics.bytesSent(0) // Bun: dropped
        Metrics.frameSent(-1, "pong é") // queued behind backpressure: 7 bytes
        Metrics.frameSent(0, "dropped")
        Metrics.frameSent(50, "update", 3) // published to 3 sockets: 18 bytes
        Metrics.frameSent(50, "update", 0)
        Metrics.messageRateLimited("client_message")
        Metrics.messageRateLimited("request_update")
        Metrics.messageRateLimited("request_update")
      }))
      const ws = { transport: "websocket" }
      const sse = { transport: "sse" }
      expect(delta("dashcast_connections_opened_total", ws)).toBe(3)
      expect(delta("dashcast_connections_active", ws)).toBe(1)
      expect(delta("dashcast_connections_closed_total", { ...ws, reason: "normal" })).toBe(1)
      expect(delta("dashcast_connections_closed_total", { ...ws, reason: "error" })).toBe(1)
      expect(delta("dashcast_connections_closed_total", { ...ws, reason: "going_away" })).toBe(0)
      expect(delta("dashcast_connection_duration_seconds_count", ws)).toBe(2)
      expect(delta("dashcast_connection_duration_seconds_sum", ws)).toBeCloseTo(45.5)
      expect(delta("dashcast_connection_duration_seconds_bucket", { ...ws, le: "1" })).toBe(1)
      expect(delta("dashcast_connection_duration_seconds_bucket", { ...ws, le: "10" })).toBe(1)
      expect(delta("dashcast_connection_duration_seconds_bucket", { ...ws, le: "60" })).toBe(2)
      expect(delta("dashcast_connections_opened_total", sse)).toBe(2)
      expect(delta("dashcast_connections_active", sse)).toBe(1)
      expect(delta("dashcast_connections_closed_total", { ...sse, reason: "going_away" })).toBe(1)
      expect(delta("dashcast_connections_closed_total", { ...sse, reason: "normal" })).toBe(0)
      expect(delta("dashcast_connection_duration_seconds_sum", sse)).toBeCloseTo(3)
      expect(delta("dashcast_sse_sent_bytes_total")).toBe(400)
      expect(delta("dashcast_sse_frames_skipped_total")).toBe(1)
      expect(delta("dashcast_ping_rtt_seconds_bucket", { le: "0.01" })).toBe(0)
      expect(delta("dashcast_ping_rtt_seconds_bucket", { le: "0.025" })).toBe(1)
      expect(delta("dashcast_websocket_sent_bytes_total")).toBe(120 + 7 + 18)
      expect(delta("dashcast_rate_limited_total", { kind: "client_message" })).toBe(1)
      expect(delta("dashcast_rate_limited_total", { kind: "request_update" })).toBe(2)
      expect(delta("dashcast_rate_limited_total", { kind: "upstream_429" })).toBe(0)
    })))

  it.effect("Effect helpers move their series, with the labels they are given", () =>
    withExporter(Effect.gen(function*() {
      const delta = yield* deltasAround(Effect.all([
        Metrics.broadcast("scheduled_update", 12, 0.0003),
        Metrics.broadcast("force_update", 0, 0.00002),
        Metrics.updateOutcome("success"),
        Metrics.updateOutcome("partial"),
        Metrics.updateOutcome("partial"),
        Metrics.updateOutcome("failure"),
        Metrics.upstreamFetch("market_chart", 0.3),
        Metrics.upstreamError("global", "Timeout"),
        Metrics.upstreamError("global", "RateLimited"),
        Metrics.rateLimit("force_update"),
        Metrics.backoffEntered,
        Metrics.consecutiveFailures(4)
      ]))
      expect(delta("dashcast_broadcasts_total", { source: "scheduled_update", outcome: "delivered" })).toBe(1)
      expect(delta("dashcast_broadcasts_total", { source: "scheduled_update", outcome: "no_subscribers" })).toBe(0)
      expect(delta("dashcast_broadcasts_total", { source: "force_update", outcome: "no_subscribers" })).toBe(1)
      expect(delta("dashcast_broadcast_recipients_count")).toBe(2)
      expect(delta("dashcast_broadcast_recipients_sum")).toBe(12)
      expect(delta("dashcast_broadcast_recipients_bucket", { le: "0" })).toBe(1)
      expect(delta("dashcast_broadcast_recipients_bucket", { le: "10" })).toBe(1)
      expect(delta("dashcast_broadcast_recipients_bucket", { le: "50" })).toBe(2)
      expect(delta("dashcast_broadcast_publish_duration_seconds_bucket", { le: "0.0001" })).toBe(1)
      expect(delta("dashcast_broadcast_publish_duration_seconds_bucket", { le: "0.0005" })).toBe(2)
      expect(delta("dashcast_updates_total", { outcome: "success" })).toBe(1)
      expect(delta("dashcast_updates_total", { outcome: "partial" })).toBe(2)
      expect(delta("dashcast_updates_total", { outcome: "failure" })).toBe(1)
      expect(delta("dashcast_upstream_fetch_duration_seconds_count", { endpoint: "market_chart" })).toBe(1)
      expect(delta("dashcast_upstream_fetch_duration_seconds_count", { endpoint: "global" })).toBe(0)
      expect(delta("dashcast_upstream_fetch_duration_seconds_bucket", { endpoint: "market_chart", le: "0.25" })).toBe(0)
      expect(delta("dashcast_upstream_fetch_duration_seconds_bucket", { endpoint: "market_chart", le: "0.5" })).toBe(1)
      expect(delta("dashcast_upstream_errors_total", { endpoint: "global", reason: "timeout" })).toBe(1)
      expect(delta("dashcast_upstream_errors_total", { endpoint: "global", reason: "rate_limited" })).toBe(1)
      expect(delta("dashcast_upstream_errors_total", { endpoint: "coins_markets", reason: "timeout" })).toBe(0)
      expect(delta("dashcast_rate_limited_total", { kind: "upstream_429" })).toBe(1)
      expect(delta("dashcast_rate_limited_total", { kind: "force_update" })).toBe(1)
      expect(delta("dashcast_backoffs_total")).toBe(1)
      // A gauge is set, not added to.
      const after = yield* scrape()
      expect(valueOf(after, "dashcast_consecutive_failures")).toBe(4)
      yield* Metrics.consecutiveFailures(0)
      expect(valueOf(yield* scrape(), "dashcast_consecutive_failures")).toBe(0)
    })))

  it.effect("trackUpstream times a call with the Clock and counts its failure by endpoint and reason", () =>
    withExporter(Effect.gen(function*() {
      const rateLimited = new UpstreamError({
        endpoint: "fear_greed",
        reason: UpstreamReason.RateLimited({ status: 429, retryAfter: Option.none() })
      })
      const delta = yield* deltasAround(Effect.gen(function*() {
        const slow = yield* Effect.fork(Metrics.trackUpstream("global")(Effect.as(Effect.sleep("2 seconds"), "ok")))
        yield* TestClock.adjust("2 seconds")
        expect(yield* Fiber.join(slow)).toBe("ok")
        const failed = yield* Effect.flip(Metrics.trackUpstream("fear_greed")(Effect.fail(rateLimited)))
        expect(failed).toBe(rateLimited)
      }))
      expect(delta("dashcast_upstream_fetch_duration_seconds_count", { endpoint: "global" })).toBe(1)
      expect(delta("dashcast_upstream_fetch_duration_seconds_sum", { endpoint: "global" })).toBeCloseTo(2)
      expect(delta("dashcast_upstream_fetch_duration_seconds_bucket", { endpoint: "global", le: "1" })).toBe(0)
      expect(delta("dashcast_upstream_fetch_duration_seconds_bucket", { endpoint: "global", le: "2.5" })).toBe(1)
      expect(delta("dashcast_upstream_errors_total", { endpoint: "global", reason: "timeout" })).toBe(0)
      expect(delta("dashcast_upstream_fetch_duration_seconds_count", { endpoint: "fear_greed" })).toBe(1)
      expect(delta("dashcast_upstream_errors_total", { endpoint: "fear_greed", reason: "rate_limited" })).toBe(1)
      expect(delta("dashcast_rate_limited_total", { kind: "upstream_429" })).toBe(1)
    })))

  it.effect("reads cache counters, L2 degradation and summary age at scrape time", () =>
    withExporter(Effect.gen(function*() {
      let stats: CacheCounts = { l1: { hits: 10, misses: 4, errors: 0 }, l2: { hits: 3, misses: 1, errors: 2, degraded: 0 } }
      let age: Option.Option<number> = Option.none()
      const inputs: ScrapeInputs = { cacheStats: Effect.sync(() => stats), summaryAgeSeconds: Effect.sync(() => age) }

      const first = yield* scrape(inputs)
      expect(valueOf(first, "dashcast_cache_l2_degraded")).toBe(0)
      expect(valueOf(first, "dashcast_summary_age_seconds")).toBeNaN()

      stats = { l1: { hits: 17, misses: 5, errors: 1 }, l2: { hits: 3, misses: 2, errors: 6, degraded: 1 } }
      age = Option.some(42.5)
      const second = yield* scrape(inputs)
      const grew = (name: string, tier: string) => valueOf(second, name, { tier }) - valueOf(first, name, { tier })
      expect(grew("dashcast_cache_hits_total", "l1")).toBe(7)
      expect(grew("dashcast_cache_misses_total", "l1")).toBe(1)
      expect(grew("dashcast_cache_errors_total", "l1")).toBe(1)
      expect(grew("dashcast_cache_hits_total", "l2")).toBe(0)
      expect(grew("dashcast_cache_misses_total", "l2")).toBe(1)
      expect(grew("dashcast_cache_errors_total", "l2")).toBe(4)
      expect(valueOf(second, "dashcast_cache_l2_degraded")).toBe(1)
      expect(valueOf(second, "dashcast_summary_age_seconds")).toBe(42.5)

      // A source whose totals restart: the counter never goes down, it grows by the new total.
      stats = { ...stats, l1: { hits: 2, misses: 5, errors: 1 } }
      const third = yield* scrape(inputs)
      expect(valueOf(third, "dashcast_cache_hits_total", { tier: "l1" }) - valueOf(second, "dashcast_cache_hits_total", { tier: "l1" })).toBe(2)
      // Scraping again without change moves nothing.
      const fourth = yield* scrape(inputs)
      expect(valueOf(fourth, "dashcast_cache_hits_total", { tier: "l1" })).toBe(valueOf(third, "dashcast_cache_hits_total", { tier: "l1" }))
    })))

  it.effect("mounts on an HttpRouter and answers GET /metrics as Prometheus text", () =>
    withExporter(Effect.gen(function*() {
      const exporter = yield* MetricsExporter
      const app = HttpRouter.empty.pipe(HttpRouter.get("/metrics", exporter.handler(quietInputs)))
      const response = yield* Effect.promise(() => HttpApp.toWebHandler(app)(new Request("http://dashcast.test/metrics")))
      expect(response.status).toBe(200)
      expect(response.headers.get("content-type")).toBe(CONTENT_TYPE)
      expect(response.headers.get("cache-control")).toBe("no-store")
      const body = yield* Effect.promise(() => response.text())
      expect(parse(body).types.get("dashcast_connections_active")).toBe("gauge")
    })))
})
