/**
 * The price history as the updater records it and `GET /api/history` / `GET /api/sparklines` serve
 * it (src/history/History.ts), on the real stack with a scripted market: full from the first round
 * (the provider's seeds), extended by every round, per asset and currency, never with a stale price,
 * written behind the broadcast, and refused with a clear 400 for what the server does not have.
 */
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Deferred, Effect, Layer, Option } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { writesOf } from "../../src/history/History.js"
import { HistoryStore, HistoryStoreError } from "../../src/history/HistoryStore.js"
import { DAY_TIER, HOUR_TIER, type Point, TIERS } from "../../src/history/Tiers.js"
import type { PriceSeed } from "../../src/market/MarketData.js"
import { MarketSnapshot } from "../../src/market/Watchlist.js"
import * as TestServer from "../support/TestServer.js"
import { makeView } from "../support/TestServer.js"

const M = 60_000
const H = 60 * M
const D = 24 * H
const config = { ASSETS: "bitcoin,ethereum", CURRENCIES: "usd,eur" }

/** A view of bitcoin and ethereum in usd and eur, priced `scale` times their defaults, quoted `at`. */
const viewAt = (at: number, scale = 1, stale: Parameters<typeof makeView>[1] = {}) => {
  const last_updated = DateTime.unsafeMake(at)
  const quote = (price: number) => ({ price: Math.round(price * scale * 100) / 100, last_updated, fetched_at: last_updated })
  return makeView({
    bitcoin: { usd: quote(64_000), eur: quote(58_880) },
    ethereum: { usd: quote(3_500), eur: quote(3_220) }
  }, stale)
}

/** What the provider hands on the first round: 168 hourly sparkline prices per series, and bitcoin's 59 daily closes in usd. */
const seedsAt = (now: number): ReadonlyArray<PriceSeed> => {
  const startOfToday = Math.floor(now / D) * D
  const sparkline = (base: number): ReadonlyArray<Point> => Array.from({ length: 168 }, (_, i) => [now - (167 - i) * H, base + i])
  return [
    { kind: "sparkline", asset: "bitcoin", currency: "usd", points: sparkline(60_000) },
    { kind: "sparkline", asset: "bitcoin", currency: "eur", points: sparkline(55_000) },
    { kind: "sparkline", asset: "ethereum", currency: "usd", points: sparkline(3_000) },
    { kind: "sparkline", asset: "ethereum", currency: "eur", points: sparkline(2_700) },
    { kind: "closes", asset: "bitcoin", currency: "usd", points: Array.from({ length: 59 }, (_, i) => [startOfToday - (58 - i) * D, 50_000 + i * 100]) }
  ]
}

interface HistoryBody {
  readonly asset: string
  readonly currency: string
  readonly range: string
  readonly points: ReadonlyArray<Point>
}

const getJson = (server: TestServer.TestServer, route: string) =>
  Effect.flatMap(server.fetch(route), (response) =>
    Effect.map(Effect.promise(() => response.json() as Promise<unknown>), (body) => ({ status: response.status, body })))

const history = (server: TestServer.TestServer, query = "") =>
  Effect.map(getJson(server, `/api/history${query}`), ({ body, status }) => {
    expect(status, JSON.stringify(body)).toBe(200)
    return body as HistoryBody
  })

/** The background writer is behind the broadcast: waits until the history shows what `until` wants. */
const eventually = <A>(read: Effect.Effect<A>, until: (a: A) => boolean) =>
  Effect.gen(function*() {
    const deadline = Date.now() + 5_000
    for (;;) {
      const value = yield* read
      if (until(value) || Date.now() > deadline) return value
      yield* Effect.sleep("20 millis")
    }
  })

const tempCache = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "i13-history-api-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
).pipe(Effect.map((dir) => path.join(dir, "cache.sqlite")))

