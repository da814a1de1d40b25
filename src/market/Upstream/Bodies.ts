/**
 * The provider response bodies dashcast reads (docs/ARCHITECTURE.md, "Upstream calls"): only the
 * fields it uses, strictly typed and within the plausibility bounds of `Bounds.ts`. A `null` where
 * a number must be, a numeric string, a missing key or an implausible value is a Decode failure,
 * never a default. `coins/markets` rows are decoded one by one, so one bad row spoils one quote.
 */
import { Schema } from "effect"
import { Amount, ChangePercent, Price, Total } from "../Bounds.js"
import { RSI_PERIOD } from "./Charts.js"

/** `coins/markets` is an array of rows; each row is checked on its own (`MarketsRow`). */
export const MarketsBody = Schema.Array(Schema.Unknown)

/** Enough of a row to know which asset it is about, even when the rest of it is bad. */
export const RowId = Schema.Struct({ id: Schema.String })

/**
 * One asset in one currency. CoinGecko writes 0 for a market cap it does not know, and `null` for
 * a 24 h change or volume it does not have: both are read as unknown (`null`), never as zero.
 */
export const MarketsRow = Schema.Struct({
  id: Schema.String,
  symbol: Schema.String,
  name: Schema.String,
  current_price: Price,
  price_change_percentage_24h: Schema.NullOr(ChangePercent),
  market_cap: Schema.NullOr(Amount),
  total_volume: Schema.NullOr(Amount),
  last_updated: Schema.NullOr(Schema.DateTimeUtc),
  // Left unchecked here so that a bad sparkline does not spoil a good price: `SparklinePrices`
  // decodes it on its own, when the price history needs it.
  sparkline_in_7d: Schema.optional(Schema.NullOr(Schema.Struct({ price: Schema.Unknown })))
})
export type MarketsRow = typeof MarketsRow.Type

/** CoinGecko's sparkline holds 168 hourly prices (7 days); a little slack either way, never thousands. */
export const SPARKLINE_MAX_POINTS = 200

/**
 * `sparkline_in_7d.price` of a `coins/markets` row: the asset's hourly prices over the last 7 days
 * in the row's currency, oldest first, each within the price bounds (a `null` is not a price).
 */
export const SparklinePrices = Schema.Array(Price).pipe(
  Schema.minItems(2, { message: () => "fewer than 2 prices" }),
  Schema.maxItems(SPARKLINE_MAX_POINTS, { message: () => `more than ${SPARKLINE_MAX_POINTS} prices` })
)

/** `/global`: the totals of the whole crypto market in every vs-currency CoinGecko knows. */
export const GlobalBody = Schema.Struct({
  data: Schema.Struct({
    total_market_cap: Schema.Record({ key: Schema.String, value: Schema.Unknown }),
    total_volume: Schema.Record({ key: Schema.String, value: Schema.Unknown })
  })
})

/** The totals of one currency, checked when that currency is read from `GlobalBody`. */
export const Totals = Schema.Struct({ total_market_cap: Total, total_volume: Amount })

export const MarketChartBody = Schema.Struct({
  prices: Schema.Array(Schema.Tuple(Schema.Number, Price)).pipe(
    Schema.minItems(RSI_PERIOD + 1, {
      message: () => `fewer than ${RSI_PERIOD + 1} price points, too few for RSI-${RSI_PERIOD}`
    })
  )
})

/** A string holding an integer 0..100; `" 54"`, `"0x10"` or `"54.5"` are not accepted. */
const FearGreedValue = Schema.String.pipe(
  Schema.pattern(/^\d{1,3}$/),
  Schema.compose(Schema.NumberFromString),
  Schema.int(),
  Schema.between(0, 100)
)

/** Seconds until alternative.me publishes the next value, as a numeric string. */
const SecondsString = Schema.String.pipe(Schema.pattern(/^\d{1,9}$/), Schema.compose(Schema.NumberFromString))

/** `metadata` comes first so that a provider error is what the failure reports. */
export const FearGreedBody = Schema.Struct({
  metadata: Schema.Struct({ error: Schema.Null }),
  data: Schema.NonEmptyArray(Schema.Struct({
    value: FearGreedValue,
    value_classification: Schema.String.pipe(Schema.minLength(1)),
    time_until_update: Schema.optional(SecondsString)
  }))
})
