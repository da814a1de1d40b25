/**
 * The Updater over a scripted market: the initial load, the schedule (including a model-based
 * property test of it), force updates, refreshes and Retry-After, observed through what it
 * publishes to the market state, and the warm start from the cache.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, ConfigProvider, Context, DateTime, Duration, Effect, FastCheck as fc, Fiber, Layer, Option, Ref, Schedule, TestClock } from "effect"
import { CacheManager } from "../../src/cache/CacheManager.js"
import { StandaloneCluster } from "../../src/cluster/Cluster.js"
import { AppConfig } from "../../src/Config.js"
import { History } from "../../src/history/History.js"
import { MarketData, type MarketFetch, UpstreamError, UpstreamReason } from "../../src/market/MarketData.js"
import { currencyView, MarketSnapshot, type MarketView } from "../../src/market/Watchlist.js"
import { MarketState, type StateEvent } from "../../src/state/MarketState.js"
import { Attempt, updateDecisions } from "../../src/updater/Policy.js"
import { SnapshotKey, Updater } from "../../src/updater/Updater.js"
import { makeView, type ViewOptions } from "../support/TestServer.js"

/** The market of one round: bitcoin in usd at `price`; `stale` names what kept an old value. */
const view = (price: number, stale: ViewOptions["stale"] = {}): MarketView =>
  makeView({ bitcoin: { usd: price } }, { stale })

const outage = new UpstreamError({ endpoint: "coins_markets", target: "usd", reason: UpstreamReason.HttpStatus({ status: 500 }) })
const throttled = (retryAfter: Duration.DurationInput) =>
  new UpstreamError({
    endpoint: "global",
    reason: UpstreamReason.RateLimited({ status: 429, retryAfter: Option.some(Duration.decode(retryAfter)) })
  })

/**
 * A round where some calls failed: the price is new, the Fear & Greed index kept its old value and
 * `error` is what its call did. `counted: false` is a call only held by its provider's Retry-After,
 * which the schedule does not count as a failure.
 */
interface PartialRound {
  readonly partial: number
  readonly error: UpstreamError
  readonly counted?: boolean
}
type Step = UpstreamError | number | PartialRound

/** What the market state told its readers, in order. */
const describeEvent = (event: StateEvent): string =>
  event._tag === "Failed"
    ? `error retry_after=${event.retryAfterSeconds}`
    : event._tag === "Seeded"
    ? `seeded seq=${event.snapshot.seq}`
    : `update seq=${event.snapshot.seq} ${event.source} price=${event.snapshot.view.quotes["usd"]?.["bitcoin"]?.price}`

/**
 * The Updater over a scripted upstream: each fetch takes the next scripted result (the last one
 * repeats) and records when it happened and the previous view it was given; every event of the
 * market state is kept. Like the real client, a 429 with `Retry-After` closes the provider for that
 * long (`blockedFor`). `cached` is in the L2 cache before the Updater starts (a warm start).
 */