describe("writesOf", () => {
  it("records each fresh quote at its own time, seeds first, and nothing of what is stale", () => {
    const now = Date.parse("2026-11-20T12:00:00Z")
    const view = viewAt(now - 30_000, 1, { stale: { currencies: ["eur"], quotes: [["usd", "ethereum"]] } })
    const snapshot = MarketSnapshot.make({ view, seq: 7, fetched_at: DateTime.unsafeMake(now) })
    const seeds: ReadonlyArray<PriceSeed> = [
      { kind: "sparkline", asset: "bitcoin", currency: "usd", points: [[now - H, 63_000]] },
      { kind: "closes", asset: "bitcoin", currency: "usd", points: [[now - 2 * D, 61_000]] }
    ]
    expect(writesOf(snapshot, seeds)).toEqual([
      { asset: "bitcoin", currency: "usd", mode: "seed", tiers: [HOUR_TIER, DAY_TIER], points: [[now - H, 63_000]] },
      { asset: "bitcoin", currency: "usd", mode: "seed", tiers: [DAY_TIER], points: [[now - 2 * D, 61_000]] },
      // eur is stale as a whole, ethereum in usd on its own: only bitcoin in usd is a new price.
      { asset: "bitcoin", currency: "usd", mode: "live", tiers: TIERS, points: [[now - 30_000, 64_000]] }
    ])
    // A provider's time after the snapshot's (a clock ahead) is recorded at the snapshot's time.
    const ahead = MarketSnapshot.make({ view: viewAt(now + 10 * M), seq: 8, fetched_at: DateTime.unsafeMake(now) })
    expect(writesOf(ahead, []).every((w) => w.points[0]?.[0] === now)).toBe(true)
  })
})

