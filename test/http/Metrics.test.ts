/**
 * `GET /metrics` on the real server: every family is there from the start, and each moves when its
 * event happens on real sockets, real HTTP and (for upstream families) the real client against the
 * fake upstream. Metrics are process-wide, so tests compare scrapes before and after.
 */
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Layer, Logger, LogLevel, Option, TestClock } from "effect"
import { CacheManager } from "../../src/cache/CacheManager.js"
import { AppConfig } from "../../src/Config.js"
import { MarketData } from "../../src/market/MarketData.js"
import { UpstreamMarketDataFetchLive } from "../../src/market/Upstream.js"
import { MetricsExporter } from "../../src/metrics/MetricsExporter.js"
import { Fault, scopedFakeUpstream } from "../support/FakeUpstream.js"
import * as TestServer from "../support/TestServer.js"
import { makeSummary, makeUpstreamError, summaryView } from "../support/TestServer.js"
import * as WsClient from "../support/WsClient.js"

const FAMILIES = [
  "dashcast_connections_active",
  "dashcast_connections_opened_total",
  "dashcast_connections_closed_total",
  "dashcast_connection_duration_seconds",
  "dashcast_broadcasts_total",
  "dashcast_broadcast_recipients",
  "dashcast_broadcast_publish_duration_seconds",
  "dashcast_ping_rtt_seconds",
  "dashcast_updates_total",
  "dashcast_upstream_fetch_duration_seconds",
  "dashcast_upstream_errors_total",
  "dashcast_rate_limited_total",
  "dashcast_cache_hits_total",
  "dashcast_cache_misses_total",
  "dashcast_cache_errors_total",
  "dashcast_cache_l2_degraded",
  "dashcast_consecutive_failures",
  "dashcast_backoffs_total",
  "dashcast_summary_age_seconds",
  "dashcast_websocket_sent_bytes_total",
  "dashcast_sse_sent_bytes_total",
  "dashcast_sse_frames_skipped_total"
]

/** Sample values by series, e.g. `dashcast_updates_total{outcome="success"}`. */
const parse = (text: string): ReadonlyMap<string, number> =>
  new Map(
    text.split("\n").filter((line) => line.length > 0 && !line.startsWith("#")).map((line) => {
      const space = line.lastIndexOf(" ")
      return [line.slice(0, space), Number(line.slice(space + 1))] as const
    })
  )

const value = (scrape: ReadonlyMap<string, number>, series: string): number => {
  const v = scrape.get(series)
  if (v === undefined) throw new Error(`no series ${series} in /metrics`)
  return v
}

