/**
 * The price history as `GET /api/history` and `GET /api/sparklines` serve it. A leaf module (only
 * Schema): the client SDK decodes the answers in the browser with these same Schemas, without the
 * history service's server-side dependencies.
 */
import { Schema } from "effect"

/** The chart ranges a client may ask for. */
export const HISTORY_RANGES = ["24h", "7d", "30d"] as const
export const HistoryRange = Schema.Literal(...HISTORY_RANGES)
export type HistoryRange = typeof HistoryRange.Type

/**
 * One point: `[epoch milliseconds, price]`, the way CoinGecko's `market_chart` writes its prices.
 * The time is the price's own (the provider's `last_updated`, or where a seeded series puts it).
 */
export const HistoryPoint = Schema.Tuple(
  Schema.Number.pipe(Schema.int(), Schema.nonNegative()).annotations({ description: "epoch milliseconds" }),
  Schema.Number.pipe(Schema.finite(), Schema.positive()).annotations({ description: "the price in the series' currency" })
).annotations({ identifier: "HistoryPoint", description: "[epoch milliseconds, price]" })
export type HistoryPoint = typeof HistoryPoint.Type

/** The body of `GET /api/history`: one asset's prices in one currency over a range, oldest first. */
export const HistoryResponse = Schema.Struct({
  asset: Schema.String,
  currency: Schema.String,
  range: HistoryRange,
  points: Schema.Array(HistoryPoint)
}).annotations({ identifier: "History" })
export type HistoryResponse = typeof HistoryResponse.Type

/** One asset's small chart in `GET /api/sparklines`: its last 24 hours, at most one point every 30 minutes. */
export const Sparkline = Schema.Struct({
  asset: Schema.String,
  points: Schema.Array(HistoryPoint)
}).annotations({ identifier: "Sparkline" })
export type Sparkline = typeof Sparkline.Type

/** The body of `GET /api/sparklines`: every watched asset's last 24 hours in one currency, thinned. */
export const SparklinesResponse = Schema.Struct({
  currency: Schema.String,
  range: Schema.Literal("24h"),
  series: Schema.Array(Sparkline)
}).annotations({ identifier: "Sparklines" })
export type SparklinesResponse = typeof SparklinesResponse.Type
