/**
 * The chart's history: bounded, oldest first, one point per new snapshot, the JSON that
 * `GET /api/history` serves (checked against the Schema the client SDK decodes it with), and the
 * recorder that follows the market state (the first asset in the first currency).
 */
import { HttpServerResponse } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, DateTime, Effect, Layer, Schema } from "effect"
import { StandaloneCluster } from "../../src/cluster/Cluster.js"
import { AppConfig } from "../../src/Config.js"
import { History, HISTORY_CAPACITY, type HistoryPoint, HistoryRecorder, HistoryResponse } from "../../src/history/History.js"
import { MarketSnapshot, type MarketView } from "../../src/market/Watchlist.js"
import { MarketState } from "../../src/state/MarketState.js"
import { makeView } from "../support/TestServer.js"

const START = Date.parse("2025-08-20T12:00:00.000Z")

/** The n-th point of a run: seq n, n minutes after START, priced 60,000 + n. */
const point = (n: number): HistoryPoint => ({ t: DateTime.unsafeMake(START + n * 60_000), price: 60_000 + n, seq: n })

const appendAll = (history: History, ns: ReadonlyArray<number>) => Effect.forEach(ns, (n) => history.append(point(n)))
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

describe("History", () => {
  it.effect("keeps at least a day of 30 second updates by default", () =>
    Effect.gen(function*() {
      const history = yield* History
      expect(history.capacity).toBe(HISTORY_CAPACITY)
      expect(HISTORY_CAPACITY * 30).toBeGreaterThanOrEqual(24 * 60 * 60)
      yield* appendAll(history, range(1, HISTORY_CAPACITY + 5))
      const points = yield* history.list
      expect(points).toHaveLength(HISTORY_CAPACITY)
      expect(points[0]?.seq).toBe(6)
      expect(points.at(-1)?.seq).toBe(HISTORY_CAPACITY + 5)
    }).pipe(Effect.provide(History.Default)))

  it.effect("is bounded: the oldest points go first, the rest stay oldest first", () =>
    Effect.gen(function*() {
      const history = yield* History
      yield* appendAll(history, range(1, 3))
      expect((yield* history.list).map((p) => p.seq)).toEqual([1, 2, 3])
      // Wrap around the ring more than once.
      yield* appendAll(history, range(4, 12))
      const points = yield* history.list
      expect(points.map((p) => p.seq)).toEqual([8, 9, 10, 11, 12])
      expect(points.map((p) => p.price)).toEqual([60_008, 60_009, 60_010, 60_011, 60_012])
      const times = points.map((p) => DateTime.toEpochMillis(p.t))
      expect(times).toEqual([...times].sort((a, b) => a - b))
      expect(times[0]).toBe(START + 8 * 60_000)
    }).pipe(Effect.provide(History.layerWithCapacity(5))))

  it.effect("ignores a point that is not newer than the last one (republished or out of order)", () =>
    Effect.gen(function*() {
      const history = yield* History
      expect(yield* history.append(point(1))).toBe(true)
      expect(yield* history.append(point(2))).toBe(true)
      expect(yield* history.append(point(2))).toBe(false)
      expect(yield* history.append(point(1))).toBe(false)
      expect(yield* history.append(point(4))).toBe(true)
      expect((yield* history.list).map((p) => p.seq)).toEqual([1, 2, 4])
    }).pipe(Effect.provide(History.layerWithCapacity(10))))

  it.effect("starts empty", () =>
    Effect.gen(function*() {
      const history = yield* History
      expect(yield* history.list).toEqual([])
      const response = HttpServerResponse.toWeb(yield* history.handler)
      const body = yield* Effect.promise(() => response.json())
      expect(body).toEqual({ points: [] })
    }).pipe(Effect.provide(History.layerWithCapacity(3))))

  it.effect("serves {points:[{t,price,seq}]} oldest first, as the SDK's Schema reads it", () =>
    Effect.gen(function*() {
      const history = yield* History
      yield* appendAll(history, range(1, 4))
      const response = HttpServerResponse.toWeb(yield* history.handler)
      expect(response.status).toBe(200)
      expect(response.headers.get("content-type")).toContain("application/json")
      expect(response.headers.get("cache-control")).toBe("no-store")
      const body = yield* Effect.promise(() => response.json())
      expect(body).toEqual({
        points: [2, 3, 4].map((n) => ({
          t: new Date(START + n * 60_000).toISOString(),
          price: 60_000 + n,
          seq: n
        }))
      })
      const decoded = Schema.decodeUnknownSync(HistoryResponse)(body)
      expect(decoded.points.map((p) => p.seq)).toEqual([2, 3, 4])
    }).pipe(Effect.provide(History.layerWithCapacity(3))))

  it("refuses a capacity that is not a positive integer", () => {
    expect(() => Effect.runSync(Effect.provide(History, History.layerWithCapacity(0)))).toThrow(/positive integer/)
  })
})

/** The n-th snapshot: seq n; `view` decides what it quotes. */
const snapshotOf = (n: number, view: MarketView) =>
  MarketSnapshot.make({ view, seq: n, fetched_at: DateTime.unsafeMake(START + n * 60_000 + 5_000) })

/** History, market state and recorder for `ASSETS` and `CURRENCIES`, standalone. */
const recorded = (assets: string, currencies: string) =>
  HistoryRecorder.pipe(
    Layer.provideMerge(History.layerWithCapacity(10)),
    Layer.provideMerge(MarketState.DefaultWithoutDependencies),
    Layer.provide(StandaloneCluster),
    Layer.provideMerge(AppConfig.Default),
    Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map([["ASSETS", assets], ["CURRENCIES", currencies]]))))
  )

describe("HistoryRecorder", () => {
  it.effect("records the first asset in the first currency at the provider's time, from the seed and every update", () =>
    Effect.gen(function*() {
      const state = yield* MarketState
      const history = yield* History
      const at = (n: number) => DateTime.unsafeMake(START + n * 60_000)
      const view = (n: number) =>
        makeView({
          ethereum: { eur: { price: 3_000 + n, last_updated: at(n) }, usd: { price: 3_300 + n, last_updated: at(n) } },
          bitcoin: { eur: 58_000 + n, usd: 64_000 + n }
        })
      yield* state.seed(snapshotOf(1, view(1)))
      yield* state.publish(snapshotOf(2, view(2)), "scheduled_update")
      yield* state.publishError("Failed to fetch market data: HTTP 500", 600)
      yield* state.publish(snapshotOf(3, view(3)), "force_update")
      expect(yield* history.list).toEqual([1, 2, 3].map((n) => ({ t: at(n), price: 3_000 + n, seq: n })))
    }).pipe(Effect.provide(recorded("ethereum,bitcoin", "eur,usd"))))

  it.effect("skips a snapshot without a quote of that asset in that currency, and keeps recording after it", () =>
    Effect.gen(function*() {
      const state = yield* MarketState
      const history = yield* History
      yield* state.publish(snapshotOf(1, makeView({ bitcoin: { usd: 64_001 } })), "scheduled_update")
      yield* state.publish(snapshotOf(2, makeView({ ethereum: { usd: 3_500 } })), "scheduled_update")
      yield* state.publish(snapshotOf(3, makeView({ bitcoin: { eur: 58_000 } })), "scheduled_update")
      yield* state.publish(snapshotOf(4, makeView({ bitcoin: { usd: 64_004 } })), "scheduled_update")
      expect((yield* history.list).map((p) => [p.seq, p.price])).toEqual([[1, 64_001], [4, 64_004]])
    }).pipe(Effect.provide(recorded("bitcoin,ethereum", "usd,eur"))))
})
