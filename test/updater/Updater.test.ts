import { describe, expect, it } from "@effect/vitest"
import { Clock, ConfigProvider, DateTime, Duration, Effect, FastCheck as fc, Fiber, Layer, Option, Ref, Schedule, TestClock } from "effect"
import { CacheManager } from "../../src/cache/CacheManager.js"
import { AppConfig } from "../../src/Config.js"
import { DashboardSummary } from "../../src/market/DashboardSummary.js"
import { MarketData, UpstreamError, UpstreamReason } from "../../src/market/MarketData.js"
import { Broadcaster } from "../../src/realtime/Broadcaster.js"
import { decodeServerMessage, type ServerMessage } from "../../src/realtime/Protocol.js"
import { History } from "../../src/updater/History.js"
import { Attempt, updateDecisions } from "../../src/updater/Policy.js"
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

/** A round where some calls failed: the price is new, and `error` is what the others did. */
interface Partial {
  readonly partial: number
  readonly error: UpstreamError
}
type Step = UpstreamError | number | Partial

/**
 * The Updater over a scripted upstream: each fetch takes the next scripted result (the last one
 * repeats) and records when it happened; every frame the Broadcaster publishes is decoded and kept.
 * Like the real client, a 429 with `Retry-After` closes the provider for that long (`blockedFor`).
 */
const setup = (
  script: ReadonlyArray<Step>,
  config: Record<string, string> = {},
  latency: Duration.DurationInput = 0
) =>
  Effect.gen(function*() {
    const calls = yield* Ref.make<ReadonlyArray<number>>([])
    let blockedUntil = 0
    const blockedFor = Effect.map(Clock.currentTimeMillis, (now) =>
      blockedUntil > now ? Option.some(Duration.millis(blockedUntil - now)) : Option.none<Duration.Duration>())
    const closeFor = (error: UpstreamError) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        Option.map(error.retryAfter, (d) => {
          blockedUntil = Math.max(blockedUntil, now + Duration.toMillis(d))
        })
      })
    const market = MarketData.of({
      blockedFor,
      fetch: () =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          if (blockedUntil > now) return yield* Effect.dieMessage("a call was sent while the provider asked to wait")
          const n = (yield* Ref.getAndUpdate(calls, (c) => [...c, now])).length
          const step = script[Math.min(n, script.length - 1)]!
          // A round trip may take (test) time, so that concurrent callers really overlap.
          yield* Effect.sleep(latency)
          if (typeof step === "number") return { summary: summary(step), staleFields: [], partialFailure: Option.none() }
          if (step instanceof UpstreamError) {
            yield* closeFor(step)
            return yield* Effect.fail(step)
          }
          yield* closeFor(step.error)
          return { summary: summary(step.partial), staleFields: ["fear_greed_index" as const], partialFailure: Option.some(step.error) }
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
      broadcaster,
      /** When the schedule says the next attempt is due, in seconds. */
      nextAttemptAt: Effect.map(broadcaster.status, (s) => Option.map(s.nextAttemptAt, (at) => at / 1000))
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
      expect(new Set(results.map((r) => r.snapshot.seq))).toEqual(new Set([2]))
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

  it.scoped("a force update that succeeds resets the failures and puts the next attempt one interval after it", () =>
    Effect.gen(function*() {
      const { calls, frames, nextAttemptAt, updater } = yield* setup([100, outage, outage, outage, outage, 105, outage, 107])
      for (let i = 0; i < 4; i++) yield* TestClock.adjust("10 minutes")
      // Four failures in a row: past the threshold of 3, the next attempt backs off 20 minutes (t = 60).
      expect(yield* nextAttemptAt).toEqual(Option.some(60 * 60))
      yield* TestClock.adjust("5 minutes")
      const forced = yield* updater.forceUpdate()
      yield* TestClock.adjust(0)
      expect(forced.snapshot.summary.btc_price).toBe(105)
      // The schedule follows the success: the next attempt is 10 minutes after it, not at t = 60.
      expect(yield* nextAttemptAt).toEqual(Option.some(55 * 60))
      yield* TestClock.adjust("10 minutes")
      // That attempt fails, but the count started again at the success: the interval, not backoff.
      expect(yield* nextAttemptAt).toEqual(Option.some(65 * 60))
      yield* TestClock.adjust("10 minutes")
      expect((yield* calls).map((s) => s / 60)).toEqual([0, 10, 20, 30, 40, 45, 55, 65])
      expect(summarize(frames).slice(-3)).toEqual([
        "update seq=2 force_update price=105",
        "error retry_after=600",
        "update seq=3 scheduled_update price=107"
      ])
    }))

  it.scoped("refuses force updates and refreshes while the provider's Retry-After holds, and sends nothing", () =>
    Effect.gen(function*() {
      const { calls, nextAttemptAt, updater } = yield* setup([100, throttled("60 minutes"), 101], {
        MIN_FETCH_GAP: "30 seconds",
        FRESHNESS: "5 minutes"
      })
      yield* TestClock.adjust("10 minutes")
      expect(yield* nextAttemptAt).toEqual(Option.some(70 * 60))
      yield* TestClock.adjust("1 minutes")
      const refused = yield* Effect.flip(updater.forceUpdate())
      expect(refused).toMatchObject({ _tag: "RefreshTooSoon", reason: "upstream_rate_limit" })
      if (refused._tag === "RefreshTooSoon") expect(Duration.toSeconds(refused.retryAfter)).toBe(59 * 60)
      expect(yield* updater.refreshIfStale).toBe(false)
      yield* TestClock.adjust("58 minutes")
      expect((yield* Effect.flip(updater.forceUpdate()))._tag).toBe("RefreshTooSoon")
      expect((yield* calls).map((s) => s / 60)).toEqual([0, 10])
      // When it expires, the schedule's own attempt is the first call.
      yield* TestClock.adjust("1 minutes")
      expect((yield* calls).map((s) => s / 60)).toEqual([0, 10, 70])
      expect(yield* nextAttemptAt).toEqual(Option.some(80 * 60))
    }))

  it.scoped("publishes a partial force update and counts the round as failed", () =>
    Effect.gen(function*() {
      const partial = { partial: 101, error: new UpstreamError({ endpoint: "fear_greed", reason: UpstreamReason.HttpStatus({ status: 500 }) }) }
      const { frames, nextAttemptAt, updater } = yield* setup([100, partial, 102], { MIN_FETCH_GAP: "30 seconds" })
      yield* TestClock.adjust("1 minutes")
      const round = yield* updater.forceUpdate()
      yield* TestClock.adjust(0)
      expect(round.snapshot.summary.btc_price).toBe(101)
      expect(round.snapshot.stale_fields).toEqual(["fear_greed_index"])
      expect(Option.map(round.failure, (e) => e.endpoint)).toEqual(Option.some("fear_greed"))
      expect(summarize(frames).slice(-2)).toEqual(["update seq=2 force_update price=101", "error retry_after=600"])
      expect(yield* nextAttemptAt).toEqual(Option.some(11 * 60))
    }))

  /**
   * Any interleaving of scheduled rounds and force updates, against a model that feeds every
   * round's outcome to the same `Schedule` (`updateDecisions`): the calls happen exactly when the
   * model says, so after every round, forced or not, the next scheduled call is the rule's delay
   * after it, and no call is ever sent while the provider asks to wait (the double dies if one is).
   */
  it.scoped.prop(
    "follows the last round, whoever started it, and never calls inside a Retry-After",
    [
      fc.array(
        fc.oneof(
          fc.constant<Step>(100),
          fc.constant<Step>(outage),
          fc.integer({ min: 1, max: 90 }).map((m): Step => throttled(`${m} minutes`))
        ),
        { minLength: 2, maxLength: 12 }
      ),
      fc.uniqueArray(fc.integer({ min: 1, max: 180 }), { minLength: 1, maxLength: 8 })
    ],
    ([script, forceAt]) =>
      Effect.gen(function*() {
        const forces = [...forceAt].sort((a, b) => a - b).map((m) => m * 60_000)
        const end = 240 * 60_000
        const { calls, updater } = yield* setup(script, { MIN_FETCH_GAP: "30 seconds", INITIAL_FETCH_RETRIES: "1" })
        let now = 0
        for (const at of forces) {
          yield* TestClock.adjust(at - now)
          now = at
          yield* Effect.either(updater.forceUpdate())
          yield* TestClock.adjust(0)
        }
        yield* TestClock.adjust(end - now)
        expect(yield* calls).toEqual(modelCalls(script, forces, end).map((ms) => ms / 1000))
      }),
    { fastCheck: { numRuns: 80 } }
  )
})

