/**
 * The watchlist's protocol on the real server (docs/ARCHITECTURE.md, "Protocol"): a socket's
 * currency from `/ws?currency=`, switching with `subscribe`, `request_update` and the drain rule in
 * the socket's currency, and one Bun topic per currency that gets each update's frame once.
 */
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect, Option } from "effect"
import { AssetInfo, MarketView } from "../../src/market/Watchlist.js"
import { topicOf } from "../../src/realtime/Broadcaster.js"
import * as TestServer from "../support/TestServer.js"
import { watchlistView } from "../support/TestServer.js"
import * as WsClient from "../support/WsClient.js"
import { isType } from "../support/WsClient.js"

const ADMIN_TOKEN = "currencies-admin-token"
const ASSETS = ["bitcoin", "ethereum", "solana"]
const CURRENCIES = ["usd", "eur", "gbp"]
const config = { ASSETS: ASSETS.join(","), CURRENCIES: CURRENCIES.join(","), ADMIN_TOKEN }

/** Round `n` of the market: every asset in every currency, prices moved by n %. */
const round = (n: number) => watchlistView(ASSETS, CURRENCIES, { scale: 1 + n / 100 })

/** What a frame of `currency` must say of `view`'s assets, in `ASSETS` order. */
const assetsIn = (view: MarketView, currency: string) =>
  view.assets.flatMap((info) => {
    const quote = view.quotes[currency]?.[info.id]
    return quote === undefined ? [] : [{
      id: info.id,
      symbol: info.symbol,
      name: info.name,
      price: quote.price,
      change_24h: quote.change_24h,
      market_cap: quote.market_cap,
      volume_24h: quote.volume_24h,
      rsi_14: view.rsi[info.id] ?? null,
      last_updated: DateTime.formatIso(quote.last_updated)
    }]
  })

const marketIn = (view: MarketView, currency: string) => ({
  total_market_cap: view.totals[currency]?.total_market_cap,
  total_volume: view.totals[currency]?.total_volume,
  fear_greed_index: Option.getOrThrow(view.fear_greed).value,
  fear_greed_label: Option.getOrThrow(view.fear_greed).label
})

const priceOf = (view: MarketView, currency: string, asset: string) => view.quotes[currency]?.[asset]?.price

