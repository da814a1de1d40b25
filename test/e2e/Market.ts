/**
 * What the end-to-end tests expect a summary to hold: the fake upstream's values, RSI-14 computed
 * from its closes with the project's own Wilder RSI, compared field by field (not `last_updated`).
 */
import { Option } from "effect"
import type { DashboardSummary } from "../../src/market/DashboardSummary.js"
import type { Endpoint } from "../../src/market/MarketData.js"
import { wilderRsi } from "../../src/market/Rsi.js"
import type { ServerMessage } from "../../src/realtime/Protocol.js"
import type { MarketValues } from "../support/FakeUpstream.js"

export const ENDPOINTS: ReadonlyArray<Endpoint> = ["simple_price", "global", "market_chart", "fear_greed"]

/** The six market fields of a summary. */
export type Market = Omit<typeof DashboardSummary.Encoded, "last_updated">

/** The market fields a summary must carry when upstream serves `v`. */
export const expectedMarket = (v: MarketValues): Market => ({
  btc_price: v.btcPrice,
  btc_change_24h: v.btcChange24h ?? Number.NaN,
  market_cap: v.totalMarketCap,
  volume_24h: v.totalVolume,
  fear_greed_index: v.fearGreed,
  rsi_14: Option.getOrThrow(wilderRsi(v.closes, 14))
})

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
