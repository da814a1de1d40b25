/**
 * The chart's points as `GET /api/history` serves them. A leaf module (only Schema): the client SDK
 * decodes them in the browser, without the history service's server-side dependencies.
 */
import { Schema } from "effect"

/** One point of the chart: the price's own time (`last_updated`), the price and its sequence number. */
export const HistoryPoint = Schema.Struct({
  t: Schema.DateTimeUtc,
  price: Schema.Number.pipe(Schema.finite(), Schema.positive()),
  seq: Schema.Int.pipe(Schema.positive())
})
export type HistoryPoint = typeof HistoryPoint.Type

/** The body of `GET /api/history`, decoded by the client SDK with this same Schema. */
export const HistoryResponse = Schema.Struct({ points: Schema.Array(HistoryPoint) })
export type HistoryResponse = typeof HistoryResponse.Type
