/**
 * The watchlist end to end (issue 12, point 9 and its acceptance): the compiled binary watching 50
 * assets in 3 currencies against the fake upstream. Exact values per asset and currency over the
 * WebSocket and the HTTP API, the seed's summary of bitcoin unchanged for the clients of before,
 * partial failures per currency and per asset, an id the provider does not know, the call budget
 * at start-up, and the upstream calls of each round counted at the fake.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Database } from "bun:sqlite"
import { DateTime, Either } from "effect"
import * as path from "node:path"
import type { ServerMessage } from "../../src/realtime/Protocol.js"
import { ensureBinary, isType, openWs, type RunningBinary, startBinary, stopAllBinaries, tempDir, waitFor, type WsClient } from "../support/Binary.js"
import { defaultValues, Fault, generatedMarket, type MarketValues, startFakeUpstream } from "../support/FakeUpstream.js"
import { decodeLegacyServerMessage, LEGACY_SUMMARY_FIELDS } from "../support/LegacyProtocol.js"
import { assetOf, expectedAsset, expectedMarket, expectedRsi, marketOf, roundsSeen } from "./Market.js"

/** Bitcoin first (the seed's asset; it also gets its closes in the first round), then 49 more. */
const IDS = ["bitcoin", ...Array.from({ length: 49 }, (_, i) => `coin-${i + 1}`)]
const CURRENCIES = ["usd", "eur", "gbp"]

/** The 50 × 3 market, with the default bitcoin (the seed's magnitudes) in it. */
const watchlistMarket = (): MarketValues => {
  const generated = generatedMarket(IDS, CURRENCIES)
  return { ...generated, assets: { ...generated.assets, bitcoin: defaultValues.assets["bitcoin"]! } }
}

/**
 * Rounds every 2 s, so that several fit in a test. The key raises the call budget from 10 to 30 a
 * minute, and with it the chart calls a round may make while some assets have no closes yet:
 * 30 - (3 currencies + 1) = 26 in the first round and the other 24 in the second, so all 50 RSIs
 * are there after two rounds (keyless, 6 a round, it would take nine).
 */
const ENV = {
  ASSETS: IDS.join(","),
  CURRENCIES: CURRENCIES.join(","),
  UPDATE_INTERVAL: "2 seconds",
  COINGECKO_API_KEY: "CG-watchlist-e2e-key"
} as const

type Frame = Extract<ServerMessage, { type: "welcome" | "dashboard_update" }>
const isView = (m: ServerMessage): m is Frame => m.type === "welcome" || m.type === "dashboard_update"
/** A frame of the watchlist with every RSI known. */
const isComplete = (m: ServerMessage): m is Frame => isView(m) && m.assets.length === IDS.length && m.assets.every((a) => a.rsi_14 !== null)

/** Every asset of `ids` in `currency`, as dashcast must show it (without the provider's time). */
const expectedAssets = (v: MarketValues, currency: string, ids: ReadonlyArray<string> = IDS) => ids.map((id) => expectedAsset(v, id, currency))

const expectedMarketSide = (v: MarketValues, currency: string) => ({
  total_market_cap: v.totals[currency]?.marketCap,
  total_volume: v.totals[currency]?.volume,
  fear_greed_index: 61,
  fear_greed_label: "Greed"
})

interface DashboardBody {
  readonly currency: string
  readonly assets: ReadonlyArray<{ readonly id: string; readonly last_updated: string } & Record<string, unknown>>
  readonly market: unknown
  readonly data?: Record<string, unknown>
  readonly stale_fields?: ReadonlyArray<string>
  readonly stale_paths?: ReadonlyArray<string>
  readonly stale: boolean
  readonly seq: number
}

const dashboard = async (app: RunningBinary, currency: string): Promise<DashboardBody> => {
  const response = await app.fetch(`/api/dashboard?currency=${currency}`)
  expect(response.status).toBe(200)
  return (await response.json()) as DashboardBody
}

/** The seed's six market fields of a frame's or answer's `data`. */
const summaryOf = (data: unknown) => {
  if (typeof data !== "object" || data === null) throw new Error(`no seed summary: ${JSON.stringify(data)}`)
  return marketOf(data as Parameters<typeof marketOf>[0])
}

const openIn = (app: RunningBinary, currency: string): WsClient => openWs(`${app.wsUrl}?currency=${currency}`)

