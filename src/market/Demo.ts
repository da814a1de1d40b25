/**
 * The simulated market feed behind `DEMO`: a seeded random walk with realistic magnitudes, so that
 * a trial run without internet moves like the real thing. Same `MarketData` port as the live client.
 */
import { Clock, DateTime, Effect, Layer, Option, Random, Ref } from "effect"
import { DashboardSummary } from "./DashboardSummary.js"
import { MarketData } from "./MarketData.js"
import { wilderRsi } from "./Rsi.js"

/** Bitcoin in circulation and its share of the whole market, to derive total market cap. */
const BTC_SUPPLY = 19_800_000
const BTC_DOMINANCE = 0.56
const DAILY_CLOSES = 60
const START_PRICE = 62_000

interface DemoState {
  readonly price: number
  readonly open24h: number
  readonly fearGreed: number
  readonly volumeShare: number
  /** Daily closes, oldest first; the last one is today's intraday price. */
  readonly closes: ReadonlyArray<number>
}

const clamp = (lo: number, hi: number, x: number) => Math.min(hi, Math.max(lo, x))

/** A roughly normal step from the sum of uniform draws (Irwin-Hall), scaled to `sigma`. */
const gaussian = (sigma: number) =>
  Effect.map(
    Effect.all([Random.next, Random.next, Random.next, Random.next]),
    (u) => (u.reduce((a, b) => a + b, 0) - 2) * Math.sqrt(3) * sigma
  )

const initialState = Effect.gen(function*() {
  const closes: Array<number> = [START_PRICE]
  for (let i = 1; i < DAILY_CLOSES; i++) {
    const step = yield* gaussian(0.025)
    closes.push(closes[i - 1]! * (1 + step))
  }
  const price = closes[closes.length - 1]!
  return {
    price,
    open24h: closes[closes.length - 2]!,
    fearGreed: Math.round(clamp(5, 95, 50 + (yield* gaussian(15)))),
    volumeShare: 0.035,
    closes
  } satisfies DemoState
})

const step = (state: DemoState) =>
  Effect.gen(function*() {
    const price = state.price * (1 + (yield* gaussian(0.0015)))
    // The 24h reference drifts slowly so the change looks like a rolling window, not a running total.
    const open24h = state.open24h * (1 + (yield* gaussian(0.0004)))
    const fearGreed = clamp(0, 100, state.fearGreed + Math.round(yield* gaussian(1.2)))
    const volumeShare = clamp(0.02, 0.06, state.volumeShare * (1 + (yield* gaussian(0.01))))
    const closes = [...state.closes.slice(0, -1), price]
    return { price, open24h, fearGreed, volumeShare, closes } satisfies DemoState
  })

/** Builds the feed from a seed; the same seed gives the same walk. */
export const makeDemoMarketData = (seed: number) =>
  Effect.gen(function*() {
    const random = Random.make(seed)
    const state = yield* Ref.make(yield* Effect.withRandom(initialState, random))
    const fetch = Effect.fn("MarketData.fetch")(function*(_previous: Option.Option<DashboardSummary>) {
      const next = yield* Effect.withRandom(Effect.flatMap(Ref.get(state), step), random)
      yield* Ref.set(state, next)
      const now = yield* Clock.currentTimeMillis
      // 60 simulated closes always give an RSI; none would be a bug, not a value to invent.
      const rsi = yield* Effect.orDie(wilderRsi(next.closes))
      const marketCap = (next.price * BTC_SUPPLY) / BTC_DOMINANCE
      return {
        summary: DashboardSummary.make({
          btc_price: round(next.price, 2),
          btc_change_24h: round((next.price / next.open24h - 1) * 100, 4),
          market_cap: Math.round(marketCap),
          volume_24h: Math.round(marketCap * next.volumeShare),
          fear_greed_index: next.fearGreed,
          rsi_14: round(rsi, 2),
          last_updated: DateTime.unsafeMake(now)
        }),
        staleFields: [],
        partialFailure: Option.none()
      }
    })
    return MarketData.of({ fetch, blockedFor: Effect.succeed(Option.none()) })
  })

const round = (x: number, digits: number) => {
  const f = 10 ** digits
  return Math.round(x * f) / f
}

export const DemoMarketDataLive = (seed: number) => Layer.effect(MarketData, makeDemoMarketData(seed))
