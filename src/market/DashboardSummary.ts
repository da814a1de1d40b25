/**
 * The market summary every client receives: the seven fields of the seed's `DashboardSummary`,
 * numbers as JSON numbers and `last_updated` as an ISO-8601 UTC string on the wire.
 */
import { Schema } from "effect"

const FiniteNumber = Schema.Number.pipe(Schema.finite())
const Percentile = Schema.Number.pipe(Schema.between(0, 100))

export class DashboardSummary extends Schema.Class<DashboardSummary>("DashboardSummary")({
  btc_price: FiniteNumber.pipe(Schema.positive()),
  btc_change_24h: FiniteNumber,
  market_cap: FiniteNumber.pipe(Schema.positive()),
  volume_24h: FiniteNumber.pipe(Schema.nonNegative()),
  fear_greed_index: Schema.Int.pipe(Schema.between(0, 100)),
  rsi_14: Percentile,
  last_updated: Schema.DateTimeUtc
}) {}

/** The names of the summary's market fields, used by `stale_fields` when one upstream call failed. */
export const SummaryField = Schema.Literal(
  "btc_price",
  "btc_change_24h",
  "market_cap",
  "volume_24h",
  "fear_greed_index",
  "rsi_14"
)
export type SummaryField = typeof SummaryField.Type

/**
 * A summary as the server holds it: the cluster-wide sequence number and the moment it was fetched,
 * so that age and staleness survive a restart (it is what the L2 cache stores).
 */
export class SummarySnapshot extends Schema.Class<SummarySnapshot>("SummarySnapshot")({
  summary: DashboardSummary,
  seq: Schema.Int.pipe(Schema.positive()),
  fetched_at: Schema.DateTimeUtc,
  stale_fields: Schema.Array(SummaryField)
}) {}
