/**
 * The simulated market behind `DEMO`: every asset in `ASSETS` in every currency of `CURRENCIES`, as
 * a seeded random walk with plausible magnitudes (known ids start near their real prices, others
 * get a profile derived from their id), converted at fixed exchange ratios, with RSI-14 from
 * simulated daily closes. Same `MarketData` port as the live client; nothing here is real data.
 */
import { Clock, DateTime, Effect, Layer, Option } from "effect"
import { AppConfig } from "../Config.js"
import { MarketData, type PriceSeed } from "./MarketData.js"
import { wilderRsi } from "./Rsi.js"
import { AssetInfo, type AssetId, type Currency, FearGreed, MarketTotals, MarketView, Quote, StaleParts } from "./Watchlist.js"

const DAILY_CLOSES = 60
const HOUR_MS = 60 * 60 * 1000
const DAY_MS = 24 * HOUR_MS
/** Hourly prices over the last 7 days, as CoinGecko's `sparkline_in_7d`. */
const SPARKLINE_POINTS = 168

interface Profile {
  readonly name: string
  readonly symbol: string
  /** Price in US dollars at the start of the walk, and coins in circulation. */
  readonly usd: number
  readonly supply: number
  /** Daily volatility: stable coins barely move. */
  readonly sigma: number
}

/** Well-known ids start near their real magnitudes (late 2025). */
const KNOWN: Readonly<Record<string, Profile>> = {
  bitcoin: { name: "Bitcoin", symbol: "btc", usd: 62_000, supply: 19_800_000, sigma: 0.025 },
  ethereum: { name: "Ethereum", symbol: "eth", usd: 3_000, supply: 120_000_000, sigma: 0.032 },
  tether: { name: "Tether", symbol: "usdt", usd: 1, supply: 140_000_000_000, sigma: 0.0004 },
  "usd-coin": { name: "USDC", symbol: "usdc", usd: 1, supply: 60_000_000_000, sigma: 0.0004 },
  binancecoin: { name: "BNB", symbol: "bnb", usd: 580, supply: 146_000_000, sigma: 0.028 },
  solana: { name: "Solana", symbol: "sol", usd: 150, supply: 470_000_000, sigma: 0.045 },
  ripple: { name: "XRP", symbol: "xrp", usd: 0.55, supply: 56_000_000_000, sigma: 0.04 },
  cardano: { name: "Cardano", symbol: "ada", usd: 0.45, supply: 35_000_000_000, sigma: 0.04 },
  dogecoin: { name: "Dogecoin", symbol: "doge", usd: 0.12, supply: 146_000_000_000, sigma: 0.05 },
  "shiba-inu": { name: "Shiba Inu", symbol: "shib", usd: 0.000018, supply: 589_000_000_000_000, sigma: 0.05 },
  polkadot: { name: "Polkadot", symbol: "dot", usd: 6, supply: 1_500_000_000, sigma: 0.04 },
  chainlink: { name: "Chainlink", symbol: "link", usd: 14, supply: 600_000_000, sigma: 0.04 },
  litecoin: { name: "Litecoin", symbol: "ltc", usd: 70, supply: 75_000_000, sigma: 0.035 },
  tron: { name: "TRON", symbol: "trx", usd: 0.12, supply: 87_000_000_000, sigma: 0.03 },
  "avalanche-2": { name: "Avalanche", symbol: "avax", usd: 30, supply: 400_000_000, sigma: 0.045 }
}

/** US dollars in one unit of each well-known currency's opposite: 1 USD = `RATIO[c]` c. */
const RATIO: Readonly<Record<string, number>> = {
  usd: 1,
  eur: 0.92,
  gbp: 0.79,
  jpy: 150,
  chf: 0.88,
  cad: 1.36,
  aud: 1.52,
  cny: 7.2,
  inr: 83,
  brl: 5,
  krw: 1_350,
  sek: 10.5,
  nok: 10.6,
  pln: 4,
  try: 32,
  mxn: 17,
  btc: 1 / 62_000,
  eth: 1 / 3_000
}

