/**
 * The L2 cache port: a shared or persistent string store behind the in-memory L1, implemented by
 * `SqliteStore` (the default, survives restarts) and `RedisStore` (shared by a cluster).
 */
import { Context, Data, Duration, type Effect, type Option } from "effect"

export type CacheStoreKind = "sqlite" | "redis"

/**
 * - `Unavailable`: the store cannot be reached or opened (Redis disconnected, SQLite file missing a
 *   folder, unreadable or not a database); the store retries by itself.
 * - `Timeout`: no answer within the per-call timeout.
 * - `Busy`: another writer holds the lock (SQLite).
 * - `Rejected`: the store answered with an error (read-only file, I/O error, Redis error reply).
 */
export type CacheStoreReason = "Unavailable" | "Timeout" | "Busy" | "Rejected"

export class CacheStoreError extends Data.TaggedError("CacheStoreError")<{
  readonly store: CacheStoreKind
  readonly operation: "open" | "get" | "set"
  readonly reason: CacheStoreReason
  readonly cause: unknown
}> {
  override get message(): string {
    const detail = this.cause instanceof Error ? `: ${this.cause.message}` : ""
    return `${this.store} ${this.operation} failed (${this.reason})${detail}`
  }
}

/** A stored value and the moment it expires, in epoch milliseconds of Effect's `Clock`. */
export interface CacheStoreEntry {
  readonly json: string
  readonly expiresAt: number
}

export class CacheStore extends Context.Tag("dashcast/CacheStore")<CacheStore, {
  readonly kind: CacheStoreKind
  /** Where the store lives, for logs: the file, or the Redis host without credentials. */
  readonly location: string
  /** The entry under `name`, if there is one that has not expired by the `Clock`. */
  readonly get: (name: string) => Effect.Effect<Option.Option<CacheStoreEntry>, CacheStoreError>
  /** Stores `json` under `name` until `ttl` from now by the `Clock`. */
  readonly set: (name: string, json: string, ttl: Duration.Duration) => Effect.Effect<void, CacheStoreError>
}>() {}

/** The absolute expiry of a value stored at `now` for `ttl`; an infinite ttl is kept as the largest safe integer. */
export const expiryOf = (now: number, ttl: Duration.Duration): number =>
  Math.min(now + Duration.toMillis(ttl), Number.MAX_SAFE_INTEGER)
