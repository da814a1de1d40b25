/**
 * The watchlist over HTTP on the real server: `GET /api/dashboard?currency=` (the members of that
 * currency's frame, plus `age_seconds`, `stale` and `next_update_at`) and `GET /api/assets` (every
 * watched asset, missing or not, with its last good time).
 */
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect, Schedule } from "effect"
import type { MarketView } from "../../src/market/Watchlist.js"
import * as TestServer from "../support/TestServer.js"
import { makeView, watchlistView } from "../support/TestServer.js"
import * as WsClient from "../support/WsClient.js"
import { isType } from "../support/WsClient.js"

const ADMIN_TOKEN = "watchlist-admin-token"
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/

const json = (response: Response) => Effect.promise(() => response.json() as Promise<Record<string, unknown>>)

/** `GET path` once the schedule has decided when the next attempt is (just after a publish). */
const dashboard = (server: TestServer.TestServer, path: string) =>
  server.fetch(path).pipe(
    Effect.tap((response) => Effect.sync(() => expect(response.status).toBe(200))),
    Effect.flatMap(json),
    Effect.filterOrFail((body) => body.next_update_at !== null, () => "next_update_at not known yet"),
    Effect.retry(Schedule.spaced("10 millis")),
    Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("next_update_at stayed null") })
  )

/** A frame's members, without what belongs to the message rather than the view. */
const viewMembers = (frame: Record<string, unknown>) => {
  const { age_seconds: _a, message: _m, next_update_at: _n, seq: _s, source: _so, stale: _st, timestamp: _t, type: _ty, ...rest } = frame
  return rest
}

/**
 * Publishes `view`: the first one answers the scheduled round already waiting at the market
 * double; each later one is a force update (the admin's POST /api/dashboard/refresh).
 */
const publish = (server: TestServer.TestServer, view: MarketView) =>
  Effect.gen(function*() {
    yield* server.market.succeed(view)
    if (server.state.current()._tag === "None") return yield* Effect.asVoid(server.awaitSeq(1))
    const response = yield* server.fetch("/api/dashboard/refresh", { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
    expect(response.status).toBe(200)
  })

describe("GET /api/dashboard?currency=", () => {
  const config = { ASSETS: "bitcoin,ethereum", CURRENCIES: "usd,eur", ADMIN_TOKEN }

  it.scopedLive("has the members of that currency's frame, plus seq, age_seconds, stale and next_update_at", () =>
    Effect.gen(function*() {
      const first = watchlistView(["bitcoin", "ethereum"], ["usd", "eur"], { stale: { rsi: ["ethereum"] } })
      const server = yield* TestServer.start({ first, config })
      const socket = yield* WsClient.connect(`${server.wsUrl}?currency=eur`)
      const welcome = JSON.parse((yield* socket.next(isType("welcome"))).raw) as Record<string, unknown>

      const body = yield* dashboard(server, "/api/dashboard?currency=eur")
      expect(viewMembers(body)).toEqual(viewMembers(welcome))
      expect(body).toMatchObject({ currency: "eur", seq: 1, stale: true, stale_paths: ["assets.ethereum.rsi_14"] })
      expect((body.assets as ReadonlyArray<{ id: string; price: number }>).map((a) => [a.id, a.price])).toEqual([
        ["bitcoin", first.quotes["eur"]?.["bitcoin"]?.price],
        ["ethereum", first.quotes["eur"]?.["ethereum"]?.price]
      ])
      expect(body.age_seconds).toBeGreaterThanOrEqual(0)
      expect(body.age_seconds).toBeLessThan(5)
      expect(body.next_update_at).toMatch(ISO_UTC)
      expect(Date.parse(String(body.next_update_at)) - Date.now()).toBeGreaterThan(59 * 60_000)

      // Without a currency: the first of CURRENCIES. A fresh round without old values is not stale.
      yield* publish(server, watchlistView(["bitcoin", "ethereum"], ["usd", "eur"], { scale: 1.01 }))
      const usd = yield* dashboard(server, "/api/dashboard")
      expect(usd).toMatchObject({ currency: "usd", seq: 2, stale: false })
      expect("stale_paths" in usd).toBe(false)
      const update = JSON.parse((yield* socket.next(isType("dashboard_update"))).raw) as Record<string, unknown>
      expect(viewMembers(yield* dashboard(server, "/api/dashboard?currency=eur"))).toEqual(viewMembers(update))
    }))

  it.scopedLive("defaults to the first of CURRENCIES, over HTTP and WebSocket alike", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({
        first: watchlistView(["bitcoin"], ["eur", "usd"]),
        config: { CURRENCIES: "eur,usd" }
      })
      expect(yield* dashboard(server, "/api/dashboard")).toMatchObject({ currency: "eur" })
      const socket = yield* WsClient.connect(server.wsUrl)
      expect((yield* socket.next(isType("welcome"))).message).toMatchObject({ currency: "eur" })
    }))

  it.scopedLive("answers an unknown currency with 400 and a JSON error, with data or without", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ config })
      const check = Effect.gen(function*() {
        for (const currency of ["chf", "EUR", ""]) {
          const response = yield* server.fetch(`/api/dashboard?currency=${currency}`)
          expect(response.status, currency).toBe(400)
          expect(response.headers.get("content-type")).toContain("application/json")
          const body = yield* json(response)
          expect(body.error).toContain(JSON.stringify(currency))
          expect(body.error).toContain("usd, eur")
        }
      })
      yield* check
      // A known currency before any data is the usual 503.
      expect((yield* server.fetch("/api/dashboard?currency=eur")).status).toBe(503)
      yield* publish(server, watchlistView(["bitcoin", "ethereum"], ["usd", "eur"]))
      yield* check
      expect((yield* server.fetch("/api/dashboard?currency=eur")).status).toBe(200)
      // A repeated parameter counts by its first value, as /ws reads it.
      const repeated = yield* server.fetch("/api/dashboard?currency=chf&currency=eur")
      expect(repeated.status).toBe(400)
      expect((yield* json(repeated)).error).toContain("\"chf\"")
      expect(yield* dashboard(server, "/api/dashboard?currency=eur&currency=usd")).toMatchObject({ currency: "eur" })
    }))
})

