/**
 * The WebSocket contract as it was before the watchlist (commit 879efba: `src/realtime/Protocol.ts`
 * and `src/market/DashboardSummary.ts`), copied as is, so that tests can decode today's frames the
 * way a client of then does. Like that client's Schemas, unknown members are ignored (Effect's
 * default), and every member it knew must be there with the type it knew.
 */
import { Schema } from "effect"

const FiniteNumber = Schema.Number.pipe(Schema.finite())
const Percentile = Schema.Number.pipe(Schema.between(0, 100))

export class LegacyDashboardSummary extends Schema.Class<LegacyDashboardSummary>("DashboardSummary")({
  btc_price: FiniteNumber.pipe(Schema.positive()),
  btc_change_24h: FiniteNumber,
  market_cap: FiniteNumber.pipe(Schema.positive()),
  volume_24h: FiniteNumber.pipe(Schema.nonNegative()),
  fear_greed_index: Schema.Int.pipe(Schema.between(0, 100)),
  rsi_14: Percentile,
  last_updated: Schema.DateTimeUtc
}) {}

/** The seven fields of the seed's summary, as its clients read them. */
export const LEGACY_SUMMARY_FIELDS = [
  "btc_price",
  "btc_change_24h",
  "market_cap",
  "volume_24h",
  "fear_greed_index",
  "rsi_14",
  "last_updated"
] as const

export const LegacySummaryField = Schema.Literal(
  "btc_price",
  "btc_change_24h",
  "market_cap",
  "volume_24h",
  "fear_greed_index",
  "rsi_14"
)

const Timestamp = Schema.String
const Seq = Schema.Int.pipe(Schema.positive())

export const LegacyWelcome = Schema.Struct({
  type: Schema.Literal("welcome"),
  data: LegacyDashboardSummary,
  timestamp: Timestamp,
  message: Schema.String,
  seq: Seq,
  age_seconds: Schema.Number.pipe(Schema.nonNegative()),
  stale: Schema.Boolean,
  stale_fields: Schema.optional(Schema.Array(LegacySummaryField))
})

export const LegacyUpdateSource = Schema.Literal("scheduled_update", "force_update", "request_update", "refresh")

export const LegacyDashboardUpdate = Schema.Struct({
  type: Schema.Literal("dashboard_update"),
  data: LegacyDashboardSummary,
  timestamp: Timestamp,
  source: LegacyUpdateSource,
  seq: Seq,
  stale_fields: Schema.optional(Schema.Array(LegacySummaryField))
})

export const LegacyErrorMessage = Schema.Struct({
  type: Schema.Literal("error"),
  error: Schema.String,
  timestamp: Timestamp,
  retry_after: Schema.optional(Schema.Int.pipe(Schema.nonNegative()))
})

export const LegacyPong = Schema.Struct({
  type: Schema.Literal("pong"),
  timestamp: Timestamp
})

export const LegacyServerMessage = Schema.Union(LegacyWelcome, LegacyDashboardUpdate, LegacyErrorMessage, LegacyPong)
export type LegacyServerMessage = typeof LegacyServerMessage.Type

/** Decodes a frame as the client of before the watchlist did. */
export const decodeLegacyServerMessage = Schema.decodeUnknownEither(Schema.parseJson(LegacyServerMessage))
