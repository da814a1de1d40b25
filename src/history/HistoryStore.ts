/**
 * The price history's storage port, in L2 next to the cache: a table in the SQLite file
 * (`SqliteHistoryStore`) or one sorted set per series and tier in Redis (`RedisHistoryStore`),
 * so that it survives restarts and, with Redis, every instance of a cluster reads the same history.
 */
import { Context, Data, type Effect } from "effect"
import type { AssetId, Currency } from "../market/Watchlist.js"
import type { Point, Tier } from "./Tiers.js"

export type HistoryStoreKind = "sqlite" | "redis"

/** One series: an asset's price in one currency. */
export interface SeriesKey {
  readonly asset: AssetId
  readonly currency: Currency
}

/**
 * Points for one series and the tiers they go to.
 * - `live`: prices as they arrive; in each bucket the newest point replaces an older one.
 * - `seed`: prices the provider already had (a 7-day sparkline, daily closes); they only fill
 *   buckets that hold nothing, so they never overwrite what dashcast recorded itself.
 */
export interface HistoryWrite extends SeriesKey {
  readonly mode: "live" | "seed"
  readonly tiers: ReadonlyArray<Tier>
  readonly points: ReadonlyArray<Point>
}

/**
 * - `Unavailable`: the store cannot be reached or opened; it retries by itself.
 * - `Timeout`: no answer within the per-call timeout (Redis).
 * - `Busy`: another writer holds the lock (SQLite).
 * - `Rejected`: the store answered with an error.
 */
export type HistoryStoreReason = "Unavailable" | "Timeout" | "Busy" | "Rejected"

export class HistoryStoreError extends Data.TaggedError("HistoryStoreError")<{
  readonly store: HistoryStoreKind
  readonly operation: "open" | "write" | "read" | "trim"
  readonly reason: HistoryStoreReason
  readonly cause: unknown
}> {
  override get message(): string {
    const detail = this.cause instanceof Error ? `: ${this.cause.message}` : ""
    return `history ${this.store} ${this.operation} failed (${this.reason})${detail}`
  }
}

export class HistoryStore extends Context.Tag("dashcast/HistoryStore")<HistoryStore, {
  readonly kind: HistoryStoreKind
  /** Where the history lives, for logs: the file, or the Redis host without credentials. */
  readonly location: string
  /**
   * Stores the points, each in every tier it names, and drops what each written series holds
   * beyond its tiers' retention at `now` (epoch ms). Points already past retention are not stored.
   */
  readonly write: (writes: ReadonlyArray<HistoryWrite>, now: number) => Effect.Effect<void, HistoryStoreError>
  /**
   * The points of each series since `from` (epoch ms), per tier in the order of `tiers`, each list
   * oldest first.
   */
  readonly read: (
    series: ReadonlyArray<SeriesKey>,
    tiers: ReadonlyArray<Tier>,
    from: number
  ) => Effect.Effect<ReadonlyArray<ReadonlyArray<ReadonlyArray<Point>>>, HistoryStoreError>
  /** Drops every point past its tier's retention at `now`, also of series no longer written (assets removed from ASSETS). */
  readonly trim: (now: number) => Effect.Effect<void, HistoryStoreError>
}>() {}
