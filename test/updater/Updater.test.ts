import { describe, expect, it } from "@effect/vitest"
import { Clock, ConfigProvider, DateTime, Duration, Effect, Fiber, Layer, Option, Ref, TestClock } from "effect"
import { CacheManager } from "../../src/cache/CacheManager.js"
import { AppConfig } from "../../src/Config.js"
import { DashboardSummary } from "../../src/market/DashboardSummary.js"
import { MarketData, UpstreamError, UpstreamReason } from "../../src/market/MarketData.js"
import { Broadcaster } from "../../src/realtime/Broadcaster.js"
import { decodeServerMessage, type ServerMessage } from "../../src/realtime/Protocol.js"
import { History } from "../../src/updater/History.js"
import { Updater } from "../../src/updater/Updater.js"
import { StandaloneCluster } from "../../src/cluster/Cluster.js"

const summary = (price: number) =>
  DashboardSummary.make({
    btc_price: price,
    btc_change_24h: 1.5,
    market_cap: 2.3e12,
    volume_24h: 9.1e10,
    fear_greed_index: 61,
    rsi_14: 55.2,
    last_updated: DateTime.unsafeMake(0)
  })

const outage = new UpstreamError({ endpoint: "simple_price", reason: UpstreamReason.HttpStatus({ status: 500 }) })
const throttled = (retryAfter: Duration.DurationInput) =>
  new UpstreamError({
    endpoint: "global",
    reason: UpstreamReason.RateLimited({ status: 429, retryAfter: Option.some(Duration.decode(retryAfter)) })
  })

/**
 * The Updater over a scripted upstream: each fetch takes the next scripted result (the last one
 * repeats) and records when it happened; every frame the Broadcaster publishes is decoded and kept.
 */
const setup = (
  script: ReadonlyArray<UpstreamError | number>,
  config: Record<string, string> = {},
  latency: Duration.DurationInput = 0
) =>
  Effect.gen(function*() {
    const calls = yield* Ref.make<ReadonlyArray<number>>([])
    const market = MarketData.of({
      fetch: () =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const n = (yield* Ref.getAndUpdate(calls, (c) => [...c, now])).length
          const step = script[Math.min(n, script.length - 1)]!
          // A round trip may take (test) time, so that concurrent callers really overlap.
          yield* Effect.sleep(latency)
          if (typeof step !== "number") return yield* Effect.fail(step)
          return { summary: summary(step), staleFields: [], partialFailure: Option.none() }
        })
    })
    const frames: Array<ServerMessage> = []
    const provider = ConfigProvider.fromMap(
      new Map(Object.entries({ UPDATE_INTERVAL: "10 minutes", CACHE_PATH: ":memory:", ...config }))
    )
    const layer = Updater.DefaultWithoutDependencies.pipe(
      Layer.provideMerge(Broadcaster.DefaultWithoutDependencies),
      Layer.provide(History.Default),
      Layer.provide(CacheManager.Default),
      Layer.provide(StandaloneCluster),
      Layer.provide(Layer.succeed(MarketData, market)),
      Layer.provideMerge(AppConfig.Default),
      Layer.provide(Layer.setConfigProvider(provider))
    )
    const context = yield* Layer.build(layer)
    const broadcaster = Effect.runSync(Effect.provide(Broadcaster, context))
    yield* broadcaster.attach({
      publish: (_topic, frame) => {
        const decoded = decodeServerMessage(frame)
        if (decoded._tag === "Left") throw new Error(`published an invalid frame: ${frame}`)
        frames.push(decoded.right)
        return 1
      },
      subscriberCount: () => 1
    })
    // Let the forked schedule run its first attempt at t = 0.
    yield* TestClock.adjust(0)
    return {
      frames,
      calls: Ref.get(calls).pipe(Effect.map((c) => c.map((t) => t / 1000))),
      updater: Effect.runSync(Effect.provide(Updater, context)),
      broadcaster
    }
  })

const summarize = (frames: ReadonlyArray<ServerMessage>) =>
  frames.map((f) =>
    f.type === "error"
      ? `error retry_after=${f.retry_after}`
      : f.type === "dashboard_update"
      ? `update seq=${f.seq} ${f.source} price=${f.data.btc_price}`
      : f.type
  )