const setup = (
  script: ReadonlyArray<Step>,
  config: Record<string, string> = {},
  latency: Duration.DurationInput = 0,
  cached?: MarketSnapshot
) =>
  Effect.gen(function*() {
    const calls = yield* Ref.make<ReadonlyArray<number>>([])
    const previousViews: Array<Option.Option<MarketView>> = []
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
      fetch: (previous) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          if (blockedUntil > now) return yield* Effect.dieMessage("a call was sent while the provider asked to wait")
          previousViews.push(previous)
          const n = (yield* Ref.getAndUpdate(calls, (c) => [...c, now])).length
          const step = script[Math.min(n, script.length - 1)]!
          // A round trip may take (test) time, so that concurrent callers really overlap.
          yield* Effect.sleep(latency)
          if (typeof step === "number") return { view: view(step), failure: Option.none(), problems: [] } satisfies MarketFetch
          if (step instanceof UpstreamError) {
            yield* closeFor(step)
            return yield* Effect.fail(step)
          }
          const counted = step.counted ?? true
          if (counted) yield* closeFor(step.error)
          return {
            view: view(step.partial, { fear_greed: true }),
            failure: counted ? Option.some(step.error) : Option.none(),
            problems: [step.error]
          } satisfies MarketFetch
        })
    })
    const provider = ConfigProvider.fromMap(
      new Map(Object.entries({ UPDATE_INTERVAL: "10 minutes", CACHE_PATH: ":memory:", ...config }))
    )
    // The state and its readers first, as in src/main.ts; then the Updater that writes to it.
    const base = yield* Layer.build(
      MarketState.DefaultWithoutDependencies.pipe(
        Layer.provideMerge(CacheManager.Default),
        Layer.provideMerge(History.Default),
        Layer.provideMerge(StandaloneCluster),
        Layer.provideMerge(Layer.succeed(MarketData, market)),
        Layer.provideMerge(AppConfig.Default),
        Layer.provide(Layer.setConfigProvider(provider))
      )
    )
    const state = Context.get(base, MarketState)
    const events: Array<StateEvent> = []
    yield* state.subscribe((event) => {
      events.push(event)
    })
    if (cached !== undefined) yield* Context.get(base, CacheManager).set(SnapshotKey, cached)
    const context = yield* Layer.build(Updater.DefaultWithoutDependencies).pipe(Effect.provide(base))
    // Let the forked schedule run its first attempt at t = 0.
    yield* TestClock.adjust(0)
    return {
      events,
      state,
      cache: Context.get(base, CacheManager),
      previousViews,
      calls: Ref.get(calls).pipe(Effect.map((c) => c.map((t) => t / 1000))),
      updater: Context.get(context, Updater),
      /** When the schedule says the next attempt is due, in seconds. */
      nextAttemptAt: Effect.map(state.status, (s) => Option.map(s.nextAttemptAt, (at) => at / 1000))
    }
  })

const summarize = (events: ReadonlyArray<StateEvent>) => events.map(describeEvent)