/** Runs a force update that publishes `view` (the admin's POST /api/dashboard/refresh). */
const publish = (server: TestServer.TestServer, view: MarketView) =>
  Effect.gen(function*() {
    yield* server.market.succeed(view)
    const response = yield* server.fetch("/api/dashboard/refresh", { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
    expect(response.status).toBe(200)
  })

const parsed = (frame: WsClient.Frame) => JSON.parse(frame.raw) as Record<string, unknown>

/** The request headers of a WebSocket upgrade, for plain `fetch` probes of `/ws`. */
const UPGRADE_HEADERS = {
  connection: "Upgrade",
  upgrade: "websocket",
  "sec-websocket-version": "13",
  "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="
}

describe("a socket's currency", () => {
  it.scopedLive("/ws?currency=eur gets eur's welcome and updates; /ws gets the first of CURRENCIES", () =>
    Effect.gen(function*() {
      const first = round(0)
      const server = yield* TestServer.start({ first, config })
      const eur = yield* WsClient.connect(`${server.wsUrl}?currency=eur`)
      const plain = yield* WsClient.connect(server.wsUrl)

      const welcome = parsed(yield* eur.next(isType("welcome")))
      expect(welcome.currency).toBe("eur")
      expect(welcome.assets).toEqual(assetsIn(first, "eur"))
      expect(welcome.market).toEqual(marketIn(first, "eur"))
      expect(welcome.data).toMatchObject({ btc_price: priceOf(first, "eur", "bitcoin"), market_cap: first.totals["eur"]?.total_market_cap })
      const usdWelcome = parsed(yield* plain.next(isType("welcome")))
      expect(usdWelcome.currency).toBe("usd")
      expect(usdWelcome.assets).toEqual(assetsIn(first, "usd"))

      const second = round(1)
      yield* publish(server, second)
      const update = parsed(yield* eur.next(isType("dashboard_update")))
      expect(update).toMatchObject({ currency: "eur", seq: 2, source: "force_update" })
      expect(update.assets).toEqual(assetsIn(second, "eur"))
      expect(update.market).toEqual(marketIn(second, "eur"))
      expect(update.data).toMatchObject({ btc_price: priceOf(second, "eur", "bitcoin") })
      expect(parsed(yield* plain.next(isType("dashboard_update")))).toMatchObject({ currency: "usd", seq: 2 })
      // Nothing of another currency reached either socket.
      expect(yield* eur.sync()).toEqual([])
      expect(yield* plain.sync()).toEqual([])
    }))

  it.scopedLive("an unknown currency in the URL is a 400 with a JSON error, before any upgrade", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: round(0), config })
      for (const currency of ["chf", "EUR", "", "usd,eur"]) {
        const response = yield* server.fetch(`/ws?currency=${encodeURIComponent(currency)}`, { headers: UPGRADE_HEADERS })
        expect(response.status, currency).toBe(400)
        expect(response.headers.get("content-type")).toContain("application/json")
        const body = (yield* Effect.promise(() => response.json())) as { error: string }
        expect(body.error).toContain(JSON.stringify(currency))
        expect(body.error).toContain("usd, eur, gbp")
        const refused = yield* Effect.either(WsClient.connect(`${server.wsUrl}?currency=${encodeURIComponent(currency)}`))
        expect(refused._tag, currency).toBe("Left")
      }
      expect(server.server.connections()).toBe(0)
    }))

  it.scopedLive("subscribe answers a fresh welcome in the new currency, and later updates come in it on the same connection", () =>
    Effect.gen(function*() {
      const first = round(0)
      const server = yield* TestServer.start({ first, config })
      const client = yield* WsClient.connect(server.wsUrl)
      expect(parsed(yield* client.next(isType("welcome"))).currency).toBe("usd")

      yield* client.send(JSON.stringify({ type: "subscribe", currency: "eur" }))
      const welcome = yield* client.next()
      expect(welcome.message).toMatchObject({ type: "welcome", currency: "eur", seq: 1, stale: false })
      expect(parsed(welcome).assets).toEqual(assetsIn(first, "eur"))
      expect(parsed(welcome).market).toEqual(marketIn(first, "eur"))

      const second = round(1)
      yield* publish(server, second)
      const update = yield* client.next()
      expect(update.message).toMatchObject({ type: "dashboard_update", currency: "eur", seq: 2 })
      expect(parsed(update).assets).toEqual(assetsIn(second, "eur"))
      expect(yield* client.sync()).toEqual([])

      // And back: a welcome of the latest snapshot in usd, then usd updates only.
      yield* client.send(JSON.stringify({ type: "subscribe", currency: "usd" }))
      expect((yield* client.next()).message).toMatchObject({ type: "welcome", currency: "usd", seq: 2 })
      yield* publish(server, round(2))
      expect((yield* client.next()).message).toMatchObject({ type: "dashboard_update", currency: "usd", seq: 3 })
      expect(yield* client.sync()).toEqual([])
      expect(client.closeInfo()).toBeUndefined()
      expect(server.server.connections()).toBe(1)
    }))

  it.scopedLive("subscribe to an unknown currency is answered with an error; the connection stays on its currency", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: round(0), config })
      const client = yield* WsClient.connect(`${server.wsUrl}?currency=gbp`)
      yield* client.next(isType("welcome"))

      for (const currency of ["chf", "EUR"]) {
        yield* client.send(JSON.stringify({ type: "subscribe", currency }))
        const refused = yield* client.next()
        expect(refused.message.type).toBe("error")
        if (refused.message.type !== "error") return
        expect(refused.message.error).toContain(JSON.stringify(currency))
        expect(refused.message.error).toContain("usd, eur, gbp")
      }
      yield* publish(server, round(1))
      expect((yield* client.next()).message).toMatchObject({ type: "dashboard_update", currency: "gbp", seq: 2 })
      expect(client.closeInfo()).toBeUndefined()
    }))

  it.scopedLive("request_update is answered in the socket's currency, before and after a switch, to that socket only", () =>
    Effect.gen(function*() {
      const first = round(0)
      const server = yield* TestServer.start({ first, config })
      const asker = yield* WsClient.connect(`${server.wsUrl}?currency=gbp`)
      const bystander = yield* WsClient.connect(`${server.wsUrl}?currency=gbp`)
      yield* asker.next(isType("welcome"))
      yield* bystander.next(isType("welcome"))

      yield* asker.send(JSON.stringify({ type: "request_update" }))
      const gbp = yield* asker.next()
      expect(gbp.message).toMatchObject({ type: "dashboard_update", source: "request_update", currency: "gbp", seq: 1 })
      expect(parsed(gbp).assets).toEqual(assetsIn(first, "gbp"))

      yield* asker.send(JSON.stringify({ type: "subscribe", currency: "eur" }))
      yield* asker.next(isType("welcome"))
      yield* asker.send(JSON.stringify({ type: "request_update" }))
      const eur = yield* asker.next()
      expect(eur.message).toMatchObject({ type: "dashboard_update", source: "request_update", currency: "eur", seq: 1 })
      expect(parsed(eur).assets).toEqual(assetsIn(first, "eur"))
      expect(yield* bystander.sync()).toEqual([])
    }))

  it.scopedLive("a socket that missed updates while over its backpressure limit gets its currency's latest frame when it drains", () =>
    Effect.gen(function*() {
      // Names of 400 kB make each frame about 1 MB, so that a few updates fill the socket's buffers.
      const big = (n: number) => {
        const view = watchlistView(["bitcoin", "ethereum"], ["usd", "eur"], { scale: 1 + n / 100 })
        return MarketView.make({
          ...view,
          assets: view.assets.map((a) => AssetInfo.make({ ...a, name: `${a.name} ${"x".repeat(400_000)}` }))
        })
      }
      const server = yield* TestServer.start({
        first: big(0),
        config: { ASSETS: "bitcoin,ethereum", CURRENCIES: "usd,eur", ADMIN_TOKEN }
      })
      const slow = yield* WsClient.connectPausable(`${server.wsUrl}?currency=eur`)
      yield* slow.until((texts) => texts.length > 0, "the welcome")
      yield* slow.pause

      // Update until Bun has dropped three eur frames for the slow socket (publish returns 0).
      const eurTopic = topicOf("eur")
      const dropped: Array<TestServer.Published> = []
      for (let n = 1; n <= 40 && dropped.length < 3; n++) {
        yield* publish(server, big(n))
        const last = server.published().filter((p) => p.topic === eurTopic).at(-1)
        if (last?.result === 0) dropped.push(last)
      }
      const seqOf = (frame: string) => (JSON.parse(frame) as { seq: number }).seq
      const latest = dropped.at(-1)
      if (dropped.length < 3 || latest === undefined) return expect.fail("the slow socket never went over its backpressure limit")

      yield* slow.resume
      const texts = yield* slow.until((texts) => texts.includes(latest.frame), `the dropped update seq=${seqOf(latest.frame)} after the drain`)
      const frames = texts.map((t) => JSON.parse(t) as { type: string; currency: string; seq: number })
      expect(frames.every((f) => f.currency === "eur")).toBe(true)
      // The frames dropped before the latest stay missed; the latest comes, as the last frame.
      const seqs = frames.filter((f) => f.type === "dashboard_update").map((f) => f.seq)
      for (const missed of dropped.slice(0, -1)) expect(seqs).not.toContain(seqOf(missed.frame))
      expect(texts.at(-1)).toBe(latest.frame)
    }))
})

