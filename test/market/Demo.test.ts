/**
 * The simulated feed behind `DEMO` (src/market/Demo.ts): every watched asset in every currency,
 * plausible, the same walk for the same seed, RSI-14 in range, and fixed exchange ratios.
 */
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer, Option, Schema, TestClock } from "effect"
import { AppConfig } from "../../src/Config.js"
import { MAX_PRICE } from "../../src/market/Bounds.js"
import { DemoMarketDataLive } from "../../src/market/Demo.js"
import { MarketData } from "../../src/market/MarketData.js"
import { MarketView } from "../../src/market/Watchlist.js"
import { fearGreedLabel } from "../support/FakeUpstream.js"

const ASSETS = ["bitcoin", "ethereum", "tether", "shiba-inu", "my-own-token", "zz.coin_9"]
const CURRENCIES = ["usd", "eur", "jpy", "xyz"]

/** `rounds` views of the demo feed for `seed`, one a TestClock minute apart. */
const demoRounds = (seed: number, rounds: number) =>
  Effect.gen(function*() {
    yield* TestClock.setTime(Date.parse("2025-07-25T14:54:00Z"))
    const market = yield* MarketData
    const views: Array<MarketView> = []
    for (let i = 0; i < rounds; i++) {
      const result = yield* market.fetch(Option.none())
      expect(result.failure).toEqual(Option.none())
      expect(result.problems).toEqual([])
      views.push(result.view)
      yield* TestClock.adjust("1 minute")
    }
    return views
  }).pipe(
    Effect.provide(
      DemoMarketDataLive(seed).pipe(
        Layer.provide(AppConfig.Default),
        Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map([
          ["DEMO", "true"],
          ["ASSETS", ASSETS.join(",")],
          ["CURRENCIES", CURRENCIES.join(",")]
        ]))))
      )
    )
  )

const encodeView = Schema.encodeSync(MarketView)

/** The first two rounds' full results (seeds included), at a fixed time. */
const firstRounds = (seed: number) =>
  Effect.gen(function*() {
    yield* TestClock.setTime(Date.parse("2025-07-25T14:54:00Z"))
    const market = yield* MarketData
    const first = yield* market.fetch(Option.none())
    yield* TestClock.adjust("5 seconds")
    const second = yield* market.fetch(Option.some(first.view))
    return { first, second }
  }).pipe(
    Effect.provide(
      DemoMarketDataLive(seed).pipe(
        Layer.provide(AppConfig.Default),
        Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map([
          ["DEMO", "true"],
          ["ASSETS", ASSETS.join(",")],
          ["CURRENCIES", CURRENCIES.join(",")]
        ]))))
      )
    )
  )

