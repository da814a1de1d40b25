/**
 * The market state on one instance (no cluster): what its readers hear and in which order, the
 * drop of snapshots that are not newer, the warm-start seed, the freshness rule, the updater's
 * status, and the client's wish for a refresh reaching the Updater.
 */
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Context, DateTime, Effect, Layer, Option, Ref, TestClock } from "effect"
import { CacheManager } from "../../src/cache/CacheManager.js"
import { StandaloneCluster } from "../../src/cluster/Cluster.js"
import { AppConfig } from "../../src/Config.js"
import { History } from "../../src/history/History.js"
import { MarketData } from "../../src/market/MarketData.js"
import { MarketSnapshot } from "../../src/market/Watchlist.js"
import { MarketState, type StateEvent } from "../../src/state/MarketState.js"
import { Updater } from "../../src/updater/Updater.js"
import { makeView } from "../support/TestServer.js"

const START = Date.parse("2025-08-20T12:00:00.000Z")

/** Snapshot `seq`, fetched `fetchedAt` ms after START, bitcoin at 60,000 + seq. */
const snapshot = (seq: number, fetchedAt = seq * 60_000) =>
  MarketSnapshot.make({ view: makeView({ bitcoin: { usd: 60_000 + seq } }), seq, fetched_at: DateTime.unsafeMake(START + fetchedAt) })

const configured = (settings: Record<string, string> = {}) =>
  Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries({ CACHE_PATH: ":memory:", ...settings }))))

const StateLive = (settings: Record<string, string> = {}) =>
  MarketState.DefaultWithoutDependencies.pipe(
    Layer.provide(StandaloneCluster),
    Layer.provide(AppConfig.Default),
    Layer.provide(configured(settings))
  )

const describeEvent = (event: StateEvent): string =>
  event._tag === "Failed"
    ? `Failed ${event.error} at=${event.at} retry_after=${event.retryAfterSeconds}`
    : event._tag === "Seeded"
    ? `Seeded ${event.snapshot.seq}`
    : `Updated ${event.snapshot.seq} ${event.source}`

/** Every event the state tells a new reader from now on, summarized, in order. */
const listen = (state: MarketState) =>
  Effect.gen(function*() {
    const heard: Array<string> = []
    yield* state.subscribe((event) => {
      heard.push(describeEvent(event))
    })
    return heard
  })

const seqOf = (state: MarketState) => Option.map(state.current(), (s) => s.seq)

