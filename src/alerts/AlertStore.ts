/**
 * Where alerts live (docs/ARCHITECTURE.md, "Alerts: storage"): in L2, so that rules survive a
 * restart and a new leader knows every rule's armed state and every firing not yet delivered. One
 * port, two implementations: tables in the cache's SQLite file (`SqliteAlertStore`) or keys in the
 * cluster's Redis (`RedisAlertStore`). Every change that decides a firing is one atomic
 * compare-and-set, so that no firing is lost or made twice, whoever evaluates.
 */
import { Context, Data, type Effect, type Option } from "effect"
import type { AlertRule, AlertState, DeliveryAttempt, PendingDelivery, StoredAlert } from "./AlertRule.js"

/**
 * - `Unavailable`: the store cannot be reached or opened.
 * - `Timeout`: no answer within the per-call timeout (Redis).
 * - `Busy`: another writer holds the lock (SQLite).
 * - `Rejected`: the store answered with an error, or a stored value did not decode.
 */
export class AlertStoreError extends Data.TaggedError("AlertStoreError")<{
  readonly store: "sqlite" | "redis"
  readonly operation: string
  readonly reason: "Unavailable" | "Timeout" | "Busy" | "Rejected"
  readonly cause: unknown
}> {
  override get message(): string {
    const detail = this.cause instanceof Error ? `: ${this.cause.message}` : ""
    return `alert store (${this.store}) ${this.operation} failed (${this.reason})${detail}`
  }
}

export class AlertStore extends Context.Tag("dashcast/AlertStore")<AlertStore, {
  readonly kind: "sqlite" | "redis"
  /** Stores a new rule with its initial state. */
  readonly create: (rule: AlertRule, state: AlertState) => Effect.Effect<void, AlertStoreError>
  /** Every rule with its state, read at once. */
  readonly list: Effect.Effect<ReadonlyArray<StoredAlert>, AlertStoreError>
  readonly get: (id: string) => Effect.Effect<Option.Option<StoredAlert>, AlertStoreError>
  /** Deletes a rule, its state, its attempts and its firings not yet delivered; false when there was none. */
  readonly remove: (id: string) => Effect.Effect<boolean, AlertStoreError>
  /**
   * Replaces the state of rule `id` with `next` only if its stored version is still `fromVersion`,
   * and, in the same step, adds `firing` (unless a firing with its id is already there). False when
   * the state had moved on, or the rule is gone: nothing was written.
   */
  readonly transition: (
    id: string,
    fromVersion: number,
    next: AlertState,
    firing: Option.Option<PendingDelivery>
  ) => Effect.Effect<boolean, AlertStoreError>
  /** Every firing not yet delivered, oldest first. */
  readonly pending: Effect.Effect<ReadonlyArray<PendingDelivery>, AlertStoreError>
  /**
   * Records an attempt of `webhookId` (newest last, `ATTEMPTS_KEPT` per rule) and, in the same step,
   * replaces its pending firing with `next`, or removes it when there is no next attempt. Nothing is
   * written for a rule that was deleted meanwhile.
   */
  readonly recordAttempt: (
    ruleId: string,
    webhookId: string,
    attempt: DeliveryAttempt,
    next: Option.Option<PendingDelivery>
  ) => Effect.Effect<void, AlertStoreError>
  /** The rule's attempts, newest last. */
  readonly attempts: (id: string) => Effect.Effect<ReadonlyArray<DeliveryAttempt>, AlertStoreError>
}>() {}