describe("one topic per currency", () => {
  it.scopedLive("each update is published once per currency, whatever the number of sockets, and each socket gets its topic's frame", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: round(0), config })
      const topics = CURRENCIES.map(topicOf).sort()
      const publishedAround = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        Effect.gen(function*() {
          const mark = server.published().length
          yield* effect
          return server.published().slice(mark)
        })

      // One socket.
      const lone = yield* WsClient.connect(server.wsUrl)
      yield* lone.next(isType("welcome"))
      const once = yield* publishedAround(publish(server, round(1)))
      expect(once.map((p) => p.topic).sort()).toEqual(topics)
      expect((yield* lone.next(isType("dashboard_update"))).raw).toBe(once.find((p) => p.topic === topicOf("usd"))?.frame)

      // Seven sockets: three in eur, three in usd, one switched to gbp.
      const sockets = [lone]
      for (const currency of ["eur", "eur", "eur", "usd", "usd"]) {
        const client = yield* WsClient.connect(`${server.wsUrl}?currency=${currency}`)
        yield* client.next(isType("welcome"))
        sockets.push(client)
      }
      const switched = yield* WsClient.connect(server.wsUrl)
      yield* switched.next(isType("welcome"))
      yield* switched.send(JSON.stringify({ type: "subscribe", currency: "gbp" }))
      yield* switched.next(isType("welcome"))
      sockets.push(switched)

      const many = yield* publishedAround(publish(server, round(2)))
      expect(many.map((p) => p.topic).sort()).toEqual(topics)
      const frameOf = (currency: string) => many.find((p) => p.topic === topicOf(currency))?.frame
      const received: Array<string> = []
      for (const client of sockets) {
        const update = yield* client.next(isType("dashboard_update"))
        // The very string Bun published on the socket's topic: one encoding per currency.
        expect(update.raw).toBe(frameOf(update.message.currency))
        expect(yield* client.sync()).toEqual([])
        received.push(update.message.currency)
      }
      expect(received.sort()).toEqual(["eur", "eur", "eur", "gbp", "usd", "usd", "usd"])

      // A failed round: one error frame per topic, the same to everyone.
      const failed = yield* publishedAround(Effect.gen(function*() {
        yield* server.market.fail(TestServer.makeUpstreamError(500))
        const response = yield* server.fetch("/api/dashboard/refresh", { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
        expect(response.status).toBe(502)
        for (const client of sockets) yield* client.next(isType("error"))
      }))
      expect(failed.map((p) => p.topic).sort()).toEqual(topics)
      expect(new Set(failed.map((p) => p.frame)).size).toBe(1)
    }))
})
