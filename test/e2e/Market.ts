/**
 * What the end-to-end tests expect dashcast to show when the fake upstream serves some values:
 * every asset in every currency, RSI-14 computed with the project's own Wilder RSI from the fake's
 * daily closes and the live price as today's close, and the seed's summary of bitcoin.
 */
import { Option } from "effect"
import type { DashboardSummary } from "../../src/market/DashboardSummary.js"
import type { Endpoint } from "../../src/market/MarketData.js"
import { wilderRsi } from "../../src/market/Rsi.js"
import type { ServerMessage } from "../../src/realtime/Protocol.js"
import type { MarketValues, RecordedRequest } from "../support/FakeUpstream.js"

export const ENDPOINTS: ReadonlyArray<Endpoint> = ["coins_markets", "global", "market_chart", "fear_greed"]

/** The six market fields of the seed's summary. */
export type Market = Omit<typeof DashboardSummary.Encoded, "last_updated">

/** RSI-14 of `id` as dashcast computes it: the daily closes, then the live price in `firstCurrency`. */
export const expectedRsi = (v: MarketValues, id: string, firstCurrency = "usd"): number => {
  const asset = v.assets[id]
  if (asset === undefined) throw new Error(`the fake does not know ${id}`)
  const live = asset.prices[firstCurrency]
  if (live === undefined) throw new Error(`the fake has no ${firstCurrency} price for ${id}`)
  return Option.getOrThrow(wilderRsi([...asset.closes.slice(0, -1), live], 14))
}

/** One asset of a frame's `assets`, as dashcast must show it (without `last_updated`). */
export const expectedAsset = (v: MarketValues, id: string, currency: string, firstCurrency = "usd") => {
  const asset = v.assets[id]
  const price = asset?.prices[currency]
  if (asset === undefined || price === undefined) throw new Error(`the fake has no ${currency} price for ${id}`)
  const scale = price / (asset.prices["usd"] ?? price)
  const marketCap = Math.round(asset.marketCapUsd * scale)
  return {
    id,
    symbol: asset.symbol,
    name: asset.name,
    price,
    change_24h: asset.change24h,
    // CoinGecko's 0 is "unknown".
    market_cap: marketCap === 0 ? null : marketCap,
    volume_24h: asset.volumeUsd === null ? null : Math.round(asset.volumeUsd * scale),
    rsi_14: expectedRsi(v, id, firstCurrency)
  }
}

/** A frame's asset without the provider's time, to compare with `expectedAsset`. */
export const assetOf = (a: { readonly id: string; readonly last_updated: unknown } & Record<string, unknown>) => {
  const { last_updated: _, ...rest } = a
  return rest
}

/** The seed's market fields for bitcoin in `currency` when upstream serves `v`. */
export const expectedMarket = (v: MarketValues, currency = "usd", firstCurrency = "usd"): Market => {
  const btc = expectedAsset(v, "bitcoin", currency, firstCurrency)
  const totals = v.totals[currency]
  if (totals === undefined || btc.change_24h === null) throw new Error(`no complete bitcoin summary in ${currency}`)
  return {
    btc_price: btc.price,
    btc_change_24h: btc.change_24h,
    market_cap: totals.marketCap,
    volume_24h: totals.volume,
    fear_greed_index: v.fearGreed,
    rsi_14: btc.rsi_14
  }
}

export const marketOf = (s: Market): Market => ({
  btc_price: s.btc_price,
  btc_change_24h: s.btc_change_24h,
  market_cap: s.market_cap,
  volume_24h: s.volume_24h,
  fear_greed_index: s.fear_greed_index,
  rsi_14: s.rsi_14
})

export type Update = Extract<ServerMessage, { type: "dashboard_update" }>

/** A `dashboard_update` from `source` with at least `minSeq`. */
export const isUpdate = (source: Update["source"], minSeq = 0) => (m: ServerMessage): m is Update =>
  m.type === "dashboard_update" && m.source === source && m.seq >= minSeq

/**
 * Upstream requests grouped by round. A round makes one `coins/markets` call per currency, so every
 * `currencies`-th of those (in arrival order) starts a round; the calls sent with it may arrive a
 * moment before it (`leadMs`), the closes of a first round after it. A markets call repeated within
 * `retryMs` is Bun's fetch resending a GET whose reused connection was reset, not a new round.
 */
export const roundsSeen = (
  requests: ReadonlyArray<RecordedRequest>,
  currencies = 1,
  { leadMs = 250, retryMs = 200 } = {}
): ReadonlyArray<ReadonlyArray<RecordedRequest>> => {
  const sorted = [...requests].sort((a, b) => a.time - b.time)
  const lastByTarget = new Map<string | undefined, number>()
  const markets = sorted.filter((r) => {
    if (r.endpoint !== "coins_markets") return false
    const previous = lastByTarget.get(r.target)
    lastByTarget.set(r.target, r.time)
    return previous === undefined || r.time - previous >= retryMs
  })
  const starts = markets.filter((_, i) => i % currencies === 0).map((r) => r.time - leadMs)
  const rounds = starts.map((): Array<RecordedRequest> => [])
  for (const request of sorted) {
    const index = starts.findLastIndex((start) => start <= request.time)
    if (index >= 0) rounds[index]?.push(request)
  }
  return rounds
}