describe("GET /metrics", () => {
  it.scopedLive("lists every family and moves each with its event on the real server", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({
        config: { ADMIN_TOKEN: "metrics-token", MAX_CONSECUTIVE_FAILURES: "0", INITIAL_FETCH_RETRIES: "1", MIN_FETCH_GAP: "0 millis" }
      })
      const scrape = Effect.flatMap(server.fetch("/metrics"), (r) => {
        expect(r.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/)
        return Effect.promise(() => r.text())
      })
      const first = yield* scrape
      for (const family of FAMILIES) expect(first).toContain(`# TYPE ${family} `)
      const before = parse(first)
      expect(Number.isNaN(value(before, "dashcast_summary_age_seconds"))).toBe(true)

      // The first scheduled attempt fails: a failure, one consecutive failure, backoff entered.
      yield* server.market.fail(makeUpstreamError(503))
      yield* server.market.awaitCalls(1)
      const refresh = () =>
        server.fetch("/api/dashboard/refresh", { method: "POST", headers: { authorization: "Bearer metrics-token" } })
      // A force update publishes to one connected client.
      const client = yield* WsClient.connect(server.wsUrl)
      yield* client.next()
      yield* server.market.succeed(summaryView(makeSummary()))
      expect((yield* refresh()).status).toBe(200)
      yield* client.next(WsClient.isType("dashboard_update"))
      // A client that sends garbage until it is closed with 1008.
      const rude = yield* WsClient.connect(server.wsUrl)
      yield* rude.next()
      for (let i = 0; i < 6; i++) yield* rude.send("{not json")
      expect((yield* rude.closed()).code).toBe(1008)
      // request_update beyond its allowance.
      for (let i = 0; i < 4; i++) yield* client.send(JSON.stringify({ type: "request_update" }))
      yield* client.sync()
      yield* client.close(1000)

      const after = parse(yield* scrape)
      const delta = (series: string) => value(after, series) - value(before, series)
      expect(delta("dashcast_updates_total{outcome=\"failure\"}")).toBe(1)
      expect(delta("dashcast_updates_total{outcome=\"success\"}")).toBe(1)
      // The forced success ended the run of failures (the schedule counts every round).
      expect(value(after, "dashcast_consecutive_failures")).toBe(0)
      expect(delta("dashcast_backoffs_total")).toBe(1)
      expect(delta("dashcast_broadcasts_total{source=\"force_update\",outcome=\"delivered\"}")).toBe(1)
      expect(delta("dashcast_broadcast_recipients_count")).toBe(1)
      expect(delta("dashcast_broadcast_recipients_sum")).toBe(1)
      expect(delta("dashcast_broadcast_publish_duration_seconds_count")).toBe(1)
      expect(delta("dashcast_connections_opened_total{transport=\"websocket\"}")).toBe(2)
      expect(delta("dashcast_connections_closed_total{transport=\"websocket\",reason=\"policy_violation\"}")).toBe(1)
      expect(delta("dashcast_rate_limited_total{kind=\"request_update\"}")).toBeGreaterThanOrEqual(1)
      expect(delta("dashcast_websocket_sent_bytes_total")).toBeGreaterThan(1000)
      expect(value(after, "dashcast_summary_age_seconds")).toBeGreaterThanOrEqual(0)
      expect(delta("dashcast_cache_hits_total{tier=\"l1\"}") + delta("dashcast_cache_misses_total{tier=\"l1\"}")).toBeGreaterThanOrEqual(0)

      // A normal close and the connection duration are recorded once the server has seen it.
      const closed = yield* scrape.pipe(
        Effect.map(parse),
        Effect.repeat({ until: (s) => value(s, "dashcast_connections_closed_total{transport=\"websocket\",reason=\"normal\"}") > value(before, "dashcast_connections_closed_total{transport=\"websocket\",reason=\"normal\"}"), times: 100 })
      )
      expect(value(closed, "dashcast_connection_duration_seconds_count{transport=\"websocket\"}") - value(before, "dashcast_connection_duration_seconds_count{transport=\"websocket\"}")).toBe(2)
      expect(value(closed, "dashcast_connections_active{transport=\"websocket\"}")).toBe(value(before, "dashcast_connections_active{transport=\"websocket\"}"))
    }))

  it.scoped("pings every socket once every 30 s, a thirtieth of them each second, and records each pong's round trip", () =>
    Effect.gen(function*() {
      // The TestClock drives the pings; the sockets and their pongs are real.
      const server = yield* TestServer.start()
      const pongs = Effect.flatMap(server.fetch("/metrics"), (r) => Effect.promise(() => r.text())).pipe(
        Effect.map((text) => value(parse(text), "dashcast_ping_rtt_seconds_count"))
      )
      const clients = yield* Effect.forEach(Array.from({ length: 60 }), () => WsClient.connect(server.wsUrl))
      yield* Effect.forEach(clients, (client) => client.next())
      const before = yield* pongs
      /** Pongs since `before` once `expected` have come back (real time: a few milliseconds each). */
      const awaitPongs = (expected: number) =>
        pongs.pipe(Effect.map((n) => n - before), Effect.repeat({ until: (n) => n >= expected, times: 200 }))
      yield* TestClock.adjust("999 millis")
      expect(yield* pongs).toBe(before)
      for (let second = 1; second <= 30; second++) {
        yield* TestClock.adjust("1 second")
        // Two sockets a second (60 / 30), never more: a round is spread over its 30 seconds.
        expect(yield* awaitPongs(2 * second)).toBe(2 * second)
      }
      // Each of the 60 sockets answered once in the round; the next round begins a second later.
      yield* TestClock.adjust("1 second")
      expect(yield* awaitPongs(62)).toBe(62)
    }))

  it.scopedLive("counts force updates refused within MIN_FETCH_GAP", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: summaryView(makeSummary()), config: { ADMIN_TOKEN: "t", MIN_FETCH_GAP: "1 hours" } })
      const read = Effect.flatMap(server.fetch("/metrics"), (r) => Effect.promise(() => r.text())).pipe(Effect.map(parse))
      const before = yield* read
      const response = yield* server.fetch("/api/dashboard/refresh", { method: "POST", headers: { authorization: "Bearer t" } })
      expect(response.status).toBe(429)
      const after = yield* read
      expect(value(after, "dashcast_rate_limited_total{kind=\"force_update\"}") - value(before, "dashcast_rate_limited_total{kind=\"force_update\"}")).toBe(1)
    }))

  it.scopedLive("times every upstream call and counts its errors by endpoint and reason", () =>
    Effect.gen(function*() {
      const fake = yield* scopedFakeUpstream()
      const exporter = yield* MetricsExporter
      const read = exporter.render({ cacheStats: Effect.succeed({ l1: { hits: 0, misses: 0, errors: 0 }, l2: { hits: 0, misses: 0, errors: 0, degraded: 0 } }), summaryAgeSeconds: Effect.succeed(Option.none()) }).pipe(Effect.map(parse))
      const before = yield* read
      fake.fail("global", Fault.ServerError({ status: 500 }))
      fake.fail("fear_greed", Fault.RateLimited({}))
      const context = yield* Layer.build(
        UpstreamMarketDataFetchLive.pipe(
          Layer.provide(CacheManager.Default),
          Layer.provideMerge(AppConfig.Default),
          Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries({ ...fake.env, CACHE_PATH: ":memory:" }))))),
          Layer.provide(Logger.minimumLogLevel(LogLevel.None))
        )
      )
      const market = Context.get(context, MarketData)
      // One round for bitcoin in usd: the prices answer, the totals and the index fail.
      const round = yield* market.fetch(Option.none())
      expect(round.problems.map((e) => e.endpoint).sort()).toEqual(["fear_greed", "global"])
      const after = yield* read
      const delta = (series: string) => value(after, series) - value(before, series)
      for (const endpoint of ["coins_markets", "global", "market_chart", "fear_greed"]) {
        expect(delta(`dashcast_upstream_fetch_duration_seconds_count{endpoint="${endpoint}"}`), endpoint).toBe(1)
      }
      expect(delta("dashcast_upstream_errors_total{endpoint=\"global\",reason=\"http_status\"}")).toBe(1)
      expect(delta("dashcast_upstream_errors_total{endpoint=\"fear_greed\",reason=\"rate_limited\"}")).toBe(1)
      expect(delta("dashcast_rate_limited_total{kind=\"upstream_429\"}")).toBe(1)
      expect(delta("dashcast_upstream_errors_total{endpoint=\"coins_markets\",reason=\"http_status\"}")).toBe(0)
    }).pipe(Effect.provide(MetricsExporter.Default)))
})