/** When the model calls upstream: every round's outcome steps one `updateDecisions` driver. */
const modelCalls = (script: ReadonlyArray<Step>, forces: ReadonlyArray<number>, end: number): ReadonlyArray<number> => {
  const settings = { interval: Duration.minutes(10), threshold: 3, cap: Duration.minutes(30), initialAttempts: 1, initialDelay: Duration.seconds(5) }
  const driver = Effect.runSync(Schedule.driver(updateDecisions(settings)))
  const made: Array<number> = []
  let blockedUntil = 0
  let lastCall = Number.NEGATIVE_INFINITY
  let nextScheduled = 0
  const pending = [...forces]
  const call = (t: number): Attempt => {
    const step = script[Math.min(made.length, script.length - 1)]!
    made.push(t)
    lastCall = t
    if (typeof step === "number") return Attempt.Success()
    const error = step instanceof UpstreamError ? step : step.error
    Option.map(error.retryAfter, (d) => {
      blockedUntil = Math.max(blockedUntil, t + Duration.toMillis(d))
    })
    return Attempt.Failure({ retryAfter: blockedUntil > t ? Option.some(Duration.millis(blockedUntil - t)) : Option.none() })
  }
  const step = (t: number, outcome: Attempt) => {
    nextScheduled = t + Duration.toMillis(Effect.runSync(driver.next(outcome)).delay)
  }
  while (nextScheduled <= end || pending.length > 0) {
    const force = pending[0]
    if (force === undefined || nextScheduled <= force) {
      if (nextScheduled > end) break
      const t = nextScheduled
      step(t, blockedUntil > t ? Attempt.Failure({ retryAfter: Option.some(Duration.millis(blockedUntil - t)) }) : call(t))
    } else {
      pending.shift()
      if (blockedUntil <= force && force - lastCall >= 30_000) step(force, call(force))
    }
  }
  return made
}