describe("Demo", () => {
  it.effect("quotes every asset in every currency, with totals, the index and every RSI, nothing stale or missing", () =>
    Effect.gen(function*() {
      for (const view of yield* demoRounds(1, 5)) {
        expect(view.assets.map((a) => a.id)).toEqual(ASSETS)
        expect(view.missing).toEqual([])
        for (const currency of CURRENCIES) {
          expect(Object.keys(view.quotes[currency] ?? {})).toEqual(ASSETS)
          expect(view.totals[currency]).toBeDefined()
        }
        expect(Object.keys(view.rsi)).toEqual(ASSETS)
        expect(view.stale.isEmpty).toBe(true)
        const fearGreed = Option.getOrThrow(view.fear_greed)
        expect(fearGreed.label).toBe(fearGreedLabel(fearGreed.value))
        // It decodes as a snapshot's view does (every bound of Bounds.ts holds).
        expect(Schema.decodeUnknownSync(MarketView)(encodeView(view))).toEqual(view)
      }
    }))

  it.effect("is plausible: well-known ids near their magnitudes, stable coins near 1, others within a cent and a hundred dollars", () =>
    Effect.gen(function*() {
      const views = yield* demoRounds(2, 30)
      for (const view of views) {
        const usd = (id: string) => view.quotes["usd"]?.[id]?.price ?? Number.NaN
        expect(usd("bitcoin")).toBeGreaterThan(62_000 / 3)
        expect(usd("bitcoin")).toBeLessThan(62_000 * 3)
        expect(usd("ethereum")).toBeGreaterThan(1_000)
        expect(usd("ethereum")).toBeLessThan(9_000)
        expect(usd("tether")).toBeGreaterThan(0.95)
        expect(usd("tether")).toBeLessThan(1.05)
        expect(usd("shiba-inu")).toBeLessThan(0.001)
        for (const id of ["my-own-token", "zz.coin_9"]) {
          expect(usd(id)).toBeGreaterThan(0.01 / 3)
          expect(usd(id)).toBeLessThan(100 * 3)
        }
        for (const currency of CURRENCIES) {
          for (const id of ASSETS) {
            const quote = view.quotes[currency]?.[id]
            expect(quote?.price).toBeLessThanOrEqual(MAX_PRICE)
            expect(Math.abs(quote?.change_24h ?? Number.NaN)).toBeLessThan(50)
            expect(quote?.market_cap).toBeGreaterThan(0)
            expect(quote?.volume_24h).toBeGreaterThan(0)
            expect(quote?.volume_24h).toBeLessThan(quote?.market_cap ?? 0)
          }
        }
        expect(view.assets.find((a) => a.id === "bitcoin")).toEqual({ id: "bitcoin", symbol: "btc", name: "Bitcoin" })
        expect(view.assets.find((a) => a.id === "my-own-token")).toEqual({ id: "my-own-token", symbol: "myow", name: "My Own Token" })
      }
      // It moves: a walk, not a constant.
      expect(new Set(views.map((v) => v.quotes["usd"]?.["bitcoin"]?.price)).size).toBeGreaterThan(20)
    }))

  it.effect("is the same walk for the same seed, and another for another seed", () =>
    Effect.gen(function*() {
      const a = yield* demoRounds(42, 6)
      const b = yield* demoRounds(42, 6)
      const c = yield* demoRounds(43, 6)
      expect(a.map((view) => encodeView(view))).toEqual(b.map((view) => encodeView(view)))
      expect(c.map((v) => v.quotes["usd"]?.["bitcoin"]?.price)).not.toEqual(a.map((v) => v.quotes["usd"]?.["bitcoin"]?.price))
    }))

  it.effect("has an RSI-14 strictly inside 0..100 for every asset, and not the same for all", () =>
    Effect.gen(function*() {
      const views = yield* demoRounds(3, 10)
      for (const view of views) {
        for (const id of ASSETS) {
          expect(view.rsi[id]).toBeGreaterThan(0)
          expect(view.rsi[id]).toBeLessThan(100)
        }
        expect(new Set(Object.values(view.rsi)).size).toBeGreaterThan(1)
      }
    }))

  it.effect("converts at fixed ratios: every price, cap and total in each currency is the US dollar one times that currency's ratio", () =>
    Effect.gen(function*() {
      const views = yield* demoRounds(4, 8)
      // 1 USD = 0.92 EUR = 150 JPY; an unknown currency gets its own fixed ratio.
      const xyz = (views[0]?.totals["xyz"]?.total_market_cap ?? 0) / (views[0]?.totals["usd"]?.total_market_cap ?? 1)
      expect(xyz).toBeGreaterThan(0.5)
      expect(xyz).toBeLessThan(2)
      const ratios: Record<string, number> = { usd: 1, eur: 0.92, jpy: 150, xyz }
      for (const view of views) {
        const usdTotals = view.totals["usd"]!
        for (const currency of CURRENCIES) {
          const ratio = ratios[currency]!
          const totals = view.totals[currency]!
          expect(totals.total_market_cap / usdTotals.total_market_cap).toBeCloseTo(ratio, 8)
          expect(totals.total_volume / usdTotals.total_volume).toBeCloseTo(ratio, 8)
          for (const id of ASSETS) {
            const usd = view.quotes["usd"]?.[id]
            const quote = view.quotes[currency]?.[id]
            // Prices carry 8 significant digits.
            expect(Math.abs((quote?.price ?? 0) / ((usd?.price ?? 1) * ratio) - 1), `${id} in ${currency}`).toBeLessThan(2e-7)
            // Caps are whole units: each side rounded by at most half a unit (xyz's ratio, read off rounded
            // totals, is itself off by up to 1e-12 of it).
            const usdCap = usd?.market_cap ?? 0
            expect(Math.abs((quote?.market_cap ?? 0) - usdCap * ratio)).toBeLessThanOrEqual(0.5 + 0.5 * ratio + usdCap * ratio * 1e-12)
            // The change in percent does not depend on the currency.
            expect(quote?.change_24h).toBe(usd?.change_24h)
          }
        }
      }
    }))

  it.effect("hands the price history the same seeds as the live client: 7-day hourly sparklines per series and daily closes", () =>
    Effect.gen(function*() {
      const now = Date.parse("2025-07-25T14:54:00Z")
      const { first, second } = yield* firstRounds(5)
      const seeds = first.seeds ?? []
      const sparklines = seeds.filter((s) => s.kind === "sparkline")
      expect(sparklines.map((s) => `${s.currency}/${s.asset}`).sort()).toEqual(
        CURRENCIES.flatMap((c) => ASSETS.map((a) => `${c}/${a}`)).sort()
      )
      for (const seed of sparklines) {
        // 168 hourly prices, the last one the quote itself.
        expect(seed.points.map(([t]) => t)).toEqual(Array.from({ length: 168 }, (_, i) => now - (167 - i) * 3_600_000))
        expect(seed.points.at(-1)?.[1]).toBe(first.view.quotes[seed.currency]?.[seed.asset]?.price)
        for (const [, price] of seed.points) {
          expect(price).toBeGreaterThan(0)
          expect(price).toBeLessThanOrEqual(MAX_PRICE)
        }
      }
      // The same path in every currency, at the fixed ratios.
      const btc = (c: string) => sparklines.find((s) => s.asset === "bitcoin" && s.currency === c)?.points.map(([, p]) => p) ?? []
      btc("eur").forEach((p, i) => expect(p / (btc("usd")[i] ?? 1)).toBeCloseTo(0.92, 6))
      // A day's hourly moves are of the asset's own size: bitcoin's path stays within a third of its price over the week.
      expect(Math.max(...btc("usd")) / Math.min(...btc("usd"))).toBeLessThan(1.5)
      expect(new Set(btc("usd")).size).toBeGreaterThan(100)

      // Daily closes, in the first currency only, at 00:00 UTC of the 59 days up to today.
      const closes = seeds.filter((s) => s.kind === "closes")
      expect(closes.map((s) => `${s.currency}/${s.asset}`)).toEqual(ASSETS.map((a) => `usd/${a}`))
      const today = Date.parse("2025-07-25T00:00:00Z")
      for (const seed of closes) expect(seed.points.map(([t]) => t)).toEqual(Array.from({ length: 59 }, (_, i) => today - (58 - i) * 86_400_000))
      // Only the first round seeds: later rounds extend the history with live prices.
      expect(second.seeds).toBeUndefined()
    }))

  it.effect("after a restart goes on from the cached snapshot's prices, so the recorded history has no jump", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.parse("2025-07-25T14:54:00Z"))
      const market = yield* MarketData
      const cached = (yield* market.fetch(Option.none())).view
      // Another process (a restart) over the same cache: its first round starts from those prices.
      const restarted = yield* Effect.provide(
        MarketData,
        DemoMarketDataLive(99).pipe(
          Layer.provide(AppConfig.Default),
          Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map([["DEMO", "true"], ["ASSETS", ASSETS.join(",")], ["CURRENCIES", CURRENCIES.join(",")]]))))
        )
      )
      const first = yield* restarted.fetch(Option.some(cached))
      for (const id of ASSETS) {
        const before = cached.quotes["usd"]?.[id]?.price ?? Number.NaN
        const after = first.view.quotes["usd"]?.[id]?.price ?? Number.NaN
        // One round's step (a sixteenth of a day's volatility), not a new walk.
        expect(Math.abs(after / before - 1), id).toBeLessThan(0.05)
        const sparkline = first.seeds?.find((s) => s.kind === "sparkline" && s.asset === id && s.currency === "usd")
        expect(sparkline?.points.at(-1)?.[1]).toBe(after)
      }
    }).pipe(
      Effect.provide(
        DemoMarketDataLive(7).pipe(
          Layer.provide(AppConfig.Default),
          Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map([["DEMO", "true"], ["ASSETS", ASSETS.join(",")], ["CURRENCIES", CURRENCIES.join(",")]]))))
        )
      )
    ))
})