describe("Updater", () => {
  it.scoped("retries the initial load, telling clients when the next attempt is due", () =>
    Effect.gen(function*() {
      const { calls, events } = yield* setup([outage, outage, 100, 101])
      yield* TestClock.adjust("5 seconds")
      yield* TestClock.adjust("5 seconds")
      expect(yield* calls).toEqual([0, 5, 10])
      expect(summarize(events)).toEqual([
        "error retry_after=5",
        "error retry_after=5",
        "update seq=1 scheduled_update price=100"
      ])
      // After a success the interval applies: nothing before 10 min, then the next update.
      yield* TestClock.adjust("9 minutes")
      expect((yield* calls).length).toBe(3)
      yield* TestClock.adjust("1 minutes")
      expect(yield* calls).toEqual([0, 5, 10, 610])
      expect(summarize(events).at(-1)).toBe("update seq=2 scheduled_update price=101")
    }))

  it.scoped("backs off past the threshold with retry_after read from the schedule, then recovers", () =>
    Effect.gen(function*() {
      const script = [100, outage, outage, outage, outage, outage, 102]
      const { calls, events } = yield* setup(script)
      for (let i = 0; i < 9; i++) yield* TestClock.adjust("10 minutes")
      // Failures at 10, 20, 30, 40 minutes; the fourth backs off 20 minutes, the fifth 30.
      expect((yield* calls).map((s) => s / 60)).toEqual([0, 10, 20, 30, 40, 60, 90])
      expect(summarize(events)).toEqual([
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
      const { calls, events } = yield* setup([100, throttled("25 minutes"), 101])
      yield* TestClock.adjust("10 minutes")
      expect(summarize(events).at(-1)).toBe("error retry_after=1500")
      yield* TestClock.adjust("24 minutes")
      expect((yield* calls).length).toBe(2)
      yield* TestClock.adjust("1 minutes")
      expect((yield* calls).map((s) => s / 60)).toEqual([0, 10, 35])
    }))

  it.scoped("coalesces concurrent force updates into one upstream call and refuses them within MIN_FETCH_GAP", () =>
    Effect.gen(function*() {
      const { calls, events, updater } = yield* setup([100, 101, 102], { MIN_FETCH_GAP: "30 seconds" }, "1 seconds")
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
      expect(summarize(events).at(-1)).toBe("update seq=2 force_update price=101")
    }))

  it.scoped("refreshes a stale summary in the background at most once per MIN_FETCH_GAP", () =>
    Effect.gen(function*() {
      const { calls, events, updater } = yield* setup([100, 101, 102, 103], {
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
      expect(summarize(events).at(-1)).toBe("update seq=2 refresh price=101")
    }))

  it.scoped("a provider's wait another instance learned holds here too: no force update, refresh or scheduled call inside it", () =>
    Effect.gen(function*() {
      const { calls, state, updater } = yield* setup([100, 101], { MIN_FETCH_GAP: "30 seconds", FRESHNESS: "1 minutes" })
      yield* TestClock.adjust("2 minutes")
      // A 429 on another instance, relayed through the state: an hour from now.
      yield* state.holdUpstream(2 * 60_000 + 3_600_000)
      const refused = yield* Effect.flip(updater.forceUpdate())
      expect(refused).toMatchObject({ _tag: "RefreshTooSoon", reason: "upstream_rate_limit" })
      if (refused._tag === "RefreshTooSoon") expect(Duration.toSeconds(refused.retryAfter)).toBe(3_600)
      expect(yield* updater.refreshIfStale).toBe(false)
      // The scheduled attempt at 10 minutes is not sent either; the next one is when the wait ends.
      yield* TestClock.adjust("59 minutes")
      expect(yield* calls).toEqual([0])
      yield* TestClock.adjust("1 minutes")
      expect(yield* calls).toEqual([0, 62 * 60])
    }))

  it.scoped("a snapshot another instance published counts as a round: the schedule follows it", () =>
    Effect.gen(function*() {
      const { calls, nextAttemptAt, state } = yield* setup([100, outage, outage, outage, outage, 103])
      for (let i = 0; i < 4; i++) yield* TestClock.adjust("10 minutes")
      expect(yield* nextAttemptAt).toEqual(Option.some(60 * 60))
      yield* TestClock.adjust("5 minutes")
      // A follower's force update, relayed to this instance: a new seq it did not number.
      const latest = Option.getOrThrow(yield* state.latest)
      yield* state.publish(MarketSnapshot.make({ view: view(102), seq: latest.seq + 1, fetched_at: DateTime.unsafeMake(45 * 60_000) }), "force_update")
      yield* TestClock.adjust(0)
      expect(yield* nextAttemptAt).toEqual(Option.some(55 * 60))
      yield* TestClock.adjust("10 minutes")
      expect((yield* calls).map((s) => s / 60)).toEqual([0, 10, 20, 30, 40, 55])
    }))

  it.scoped("writes every published snapshot to the cache (behind the round, latest first)", () =>
    Effect.gen(function*() {
      const { cache, events } = yield* setup([100, 101])
      yield* TestClock.adjust(0)
      const cached = yield* cache.get(SnapshotKey)
      expect(Option.map(cached, (s) => s.seq)).toEqual(Option.some(1))
      yield* TestClock.adjust("10 minutes")
      expect(Option.map(yield* cache.get(SnapshotKey), (s) => s.seq)).toEqual(Option.some(2))
      expect(summarize(events).filter((e) => e.startsWith("update"))).toHaveLength(2)
    }))

  it.scoped("a force update that succeeds resets the failures and puts the next attempt one interval after it", () =>
    Effect.gen(function*() {
      const { calls, events, nextAttemptAt, updater } = yield* setup([100, outage, outage, outage, outage, 105, outage, 107])
      for (let i = 0; i < 4; i++) yield* TestClock.adjust("10 minutes")
      // Four failures in a row: past the threshold of 3, the next attempt backs off 20 minutes (t = 60).
      expect(yield* nextAttemptAt).toEqual(Option.some(60 * 60))
      yield* TestClock.adjust("5 minutes")
      const forced = yield* updater.forceUpdate()
      yield* TestClock.adjust(0)
      expect(forced.snapshot.view.quotes["usd"]?.["bitcoin"]?.price).toBe(105)
      // The schedule follows the success: the next attempt is 10 minutes after it, not at t = 60.
      expect(yield* nextAttemptAt).toEqual(Option.some(55 * 60))
      yield* TestClock.adjust("10 minutes")
      // That attempt fails, but the count started again at the success: the interval, not backoff.
      expect(yield* nextAttemptAt).toEqual(Option.some(65 * 60))
      yield* TestClock.adjust("10 minutes")
      expect((yield* calls).map((s) => s / 60)).toEqual([0, 10, 20, 30, 40, 45, 55, 65])
      expect(summarize(events).slice(-3)).toEqual([
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
      const { events, nextAttemptAt, state, updater } = yield* setup([100, partial, 102], { MIN_FETCH_GAP: "30 seconds" })
      yield* TestClock.adjust("1 minutes")
      const round = yield* updater.forceUpdate()
      yield* TestClock.adjust(0)
      expect(round.snapshot.view.quotes["usd"]?.["bitcoin"]?.price).toBe(101)
      expect(round.snapshot.view.stale.fear_greed).toBe(true)
      expect(currencyView(round.snapshot, "usd").staleFields).toEqual(["fear_greed_index"])
      expect(Option.map(yield* state.latest, (s) => s.seq)).toEqual(Option.some(2))
      expect(Option.map(round.failure, (e) => e.endpoint)).toEqual(Option.some("fear_greed"))
      expect(summarize(events).slice(-2)).toEqual(["update seq=2 force_update price=101", "error retry_after=600"])
      expect(yield* nextAttemptAt).toEqual(Option.some(11 * 60))
    }))

  it.scoped("publishes a round whose only problem is a call held by its provider's Retry-After, and counts it a success", () =>
    Effect.gen(function*() {
      const held = new UpstreamError({
        endpoint: "fear_greed",
        reason: UpstreamReason.Blocked({ retryAfter: Duration.minutes(20) })
      })
      const { calls, events, nextAttemptAt } = yield* setup([100, { partial: 101, error: held, counted: false }, 102])
      yield* TestClock.adjust("10 minutes")
      // No failure told to clients, and the next attempt one interval later, not backed off.
      expect(summarize(events)).toEqual(["update seq=1 scheduled_update price=100", "update seq=2 scheduled_update price=101"])
      expect(yield* nextAttemptAt).toEqual(Option.some(20 * 60))
      yield* TestClock.adjust("10 minutes")
      expect(yield* calls).toEqual([0, 600, 1200])
    }))

  it.scoped("passes each round the last published view, and writes every published snapshot to the cache", () =>
    Effect.gen(function*() {
      const { cache, previousViews, state } = yield* setup([100, 101])
      yield* TestClock.adjust("10 minutes")
      const views = previousViews.map(Option.map((v) => v.quotes["usd"]?.["bitcoin"]?.price))
      expect(views).toEqual([Option.none(), Option.some(100)])
      const cached = yield* cache.get(SnapshotKey)
      expect(Option.map(cached, (s) => s.seq)).toEqual(Option.some(2))
      expect(Option.map(cached, (s) => s.view)).toEqual(Option.map(yield* state.latest, (s) => s.view))
    }))

  it.scoped("at a warm start seeds the state from the cache without a broadcast, and goes on from its view and seq", () =>
    Effect.gen(function*() {
      const seed = MarketSnapshot.make({ view: view(99), seq: 41, fetched_at: DateTime.unsafeMake(0) })
      const { events, previousViews, state } = yield* setup([100], {}, 0, seed)
      expect(summarize(events)).toEqual(["seeded seq=41", "update seq=42 scheduled_update price=100"])
      expect(previousViews.map(Option.map((v) => v.quotes["usd"]?.["bitcoin"]?.price))).toEqual([Option.some(99)])
      expect(Option.map(yield* state.latest, (s) => s.seq)).toEqual(Option.some(42))
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
    // 80 runs of four simulated hours take about 12 s alone; the ceiling leaves room for a loaded machine.
    { timeout: 120_000, fastCheck: { numRuns: 80 } }
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
