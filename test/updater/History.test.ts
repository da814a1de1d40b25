/**
 * The chart's history: bounded, oldest first, one point per new summary, and the JSON that
 * `GET /api/history` serves (checked against the Schema the client SDK decodes it with).
 */
import { HttpServerResponse } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect, Schema } from "effect"
import { SummarySnapshot } from "../../src/market/DashboardSummary.js"
import { History, HISTORY_CAPACITY, HistoryResponse } from "../../src/updater/History.js"
import { makeSummary } from "../support/TestServer.js"

const START = Date.parse("2025-08-20T12:00:00.000Z")

/** The n-th snapshot of a run: seq n, fetched n minutes after START, priced 60,000 + n. */
const snapshot = (n: number) =>
  SummarySnapshot.make({
    summary: makeSummary({ btc_price: 60_000 + n, last_updated: DateTime.unsafeMake(START + n * 60_000) }),
    seq: n,
    fetched_at: DateTime.unsafeMake(START + n * 60_000),
    stale_fields: []
  })

const appendAll = (history: History, ns: ReadonlyArray<number>) => Effect.forEach(ns, (n) => history.append(snapshot(n)))
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

  it.effect("ignores a summary that is not newer than the last one (republished or out of order)", () =>
    Effect.gen(function*() {
      const history = yield* History
      expect(yield* history.append(snapshot(1))).toBe(true)
      expect(yield* history.append(snapshot(2))).toBe(true)
      expect(yield* history.append(snapshot(2))).toBe(false)
      expect(yield* history.append(snapshot(1))).toBe(false)
      expect(yield* history.append(snapshot(4))).toBe(true)
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