/** A number in [0, 1) from a string, so an unknown id or currency always gets the same profile. */
const hash01 = (text: string): number => {
  let h = 2_166_136_261
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16_777_619)
  return (h >>> 0) / 4_294_967_296
}

const profileOf = (id: AssetId): Profile =>
  KNOWN[id] ?? {
    name: id.split(/[-_.]/).map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join(" "),
    symbol: id.replace(/[^a-z0-9]/g, "").slice(0, 4),
    // Between 1 cent and 100 dollars, log-uniformly.
    usd: 10 ** (-2 + 4 * hash01(id)),
    supply: 10 ** (7 + 3 * hash01(`${id}/supply`)),
    sigma: 0.05
  }

/** An unknown currency gets a fixed ratio between 0.5 and 2 (this is a simulation). */
const ratioOf = (currency: Currency): number => RATIO[currency] ?? 0.5 + 1.5 * hash01(currency)

interface AssetWalk {
  readonly usd: number
  readonly open24h: number
  readonly volumeShare: number
  /** Daily closes in US dollars, oldest first; the last one is today's intraday price. */
  readonly closes: ReadonlyArray<number>
}

interface DemoState {
  readonly walks: ReadonlyMap<AssetId, AssetWalk>
  readonly fearGreed: number
  /** The whole market's capitalisation in US dollars. */
  readonly totalUsd: number
}

const clamp = (lo: number, hi: number, x: number) => Math.min(hi, Math.max(lo, x))

/**
 * A seeded pseudo-random sequence in [0, 1) (mulberry32): the same seed gives the same walk. Plain
 * and synchronous, because a round draws hundreds of numbers (a fiber operation each would make
 * the simulated fetch cost more than the broadcast it feeds).
 */
const seeded = (seed: number): (() => number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
}

/** A roughly normal step from the sum of uniform draws (Irwin-Hall), scaled to `sigma`. */
const gaussian = (next: () => number, sigma: number) => (next() + next() + next() + next() - 2) * Math.sqrt(3) * sigma

const initialWalk = (profile: Profile, next: () => number): AssetWalk => {
  const closes: Array<number> = [profile.usd]
  for (let i = 1; i < DAILY_CLOSES; i++) closes.push(closes[i - 1]! * (1 + gaussian(next, profile.sigma)))
  return { usd: closes[closes.length - 1]!, open24h: closes[closes.length - 2]!, volumeShare: 0.035, closes }
}

const stepWalk = (walk: AssetWalk, profile: Profile, next: () => number): AssetWalk => {
  // A round is a few seconds: steps of a sixteenth of the daily volatility look alive, not wild.
  const usd = walk.usd * (1 + gaussian(next, profile.sigma / 16))
  // The 24h reference drifts slowly so the change looks like a rolling window, not a running total.
  const open24h = walk.open24h * (1 + gaussian(next, profile.sigma / 60))
  const volumeShare = clamp(0.01, 0.2, walk.volumeShare * (1 + gaussian(next, 0.01)))
  return { usd, open24h, volumeShare, closes: [...walk.closes.slice(0, -1), usd] }
}

/**
 * When each simulated daily close was (epoch ms), as CoinGecko's `market_chart` places them: the
 * closes at 00:00 UTC of the days up to today, the last one (today's intraday price) at `now`.
 */
const closeTimes = (count: number, now: number): ReadonlyArray<number> => {
  const startOfToday = Math.floor(now / DAY_MS) * DAY_MS
  return Array.from({ length: count }, (_, i) => (i === count - 1 ? now : startOfToday - (count - 2 - i) * DAY_MS))
}

/**
 * A 7-day hourly sparkline that agrees with the walk's daily closes (US dollars): between two
 * closes the price follows a random bridge of hourly steps pinned to both, so the last point is
 * the current price and each day's path passes through that day's close.
 */
