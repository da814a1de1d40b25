/**
 * The alert data (docs/ARCHITECTURE.md, "Alerts"): a rule, its armed state, a firing waiting for
 * delivery and the record of each delivery attempt, as kept in L2. Schemas only, so that the HTTP
 * API's declarations and the browser bundle can import them.
 */
import { Schema } from "effect"

/** What a rule watches, and on which side of its threshold it fires. */
export const Condition = Schema.Literal(
  "price_above",
  "price_below",
  "change_24h_above",
  "change_24h_below",
  "rsi_above",
  "rsi_below",
  "fear_greed_above",
  "fear_greed_below"
)
export type Condition = typeof Condition.Type
export const CONDITIONS: ReadonlyArray<Condition> = Condition.literals

/** The value a condition reads: an asset's price or 24 h change in the rule's currency, its RSI-14, or Fear & Greed. */
export type Measure = "price" | "change_24h" | "rsi" | "fear_greed"

export const measureOf = (condition: Condition): Measure => {
  switch (condition) {
    case "price_above":
    case "price_below":
      return "price"
    case "change_24h_above":
    case "change_24h_below":
      return "change_24h"
    case "rsi_above":
    case "rsi_below":
      return "rsi"
    case "fear_greed_above":
    case "fear_greed_below":
      return "fear_greed"
  }
}

/** Whether the condition holds for `value`: strictly above or strictly below the threshold. */
export const holds = (condition: Condition, value: number, threshold: number): boolean =>
  condition.endsWith("_above") ? value > threshold : value < threshold

/** Fear & Greed is the whole market's: its rules need no asset. */
export const needsAsset = (condition: Condition): boolean => measureOf(condition) !== "fear_greed"

const Finite = Schema.Number.pipe(Schema.finite())

/** A rule as stored: what the API answered at creation, its signing secret and where evaluation starts. */
export class AlertRule extends Schema.Class<AlertRule>("AlertRule")({
  id: Schema.String,
  /** `null` for Fear & Greed rules. */
  asset: Schema.NullOr(Schema.String),
  currency: Schema.String,
  condition: Condition,
  threshold: Finite,
  webhook_url: Schema.String,
  /** As given (`"15 minutes"`); `cooldown_ms` is what evaluation uses. */
  cooldown: Schema.String,
  cooldown_ms: Schema.Number.pipe(Schema.nonNegative()),
  /** Epoch ms. */
  created_at: Schema.Number,
  /** The snapshot held at creation: evaluation starts with the next one. */
  created_seq: Schema.Int.pipe(Schema.nonNegative()),
  /** `whsec_` and base64 of 32 random bytes; stored as text (it signs), redacted everywhere else. */
  secret: Schema.Redacted(Schema.String)
}) {}

/**
 * A rule's evaluation state. `armed`: the condition was false at the last known value (or the rule
 * is new), so the next true value fires. `version` grows with every change: a change is written
 * only over the version it was computed from (compare-and-set), so two evaluators never both fire.
 */
export class AlertState extends Schema.Class<AlertState>("AlertState")({
  version: Schema.Int.pipe(Schema.nonNegative()),
  armed: Schema.Boolean,
  /** The snapshot of the last change (or creation); older snapshots are never evaluated. */
  last_seq: Schema.Int.pipe(Schema.nonNegative()),
  /** The snapshot time (epoch ms) of the last firing, for the cooldown. */
  last_fired_at: Schema.NullOr(Schema.Number)
}) {
  static readonly initial = (createdSeq: number) => AlertState.make({ version: 0, armed: true, last_seq: createdSeq, last_fired_at: null })
}

/** A rule with its state, as one read of the store returns them. */
export interface StoredAlert {
  readonly rule: AlertRule
  readonly state: AlertState
}

/** A firing that has not been delivered yet: the outbox entry. Its `webhook_id` and body never change. */
export class PendingDelivery extends Schema.Class<PendingDelivery>("PendingDelivery")({
  webhook_id: Schema.String,
  rule_id: Schema.String,
  /** The JSON body, exactly as signed and sent on every attempt. */
  body: Schema.String,
  /** Attempts made so far. */
  attempts: Schema.Int.pipe(Schema.nonNegative()),
  /** When the next attempt is due (epoch ms). */
  next_at: Schema.Number
}) {}

/**
 * The end of one attempt: `delivered` (2xx), `failed` (retried later), `gave_up` (failed, and the
 * retry schedule is used up), `cancelled` (the rule was deleted before it could be sent).
 */
export const AttemptOutcome = Schema.Literal("delivered", "failed", "gave_up", "cancelled")
export type AttemptOutcome = typeof AttemptOutcome.Type

/** One delivery attempt, as `GET /api/alerts/:id/deliveries` lists it. */
export const DeliveryAttempt = Schema.Struct({
  webhook_id: Schema.String,
  /** 1 for the first attempt of a firing. */
  attempt: Schema.Int.pipe(Schema.positive()),
  /** When it was sent (ISO-8601). */
  at: Schema.String,
  /** The receiver's HTTP status; `null` when none came (timeout, refused connection, refused target). */
  status: Schema.NullOr(Schema.Int),
  latency_ms: Schema.Number.pipe(Schema.nonNegative()),
  outcome: AttemptOutcome,
  /** Why it failed. */
  error: Schema.optional(Schema.String)
}).annotations({ identifier: "DeliveryAttempt" })
export type DeliveryAttempt = typeof DeliveryAttempt.Type

/** Attempts kept per rule, newest last; older ones are dropped. */
export const ATTEMPTS_KEPT = 100