describe("GET /api/assets", () => {
  it.scopedLive("lists every watched asset, in ASSETS order, with missing and last_good_at", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ config: { ASSETS: "bitcoin,notacoin,ethereum", CURRENCIES: "usd,eur", ADMIN_TOKEN } })
      const assets = Effect.gen(function*() {
        const response = yield* server.fetch("/api/assets")
        expect(response.status).toBe(200)
        expect(response.headers.get("cache-control")).toBe("no-store")
        return yield* json(response)
      })
      const unknown = { symbol: null, name: null, missing: false, last_good_at: null }
      expect(yield* assets).toEqual({
        currencies: ["usd", "eur"],
        assets: [{ id: "bitcoin", ...unknown }, { id: "notacoin", ...unknown }, { id: "ethereum", ...unknown }]
      })

      const t = (seconds: number) => DateTime.unsafeMake(Date.parse("2025-08-20T12:00:00Z") + seconds * 1000)
      // The provider knows bitcoin and ethereum, not notacoin; bitcoin's eur quote is the newer.
      yield* publish(
        server,
        makeView({
          bitcoin: { usd: { fetched_at: t(0) }, eur: { fetched_at: t(5) } },
          ethereum: { usd: { fetched_at: t(0) }, eur: { fetched_at: t(0) } }
        }, { missing: ["notacoin"] })
      )
      expect(yield* assets).toEqual({
        currencies: ["usd", "eur"],
        assets: [
          { id: "bitcoin", symbol: "btc", name: "Bitcoin", missing: false, last_good_at: "2025-08-20T12:00:05.000Z" },
          { id: "notacoin", symbol: null, name: null, missing: true, last_good_at: null },
          { id: "ethereum", symbol: "eth", name: "Ethereum", missing: false, last_good_at: "2025-08-20T12:00:00.000Z" }
        ]
      })

      // A round where ethereum's quotes kept their old values: its last good time stays.
      yield* publish(
        server,
        makeView({
          bitcoin: { usd: { fetched_at: t(60) }, eur: { fetched_at: t(60) } },
          ethereum: { usd: { fetched_at: t(0) }, eur: { fetched_at: t(0) } }
        }, { missing: ["notacoin"], stale: { quotes: [["usd", "ethereum"], ["eur", "ethereum"]] } })
      )
      const last = (yield* assets).assets as ReadonlyArray<{ id: string; last_good_at: string | null }>
      expect(last.map((a) => [a.id, a.last_good_at])).toEqual([
        ["bitcoin", "2025-08-20T12:01:00.000Z"],
        ["notacoin", null],
        ["ethereum", "2025-08-20T12:00:00.000Z"]
      ])
    }))
})