const sparklineOf = (closes: ReadonlyArray<number>, now: number, sigma: number, next: () => number): ReadonlyArray<readonly [number, number]> => {
  const times = closeTimes(closes.length, now)
  const hourSigma = sigma / Math.sqrt(24)
  const points: Array<readonly [number, number]> = []
  let segment = -1
  let walk: Array<number> = []
  for (let k = 0; k < SPARKLINE_POINTS; k++) {
    const t = now - (SPARKLINE_POINTS - 1 - k) * HOUR_MS
    // The closes around t: times[j] < t <= times[j + 1].
    let j = times.findIndex((time, i) => time < t && t <= (times[i + 1] ?? Number.POSITIVE_INFINITY))
    if (j < 0) j = 0
    if (j !== segment) {
      // A fresh bridge for each day: hourly steps to the next close, drift removed so it ends at 0.
      segment = j
      const from = times[j] ?? now
      const to = times[j + 1] ?? now
      const steps = Math.max(1, Math.ceil((to - from) / HOUR_MS))
      let w = 0
      walk = Array.from({ length: steps + 1 }, (_, i) => (i === 0 ? 0 : (w += gaussian(next, hourSigma))))
    }
    const from = times[j] ?? now
    const to = times[j + 1] ?? now
    const a = closes[j] ?? 1
    const b = closes[j + 1] ?? a
    const frac = to > from ? (t - from) / (to - from) : 1
    const steps = walk.length - 1
    const position = Math.min(steps, Math.round(frac * steps))
    const bridged = (walk[position] ?? 0) - frac * (walk[steps] ?? 0)
    points.push([t, Math.exp(Math.log(a) + frac * (Math.log(b) - Math.log(a)) + bridged)])
  }
  return points
}

/** Fear & Greed labels as alternative.me words them. */
const fearGreedLabel = (value: number): string =>
  value <= 24 ? "Extreme Fear" : value <= 46 ? "Fear" : value <= 54 ? "Neutral" : value <= 75 ? "Greed" : "Extreme Greed"

/** Rounds to `digits` significant digits, as a ticker would show a price. */
const significant = (x: number, digits: number) => Number(x.toPrecision(digits))