describe("Updater", () => {
  it.scoped("retries the initial load, telling clients when the next attempt is due", () =>
    Effect.gen(function*() {
      const { calls, frames } = yield* setup([outage, outage, 100, 101])
      yield* TestClock.adjust("5 seconds")
      yield* TestClock.adjust("5 seconds")
      expect(yield* calls).toEqual([0, 5, 10])
      expect(summarize(frames)).toEqual([
        "error retry_after=5",
        "error retry_after=5",
        "update seq=1 scheduled_update price=100"
      ])
      // After a success the interval applies: nothing before 10 min, then the next update.
      yield* TestClock.adjust("9 minutes")
      expect((yield* calls).length).toBe(3)
      yield* TestClock.adjust("1 minutes")
      expect(yield* calls).toEqual([0, 5, 10, 610])
      expect(summarize(frames).at(-1)).toBe("update seq=2 scheduled_update price=101")
    }))

  it.scoped("backs off past the threshold with retry_after read from the schedule, then recovers", () =>
    Effect.gen(function*() {
      const script = [100, outage, outage, outage, outage, outage, 102]
      const { calls, frames } = yield* setup(script)
      for (let i = 0; i < 9; i++) yield* TestClock.adjust("10 minutes")
      // Failures at 10, 20, 30, 40 minutes; the fourth backs off 20 minutes, the fifth 30.
      expect((yield* calls).map((s) => s / 60)).toEqual([0, 10, 20, 30, 40, 60, 90])
      expect(summarize(frames)).toEqual([
        "update seq=1 scheduled_update price=100",
        "error retry_after=600",
        "error retry_after=600",
        "error retry_after=600",
        "error retry_after=1200",
        "error retry_after=1800",
        "update seq=2 scheduled_update price=102"
      ])
      yield* TestClock.adjust("10 minutes")
      expect((yield* calls).map((s) => s / 60).at(-1)).toBe(100)
    }))

  it.scoped("honours an upstream Retry-After longer than the rule's delay", () =>
    Effect.gen(function*() {
      const { calls, frames } = yield* setup([100, throttled("25 minutes"), 101])
      yield* TestClock.adjust("10 minutes")
      expect(summarize(frames).at(-1)).toBe("error retry_after=1500")
      yield* TestClock.adjust("24 minutes")
      expect((yield* calls).length).toBe(2)
      yield* TestClock.adjust("1 minutes")
      expect((yield* calls).map((s) => s / 60)).toEqual([0, 10, 35])
    }))

  it.scoped("coalesces concurrent force updates into one upstream call and refuses them within MIN_FETCH_GAP", () =>
    Effect.gen(function*() {
      const { calls, frames, updater } = yield* setup([100, 101, 102], { MIN_FETCH_GAP: "30 seconds" }, "1 seconds")
      yield* TestClock.adjust("1 seconds")
      // The scheduled fetch at t = 0 is within the gap.
      const early = yield* Effect.flip(updater.forceUpdate())
      expect(early._tag).toBe("RefreshTooSoon")
      yield* TestClock.adjust("30 seconds")
      const forced = yield* Effect.all(Array.from({ length: 40 }, () => updater.forceUpdate()), {
        concurrency: "unbounded"
      }).pipe(Effect.fork)
      yield* TestClock.adjust("1 seconds")
      const results = yield* Fiber.join(forced)
      expect(new Set(results.map((r) => r.seq))).toEqual(new Set([2]))
      expect((yield* calls).length).toBe(2)
      expect(summarize(frames).at(-1)).toBe("update seq=2 force_update price=101")
    }))

  it.scoped("refreshes a stale summary in the background at most once per MIN_FETCH_GAP", () =>
    Effect.gen(function*() {
      const { calls, frames, updater } = yield* setup([100, 101, 102, 103], {
        FRESHNESS: "1 minutes",
        MIN_FETCH_GAP: "30 seconds"
      }, "1 seconds")
      yield* TestClock.adjust("1 seconds")
      expect(yield* updater.refreshIfStale).toBe(false)
      yield* TestClock.adjust("2 minutes")
      const started = yield* Effect.all(Array.from({ length: 100 }, () => updater.refreshIfStale), {
        concurrency: "unbounded"
      })
      yield* TestClock.adjust("1 seconds")
      expect(started.filter(Boolean).length).toBe(1)
      expect((yield* calls).length).toBe(2)
      expect(summarize(frames).at(-1)).toBe("update seq=2 refresh price=101")
    }))
})