describe("GET /api/history and /api/sparklines", () => {
  it.scopedLive("serve full charts from the first round, per asset and currency, extended by every round", () =>
    Effect.gen(function*() {
      const cachePath = yield* tempCache
      // The first round's prices are two minutes old, so that the second round's are new and not in the future.
      const now = Date.now() - 2 * M
      const server = yield* TestServer.start({ config: { ...config, CACHE_PATH: cachePath } })
      yield* server.market.succeed(viewAt(now), seedsAt(now))
      yield* server.awaitSeq(1)

      // Defaults: the first asset, the first currency, 24 hours: the sparkline's last day, whose last
      // hour holds the live price. (The point exactly 24 h old is in or out by the read's millisecond.)
      const day = yield* eventually(history(server), (h) => h.points.length >= 24)
      expect([day.asset, day.currency, day.range]).toEqual(["bitcoin", "usd", "24h"])
      expect(day.points.at(-1)).toEqual([now, 64_000])
      const seeded = day.points.slice(0, -1)
      expect(seeded.length === 23 || seeded.length === 24).toBe(true)
      expect(seeded.map(([, p]) => p)).toEqual(Array.from({ length: seeded.length }, (_, i) => 60_167 - seeded.length + i))
      expect(seeded.map(([t]) => t)).toEqual(Array.from({ length: seeded.length }, (_, i) => now - (seeded.length - i) * H))

      // A week: the whole 7-day sparkline, its last hour replaced by the live price.
      const week = yield* history(server, "?asset=ethereum&currency=eur&range=7d")
      expect(week.points).toHaveLength(168)
      expect(week.points.slice(0, 167).map(([, p]) => p)).toEqual(Array.from({ length: 167 }, (_, i) => 2_700 + i))
      expect(week.points.at(-1)).toEqual([now, 3_220])

      // A month in the first currency: the daily closes before the sparkline's week.
      const month = yield* history(server, "?asset=bitcoin&range=30d")
      const times = month.points.map(([t]) => t)
      expect(times).toEqual([...times].sort((a, b) => a - b))
      expect(times[0]).toBeGreaterThanOrEqual(now - 30 * D)
      expect(times[0]).toBeLessThan(now - 29 * D)
      expect(month.points.length).toBeGreaterThanOrEqual(168 + 22)
      // In another currency there are no closes (they are fetched in the first currency only): the
      // month starts where the sparkline starts, nothing is converted at today's rate.
      const monthEur = yield* history(server, "?asset=bitcoin&currency=eur&range=30d")
      expect(monthEur.points).toHaveLength(168)

      // Every round extends every series; a stale quote adds nothing.
      const later = Date.now()
      yield* server.market.succeed(viewAt(later, 1.01, { stale: { quotes: [["eur", "ethereum"]] } }))
      yield* server.updater.forceUpdate()
      const extended = yield* eventually(history(server, "?asset=ethereum&currency=usd"), (h) => h.points.at(-1)?.[0] === later)
      expect(extended.points.slice(-2)).toEqual([[now, 3_500], [later, 3_535]])
      const staleSeries = yield* history(server, "?asset=ethereum&currency=eur")
      expect(staleSeries.points.at(-1)).toEqual([now, 3_220])

      // The watchlist's small charts: every asset, hourly, the newest point the latest price.
      const { body, status } = yield* getJson(server, "/api/sparklines?currency=usd")
      expect(status).toBe(200)
      const sparklines = body as { currency: string; range: string; series: ReadonlyArray<{ asset: string; points: ReadonlyArray<Point> }> }
      expect([sparklines.currency, sparklines.range, sparklines.series.map((s) => s.asset)]).toEqual(["usd", "24h", ["bitcoin", "ethereum"]])
      for (const series of sparklines.series) {
        expect(series.points.length).toBeGreaterThanOrEqual(24)
        expect(series.points.length).toBeLessThanOrEqual(26)
      }
      expect(sparklines.series[1]?.points.at(-1)).toEqual([later, 3_535])
    }))

  it.scopedLive("answers 400 naming what the server has for an unknown asset, currency or range", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ config, first: viewAt(Date.now()) })
      const cases = [
        ["/api/history?asset=dogecoin", /^unknown asset "dogecoin"; this server watches bitcoin, ethereum$/],
        ["/api/history?currency=chf", /^unknown currency "chf"; this server has usd, eur$/],
        ["/api/history?range=1y", /^unknown range "1y"; one of 24h, 7d, 30d$/],
        ["/api/history?range=", /^unknown range ""/],
        ["/api/sparklines?currency=jpy", /^unknown currency "jpy"/]
      ] as const
      for (const [route, message] of cases) {
        const { body, status } = yield* getJson(server, route)
        expect(status, route).toBe(400)
        expect(body).toMatchObject({ _tag: "BadRequest" })
        expect((body as { error: string }).error).toMatch(message)
      }
    }))

  it.scopedLive("records behind the broadcast: a store that hangs delays no round, and its reads are answered 503", () =>
    Effect.gen(function*() {
      const never = yield* Deferred.make<void>()
      let writes = 0
      const hung = Layer.succeed(
        HistoryStore,
        HistoryStore.of({
          kind: "sqlite",
          location: "test",
          write: () => Effect.zipRight(Effect.sync(() => writes++), Deferred.await(never)),
          read: () => Effect.fail(new HistoryStoreError({ store: "sqlite", operation: "read", reason: "Busy", cause: new Error("locked") })),
          trim: () => Effect.void
        })
      )
      const server = yield* TestServer.start({ config, historyStore: hung })
      const now = Date.now()
      yield* server.market.succeed(viewAt(now), seedsAt(now))
      yield* server.awaitSeq(1)
      yield* server.market.succeed(viewAt(now + 1_000, 1.02))
      const round = yield* server.updater.forceUpdate().pipe(Effect.timeout("2 seconds"))
      expect(round.snapshot.seq).toBe(2)
      expect(writes).toBe(1)
      const { body, status } = yield* getJson(server, "/api/history")
      expect(status).toBe(503)
      expect(body).toMatchObject({ _tag: "Unavailable", retry_after: 5 })
      expect((body as { error: string }).error).toMatch(/^price history unavailable: history sqlite read failed \(Busy\)/)
      expect(Option.isSome(server.state.current())).toBe(true)
      // Let the writes end, so that the shutdown's last write does not wait forever.
      yield* Deferred.succeed(never, undefined)
    }))
})