/** Builds the feed from a seed; the same seed and configuration give the same walk. */
export const makeDemoMarketData = (seed: number) =>
  Effect.gen(function*() {
    const config = yield* AppConfig
    const next = seeded(seed)
    const profiles = new Map(config.assets.map((id) => [id, profileOf(id)]))
    const walks = new Map<AssetId, AssetWalk>()
    for (const [id, profile] of profiles) walks.set(id, initialWalk(profile, next))
    let state: DemoState = { walks, fearGreed: Math.round(clamp(5, 95, 50 + gaussian(next, 15))), totalUsd: 2.3e12 }
    const step = (current: DemoState): DemoState => {
      const stepped = new Map<AssetId, AssetWalk>()
      for (const [id, walk] of current.walks) stepped.set(id, stepWalk(walk, profiles.get(id) ?? profileOf(id), next))
      return {
        walks: stepped,
        fearGreed: clamp(0, 100, current.fearGreed + Math.round(gaussian(next, 1.2))),
        totalUsd: current.totalUsd * (1 + gaussian(next, 0.0015))
      }
    }

    /**
     * What the live client hands the price history on its first round: every series' 7-day hourly
     * sparkline and every asset's daily closes in the first currency, made from the walk (with a
     * generator of their own, so that the walk is the same with or without them).
     */
    const seedsOf = (current: DemoState, now: number): ReadonlyArray<PriceSeed> => {
      const [firstCurrency] = config.currencies
      const seeds: Array<PriceSeed> = []
      for (const [id, walk] of current.walks) {
        const profile = profiles.get(id) ?? profileOf(id)
        const usd = sparklineOf(walk.closes, now, profile.sigma, seeded(seed ^ Math.floor(hash01(id) * 4_294_967_296)))
        for (const currency of config.currencies) {
          const ratio = ratioOf(currency)
          seeds.push({ kind: "sparkline", asset: id, currency, points: usd.map(([t, p]) => [t, significant(p * ratio, 8)] as const) })
        }
        const times = closeTimes(walk.closes.length, now)
        const ratio = ratioOf(firstCurrency)
        seeds.push({
          kind: "closes",
          asset: id,
          currency: firstCurrency,
          // The last close is today's intraday price: the live quote has it.
          points: walk.closes.slice(0, -1).map((usdClose, i) => [times[i] ?? now, significant(usdClose * ratio, 8)] as const)
        })
      }
      return seeds
    }
    let seedsHanded = false

    /**
     * A restart goes on from the prices it had: the first round scales each walk to the previous
     * snapshot's price (kept in the cache), so that the history it recorded has no jump in it.
     */
    const resumeFrom = (previous: MarketView) => {
      const [firstCurrency] = config.currencies
      const ratio = ratioOf(firstCurrency)
      const walks = new Map(state.walks)
      for (const [id, walk] of state.walks) {
        const price = previous.quotes[firstCurrency]?.[id]?.price
        if (price === undefined) continue
        const factor = price / ratio / walk.usd
        walks.set(id, { ...walk, usd: walk.usd * factor, open24h: walk.open24h * factor, closes: walk.closes.map((c) => c * factor) })
      }
      state = { ...state, walks }
    }
    let resumed = false

    const fetch = Effect.fn("MarketData.fetch")(function*(previous: Option.Option<MarketView>) {
      if (!resumed) {
        resumed = true
        Option.map(previous, resumeFrom)
      }
      state = step(state)
      const current = state
      const nowMillis = yield* Clock.currentTimeMillis
      const now = DateTime.unsafeMake(nowMillis)
      const quotes: Record<Currency, Record<AssetId, Quote>> = {}
      const totals: Record<Currency, MarketTotals> = {}
      for (const currency of config.currencies) {
        const ratio = ratioOf(currency)
        const inCurrency: Record<AssetId, Quote> = {}
        for (const [id, walk] of current.walks) {
          const profile = profiles.get(id) ?? profileOf(id)
          const cap = walk.usd * profile.supply * ratio
          inCurrency[id] = Quote.make({
            price: significant(walk.usd * ratio, 8),
            change_24h: Math.round((walk.usd / walk.open24h - 1) * 1e6) / 1e4,
            market_cap: Math.round(cap),
            volume_24h: Math.round(cap * walk.volumeShare),
            last_updated: now,
            fetched_at: now
            // Made here from the walk's own numbers: checking 150 of them each round would cost more than the broadcast.
          }, true)
        }
        quotes[currency] = inCurrency
        totals[currency] = MarketTotals.make({
          total_market_cap: Math.round(current.totalUsd * ratio),
          total_volume: Math.round(current.totalUsd * ratio * 0.035)
        })
      }
      const seeds = seedsHanded ? undefined : seedsOf(current, nowMillis)
      seedsHanded = true
      const rsi: Record<AssetId, number> = {}
      for (const [id, walk] of current.walks) {
        // Sixty simulated closes always give an RSI; none would be a bug, not a value to invent.
        rsi[id] = Math.round((yield* Effect.orDie(wilderRsi(walk.closes))) * 100) / 100
      }
      return {
        view: MarketView.make({
          assets: config.assets.map((id) => {
            const profile = profiles.get(id) ?? profileOf(id)
            return AssetInfo.make({ id, symbol: profile.symbol, name: profile.name })
          }),
          missing: [],
          quotes,
          rsi,
          totals,
          fear_greed: Option.some(FearGreed.make({ value: current.fearGreed, label: fearGreedLabel(current.fearGreed) })),
          stale: StaleParts.none
        }),
        failure: Option.none(),
        problems: [],
        ...(seeds === undefined ? {} : { seeds })
      }
    })
    return MarketData.of({ fetch, blockedFor: Effect.succeed(Option.none()) })
  })

export const DemoMarketDataLive = (seed: number): Layer.Layer<MarketData, never, AppConfig> =>
  Layer.effect(MarketData, makeDemoMarketData(seed))