describe("MarketState", () => {
  it.effect("tells every reader each update synchronously, in order, with its source", () =>
    Effect.gen(function*() {
      const state = yield* MarketState
      const first = yield* listen(state)
      const second = yield* listen(state)
      expect(seqOf(state)).toEqual(Option.none())
      yield* state.publish(snapshot(1), "scheduled_update")
      // Synchronous: the readers have heard it when publish returns.
      expect(first).toEqual(["Updated 1 scheduled_update"])
      yield* state.publish(snapshot(2), "force_update")
      expect(first).toEqual(["Updated 1 scheduled_update", "Updated 2 force_update"])
      expect(second).toEqual(first)
      expect(seqOf(state)).toEqual(Option.some(2))
      expect(Option.map(yield* state.latest, (s) => s.seq)).toEqual(Option.some(2))
    }).pipe(Effect.provide(StateLive())))

  it.effect("drops a snapshot whose seq is not above the latest delivered one (a duplicate, or one overtaken)", () =>
    Effect.gen(function*() {
      const state = yield* MarketState
      const heard = yield* listen(state)
      yield* state.publish(snapshot(2), "scheduled_update")
      yield* state.publish(snapshot(2), "refresh")
      yield* state.publish(snapshot(1), "force_update")
      expect(heard).toEqual(["Updated 2 scheduled_update"])
      expect(seqOf(state)).toEqual(Option.some(2))
      yield* state.publish(snapshot(3), "refresh")
      expect(heard).toEqual(["Updated 2 scheduled_update", "Updated 3 refresh"])
    }).pipe(Effect.provide(StateLive())))

  it.effect("a seed is the latest snapshot and readers hear it as Seeded; its seq is no bar to the first update", () =>
    Effect.gen(function*() {
      const state = yield* MarketState
      const heard = yield* listen(state)
      yield* state.seed(snapshot(7))
      expect(heard).toEqual(["Seeded 7"])
      expect(seqOf(state)).toEqual(Option.some(7))
      // The seed was never sent to clients: the same snapshot coming back from the channel is delivered.
      yield* state.publish(snapshot(7), "scheduled_update")
      expect(heard).toEqual(["Seeded 7", "Updated 7 scheduled_update"])
      yield* state.publish(snapshot(7), "scheduled_update")
      expect(heard).toHaveLength(2)
    }).pipe(Effect.provide(StateLive())))

  it.effect("freshness: the age from the snapshot's fetch time in tenths of a second, old from FRESHNESS on", () =>
    Effect.gen(function*() {
      const state = yield* MarketState
      const fetched = START + 60_000
      expect(state.freshness(fetched)).toEqual(Option.none())
      // No snapshot is not an old one: a connecting client has nothing to refresh.
      expect(state.isOld(fetched + 3_600_000)).toBe(false)
      yield* state.publish(snapshot(1), "scheduled_update")
      const at = (now: number) => Option.map(state.freshness(now), ({ ageSeconds, old }) => ({ ageSeconds, old }))
      expect(at(fetched + 12_345)).toEqual(Option.some({ ageSeconds: 12.3, old: false }))
      expect(at(fetched + 299_999)).toEqual(Option.some({ ageSeconds: 300, old: false }))
      expect(at(fetched + 300_000)).toEqual(Option.some({ ageSeconds: 300, old: true }))
      // A clock behind the snapshot's (another instance fetched it) never makes a negative age.
      expect(at(fetched - 5_000)).toEqual(Option.some({ ageSeconds: 0, old: false }))
      expect(state.isOld(fetched + 299_999)).toBe(false)
      expect(state.isOld(fetched + 300_000)).toBe(true)
      // `view` reads the Clock.
      yield* TestClock.setTime(fetched + 90_000)
      expect(Option.map(yield* state.view, (v) => [v.snapshot.seq, v.ageSeconds, v.old])).toEqual(Option.some([1, 90, false]))
    }).pipe(Effect.provide(StateLive({ FRESHNESS: "5 minutes" }))))

  it.effect("publishError tells readers the failure at the Clock's time and sets when the next attempt is", () =>
    Effect.gen(function*() {
      const state = yield* MarketState
      const heard = yield* listen(state)
      expect(yield* state.status).toEqual({ nextAttemptAt: Option.none(), lastError: Option.none() })
      yield* TestClock.setTime(START)
      yield* state.publishError("Failed to fetch market data: HTTP 503", 600)
      expect(heard).toEqual([`Failed Failed to fetch market data: HTTP 503 at=${START} retry_after=600`])
      expect(state.statusNow()).toEqual({
        nextAttemptAt: Option.some(START + 600_000),
        lastError: Option.some("Failed to fetch market data: HTTP 503")
      })
      yield* state.setStatus({ nextAttemptAt: Option.some(START + 1_000), lastError: Option.none() })
      expect(yield* state.status).toEqual({ nextAttemptAt: Option.some(START + 1_000), lastError: Option.none() })
    }).pipe(Effect.provide(StateLive())))

  it.effect("wantRefresh does nothing until an updater answers it", () =>
    Effect.gen(function*() {
      const state = yield* MarketState
      yield* state.publish(snapshot(1), "scheduled_update")
      expect(() => state.wantRefresh()).not.toThrow()
    }).pipe(Effect.provide(StateLive())))

  it.scoped("wantRefresh reaches the Updater: one background refresh of an old snapshot, none of a fresh one", () =>
    Effect.gen(function*() {
      const calls = yield* Ref.make(0)
      const market = MarketData.of({
        blockedFor: Effect.succeed(Option.none()),
        fetch: () =>
          Ref.updateAndGet(calls, (n) => n + 1).pipe(
            Effect.map((n) => ({ view: makeView({ bitcoin: { usd: 60_000 + n } }), failure: Option.none(), problems: [] }))
          )
      })
      const context = yield* Layer.build(
        Updater.DefaultWithoutDependencies.pipe(
          Layer.provideMerge(MarketState.DefaultWithoutDependencies),
          Layer.provide(CacheManager.Default),
          Layer.provide(History.Default),
          Layer.provide(StandaloneCluster),
          Layer.provide(Layer.succeed(MarketData, market)),
          Layer.provide(AppConfig.Default),
          Layer.provide(configured({ UPDATE_INTERVAL: "10 minutes", FRESHNESS: "1 minute", MIN_FETCH_GAP: "0 millis" }))
        )
      )
      const state = Context.get(context, MarketState)
      const heard = yield* listen(state)
      yield* TestClock.adjust(0)
      expect(yield* Ref.get(calls)).toBe(1)

      // Fresh: a connecting client's wish is no reason to call upstream.
      state.wantRefresh()
      yield* TestClock.adjust(0)
      expect(yield* Ref.get(calls)).toBe(1)

      // Old: many clients connect at once; one refresh runs and is published as such.
      yield* TestClock.adjust("2 minutes")
      for (let i = 0; i < 5; i++) state.wantRefresh()
      yield* TestClock.adjust(0)
      expect(yield* Ref.get(calls)).toBe(2)
      expect(heard).toEqual(["Updated 1 scheduled_update", "Updated 2 refresh"])
    }))
})