/** The binary, started and ready (a first round is published), with room for a busy machine. */
const start = async (env: Readonly<Record<string, string>>): Promise<RunningBinary> => {
  const app = await startBinary({ env, startTimeoutMs: 30_000 })
  await waitFor(() => app.fetch("/readyz").then((r) => (r.ok ? true : undefined), () => undefined), "GET /readyz 200", 30_000)
  return app
}

beforeAll(() => ensureBinary(), 120_000)
afterAll(stopAllBinaries)

// One test at a time: each runs a binary with 50 assets against a fake in this process, on a
// machine that may be busy with other work.
describe("a 50-asset × 3-currency watchlist, end to end", () => {
  it("shows every asset in every currency exactly, keeps the seed's summary of bitcoin, logs its call budget, and makes 1 call per currency + 1 a round", async () => {
    const fake = startFakeUpstream({ values: watchlistMarket() })
    try {
      await using app = await start({ ...fake.env, ...ENV })
      const v = fake.values()

      // The call budget at start-up: 1800 rounds an hour of 4 calls, and the 50 assets' closes hourly.
      const budget = app.logs().filter((l) => /CoinGecko calls (an hour|a minute)/.test(String(l.message)))
      expect(budget.map((l) => [l.logLevel, l.message])).toEqual([
        [
          "INFO",
          "upstream call budget: about 7250 CoinGecko calls an hour (4 a round every 2s, and each of 50 assets' daily closes once an hour), at most 1 an hour to alternative.me; API key set"
        ],
        [
          "WARN",
          "about 120.8 CoinGecko calls a minute is more than the 30 a minute that the Demo plan allows: expect 429s; raise UPDATE_INTERVAL, watch fewer CURRENCIES"
        ]
      ])
      expect(budget[0]?.annotations).toMatchObject({ assets: 50, currencies: 3, coingecko_calls_per_hour: 7250, api_key: true })

      using eur = openIn(app, "eur")
      using today = openWs(app.wsUrl)
      const complete = await eur.waitFor(isComplete, { label: "a eur frame with all 50 RSIs", timeoutMs: 20_000 })
      if (!isView(complete.message)) throw new Error("unreachable")
      // All 50 RSIs came within two rounds.
      expect(complete.message.seq).toBeLessThanOrEqual(2)

      // Over /ws?currency=eur: every asset in euros, in ASSETS order, the market in euros, nothing stale.
      const frame = complete.message
      expect(frame.currency).toBe("eur")
      expect(frame.assets.map(assetOf)).toEqual(expectedAssets(v, "eur"))
      expect(frame.market).toEqual(expectedMarketSide(v, "eur"))
      expect(summaryOf(frame.data)).toEqual(expectedMarket(v, "eur"))
      expect(frame.stale_fields).toBeUndefined()
      expect(frame.stale_paths).toBeUndefined()
      // Each asset's time is the provider's (the fake says 30 s before it answered).
      for (const a of frame.assets) expect(Math.abs(DateTime.toEpochMillis(a.last_updated) - (Date.now() - 30_000))).toBeLessThan(10_000)

      // GET /api/dashboard?currency=usd and gbp: the same members in their currencies.
      for (const currency of ["usd", "gbp"]) {
        const body = await dashboard(app, currency)
        expect(body.currency).toBe(currency)
        expect(body.assets.map(assetOf)).toEqual(expectedAssets(v, currency))
        expect(body.market).toEqual(expectedMarketSide(v, currency))
        expect(summaryOf(body.data)).toEqual(expectedMarket(v, currency))
        expect(body.stale).toBe(false)
        expect(body.stale_paths).toBeUndefined()
      }
      // The same asset differs between currencies by the fake's ratios: no currency is a copy of another.
      const usdBody = await dashboard(app, "usd")
      expect(usdBody.assets[10]?.["price"]).not.toBe(frame.assets[10]?.price)
      const unknown = await app.fetch("/api/dashboard?currency=jpy")
      expect(unknown.status).toBe(400)
      expect(((await unknown.json()) as { error: string }).error).toBe("unknown currency \"jpy\"; this server has usd, eur, gbp")

      // A client of today (no currency, reads only the seed's members) decodes every frame with the
      // protocol of before, and its summary is bitcoin's in the first currency, the seven fields exactly.
      await today.waitFor(isComplete, { label: "a default frame with all 50 RSIs", timeoutMs: 20_000 })
      expect(today.frames().length).toBeGreaterThan(0)
      for (const { raw } of today.frames()) {
        const legacy = decodeLegacyServerMessage(raw)
        if (Either.isLeft(legacy)) throw new Error(`a frame the clients of before cannot read: ${raw}`)
        const message = legacy.right
        if (message.type !== "welcome" && message.type !== "dashboard_update") continue
        expect(Object.keys(JSON.parse(raw).data).sort()).toEqual([...LEGACY_SUMMARY_FIELDS].sort())
        expect(marketOf(message.data)).toEqual(expectedMarket(v, "usd"))
        expect((JSON.parse(raw) as { currency: string }).currency).toBe("usd")
      }

      // The calls of each round, counted at the fake over a few more rounds.
      // (The seventh has begun, so the first six are complete.)
      await waitFor(() => (roundsSeen(fake.requests(), 3).length >= 7 ? true : undefined), "seven rounds at the fake", 30_000, 50)
      const counts = roundsSeen(fake.requests(), 3).slice(0, 6).map((round) => ({
        coins_markets: round.filter((r) => r.endpoint === "coins_markets").map((r) => r.target).sort(),
        global: round.filter((r) => r.endpoint === "global").length,
        fear_greed: round.filter((r) => r.endpoint === "fear_greed").length,
        market_chart: round.filter((r) => r.endpoint === "market_chart").length,
        other: round.filter((r) => r.endpoint === undefined).length
      }))
      for (const [i, round] of counts.entries()) {
        // 1 per currency + 1, every round; never one per asset.
        expect(round.coins_markets, `round ${i + 1}`).toEqual(["eur", "gbp", "usd"])
        expect(round.global, `round ${i + 1}`).toBe(1)
        expect(round.other, `round ${i + 1}`).toBe(0)
        // The index once (its next value is half a day away: asked again within the hour at most).
        expect(round.fear_greed, `round ${i + 1}`).toBe(i === 0 ? 1 : 0)
      }
      // The closes: 26 + 24 while some are missing, then none (each is due again in an hour).
      expect(counts.map((c) => c.market_chart)).toEqual([26, 24, 0, 0, 0, 0])
      // Each asset's closes asked for exactly once, in the first currency.
      const charts = fake.requestsTo("market_chart")
      expect(charts.map((r) => r.target).sort()).toEqual([...IDS].sort())
      for (const r of charts) expect(r.query["vs_currency"]).toBe("usd")
      // Every coins/markets call names all 50 ids and asks for one page big enough for them.
      for (const r of fake.requestsTo("coins_markets")) {
        expect(r.query["ids"]).toBe(IDS.join(","))
        expect(r.query["per_page"]).toBe("250")
      }
    } finally {
      await fake.stop()
    }
  }, 90_000)

  it("one currency's call failing: that currency's quotes keep their last values and are stale, the others are fresh", async () => {
    const fake = startFakeUpstream({ values: watchlistMarket() })
    try {
      await using app = await start({ ...fake.env, ...ENV })
      using usd = openIn(app, "usd")
      using gbp = openIn(app, "gbp")
      await gbp.waitFor(isComplete, { label: "a complete gbp frame", timeoutMs: 20_000 })
      const before = fake.values()

      // New prices everywhere, and gbp's call fails from now on, twice.
      for (const id of ["bitcoin", "coin-5", "coin-33"]) {
        const asset = fake.values().assets[id]!
        fake.setAsset(id, { prices: Object.fromEntries(Object.entries(asset.prices).map(([c, p]) => [c, Math.round(p * 1.1 * 100) / 100])) })
      }
      const after = fake.values()
      fake.fail("coins_markets", Fault.ServerError({}), { target: "gbp", times: 2 })
      const stale = await gbp.waitFor((m) => isView(m) && (m.stale_paths ?? []).length > 0, { label: "a gbp frame with stale values", timeoutMs: 15_000 })
      if (!isView(stale.message)) throw new Error("unreachable")
      const seq = stale.message.seq

      // In gbp: every quote as it was, and named stale; RSI (from usd) is not fed by this call: it is new.
      expect(stale.message.stale_paths).toEqual(["currencies.gbp"])
      expect(stale.message.stale_fields).toEqual(["btc_price", "btc_change_24h"])
      expect(stale.message.assets.map(assetOf)).toEqual(
        IDS.map((id) => ({ ...expectedAsset(before, id, "gbp"), rsi_14: expectedRsi(after, id) }))
      )
      expect(summaryOf(stale.message.data)).toEqual({ ...expectedMarket(before, "gbp"), rsi_14: expectedRsi(after, "bitcoin") })
      // In usd, the same round: every quote fresh, nothing stale.
      const fresh = await usd.waitFor((m) => isView(m) && m.seq === seq, { label: `the usd frame of round ${seq}` })
      if (!isView(fresh.message)) throw new Error("unreachable")
      expect(fresh.message.stale_paths).toBeUndefined()
      expect(fresh.message.stale_fields).toBeUndefined()
      expect(fresh.message.assets.map(assetOf)).toEqual(expectedAssets(after, "usd"))
      expect(summaryOf(fresh.message.data)).toEqual(expectedMarket(after, "usd"))
      // GET /api/dashboard agrees (the call fails in this round and the next).
      const eurBody = await dashboard(app, "eur")
      expect(eurBody.stale).toBe(false)
      expect(eurBody.assets.map(assetOf)).toEqual(expectedAssets(after, "eur"))
      const gbpBody = await dashboard(app, "gbp")
      expect(gbpBody.seq).toBeLessThanOrEqual(seq + 1)
      expect(gbpBody.stale).toBe(true)
      expect(gbpBody.stale_paths).toEqual(["currencies.gbp"])
      // The schedule counts the round failed and says why, to every currency's clients.
      const error = await usd.waitFor(isType("error"), { label: "the error frame in usd" })
      expect(error.message.type === "error" && error.message.error).toBe("Failed to fetch market data: coins_markets(gbp): HTTP 500")
      await gbp.waitFor(isType("error"), { label: "the error frame in gbp" })

      // When the call answers again, gbp is fresh.
      const healed = await gbp.waitFor((m) => isView(m) && m.seq > seq && m.stale_paths === undefined, {
        label: "a fresh gbp frame",
        timeoutMs: 15_000
      })
      if (!isView(healed.message)) throw new Error("unreachable")
      expect(healed.message.assets.map(assetOf)).toEqual(expectedAssets(after, "gbp"))
      expect(fake.requestsTo("coins_markets", "gbp").length).toBeGreaterThanOrEqual(5)
    } finally {
      await fake.stop()
    }
  }, 90_000)

  it("one asset's chart call failing: only its RSI is stale, and it stays live on its older closes", async () => {
    const fake = startFakeUpstream({ values: watchlistMarket() })
    try {
      const cachePath = path.join(tempDir(), "cache.sqlite")
      const env = { ...fake.env, ...ENV, CACHE_PATH: cachePath }
      {
        await using first = await start(env)
        using client = openWs(first.wsUrl)
        await client.waitFor(isComplete, { label: "all 50 RSIs", timeoutMs: 20_000 })
        expect(await first.stop()).toBe(0)
      }
      // Each asset's closes are due again an hour after they came. Instead of waiting an hour,
      // coin-7's are made due in the cache the next process starts from.
      const db = new Database(cachePath)
      try {
        const changed = db.run("UPDATE cache_v1 SET json = json_set(json, '$.next_due_at', 0) WHERE name = 'market:closes:coin-7'")
        expect(changed.changes).toBe(1)
      } finally {
        db.close()
      }
      fake.fail("market_chart", Fault.ServerError({}), { target: "coin-7" })
      // A new live price: the RSI keeps following it on the closes it has.
      const coin7 = fake.values().assets["coin-7"]!
      fake.setAsset("coin-7", { prices: Object.fromEntries(Object.entries(coin7.prices).map(([c, p]) => [c, Math.round(p * 1.08 * 100) / 100])) })
      const chartsBefore = fake.requestsTo("market_chart").length

      await using app = await start(env)
      using usd = openIn(app, "usd")
      using eur = openIn(app, "eur")
      const stale = await eur.waitFor((m) => m.type === "dashboard_update" && (m.stale_paths ?? []).length > 0, {
        label: "an eur update with a stale RSI",
        timeoutMs: 15_000
      })
      if (!isView(stale.message)) throw new Error("unreachable")
      const v = fake.values()
      expect(stale.message.stale_paths).toEqual(["assets.coin-7.rsi_14"])
      expect(stale.message.stale_fields).toBeUndefined()
      // Every value exact: coin-7's price is fresh, and its RSI is the old closes with the new price.
      expect(stale.message.assets.map(assetOf)).toEqual(expectedAssets(v, "eur"))
      expect(stale.message.assets.find((a) => a.id === "coin-7")?.rsi_14).toBe(expectedRsi(v, "coin-7"))
      const seq = stale.message.seq
      const inUsd = await usd.waitFor((m) => isView(m) && m.seq === seq, { label: "the same round in usd" })
      expect(isView(inUsd.message) && inUsd.message.stale_paths).toEqual(["assets.coin-7.rsi_14"])
      const body = await dashboard(app, "gbp")
      expect(body.stale_paths).toEqual(["assets.coin-7.rsi_14"])
      expect(body.stale).toBe(true)
      // Only coin-7's closes were asked for again (the others came from the cache), once a round.
      const charts = fake.requestsTo("market_chart").slice(chartsBefore)
      expect(charts.length).toBeGreaterThanOrEqual(1)
      expect(new Set(charts.map((r) => r.target))).toEqual(new Set(["coin-7"]))
      const error = await eur.waitFor(isType("error"), { label: "the error frame" })
      expect(error.message.type === "error" && error.message.error).toBe("Failed to fetch market data: market_chart(coin-7): HTTP 500")
    } finally {
      await fake.stop()
    }
  }, 90_000)

  it("an id the provider does not know: listed missing in GET /api/assets, in no frame, warned about once", async () => {
    const fake = startFakeUpstream({ values: watchlistMarket() })
    try {
      const ids = [IDS[0]!, "no-such-coin", ...IDS.slice(1)]
      await using app = await start({ ...fake.env, ...ENV, ASSETS: ids.join(",") })
      using usd = openIn(app, "usd")
      using gbp = openIn(app, "gbp")
      await usd.waitFor((m) => isView(m) && m.seq >= 4, { label: "four rounds", timeoutMs: 15_000 })
      const v = fake.values()

      const assets = (await (await app.fetch("/api/assets")).json()) as {
        currencies: ReadonlyArray<string>
        assets: ReadonlyArray<{ id: string; symbol: string | null; name: string | null; missing: boolean; last_good_at: string | null }>
      }
      expect(assets.currencies).toEqual(CURRENCIES)
      expect(assets.assets.map((a) => a.id)).toEqual(ids)
      expect(assets.assets[1]).toEqual({ id: "no-such-coin", symbol: null, name: null, missing: true, last_good_at: null })
      for (const a of assets.assets.filter((a) => a.id !== "no-such-coin")) {
        expect(a).toMatchObject({ symbol: v.assets[a.id]?.symbol, name: v.assets[a.id]?.name, missing: false })
        expect(Math.abs(Date.parse(a.last_good_at ?? "") - Date.now())).toBeLessThan(10_000)
      }

      // In no frame of any currency, and the others all there, exactly.
      for (const client of [usd, gbp]) {
        for (const { raw } of client.frames()) expect(raw).not.toContain("no-such-coin")
      }
      const last = usd.messages().filter(isView).at(-1)
      expect(last?.assets.map(assetOf)).toEqual(expectedAssets(v, "usd"))
      expect(last?.stale_paths).toBeUndefined()
      // Asked for in every markets call (that is how it is known to be unknown), never charted.
      expect(fake.requestsTo("coins_markets").every((r) => r.query["ids"] === ids.join(","))).toBe(true)
      expect(fake.requestsTo("market_chart", "no-such-coin")).toEqual([])
      const warnings = app.logs().filter((l) => l.logLevel === "WARN" && String(l.message).includes("no-such-coin"))
      expect(warnings.map((l) => l.message)).toEqual(["the provider does not know the coin id \"no-such-coin\" (ASSETS); it is listed as missing"])
      expect(warnings[0]?.annotations).toMatchObject({ asset: "no-such-coin" })
      // An unknown id is not a failure: no error frame.
      expect(usd.messages().filter(isType("error"))).toEqual([])
    } finally {
      await fake.stop()
    }
  }, 90_000)
})

