/**
 * The price history in the SQLite file of the L2 cache (`CACHE_PATH`), in its own table: one row
 * per series, tier and bucket. It opens its own connection to the file (WAL lets it and the cache
 * write side by side) and, like the cache, reopens a file it could not use after a while.
 */
import type { Database } from "bun:sqlite"
import { type Duration, Effect, Layer } from "effect"
import { sqliteConnection } from "../cache/SqliteConnection.js"
import { HistoryStore, HistoryStoreError } from "./HistoryStore.js"
import { bucketOf, keepFrom, type Point, TIERS } from "./Tiers.js"

export interface SqliteHistoryOptions {
  /** The database file (its folder is created), or `:memory:` (nothing survives the process). */
  readonly path: string
  /** After a failed open, or a failure that drops the handle, how long until the next try. */
  readonly reopenAfter?: Duration.DurationInput
  /** How long a write waits for another writer's lock. bun:sqlite is synchronous: it blocks the process. */
  readonly busyTimeout?: Duration.DurationInput
}

// Versioned like the cache's table, so that a file written by an incompatible schema is not misread.
const TABLE = "history_v1"

const setup = (db: Database) => {
  // In WAL mode, NORMAL makes a commit durable against a crash of the process (kill -9) without an
  // fsync per round; a power cut may lose the last rounds of a chart, never the file.
  db.run("PRAGMA synchronous = NORMAL")
  db.run(
    `CREATE TABLE IF NOT EXISTS ${TABLE} (
      currency TEXT NOT NULL, asset TEXT NOT NULL, tier INTEGER NOT NULL, bucket INTEGER NOT NULL,
      t INTEGER NOT NULL, price REAL NOT NULL,
      PRIMARY KEY (currency, asset, tier, bucket)
    ) STRICT, WITHOUT ROWID`
  )
}

const INSERT_ROWS = (rows: number) =>
  `INSERT INTO ${TABLE} (currency, asset, tier, bucket, t, price) VALUES ${Array.from({ length: rows }, () => "(?, ?, ?, ?, ?, ?)").join(", ")}`
/** A live point replaces an older one of its bucket; a seed only fills an empty bucket. */
const ON_CONFLICT = {
  live: `ON CONFLICT (currency, asset, tier, bucket) DO UPDATE SET t = excluded.t, price = excluded.price WHERE excluded.t >= ${TABLE}.t`,
  seed: `ON CONFLICT (currency, asset, tier, bucket) DO NOTHING`
} as const
/**
 * A round of a watchlist is hundreds of rows (50 assets × 3 currencies × 3 tiers): they go in
 * statements of many rows (each a power of two up to this, so that few statements are prepared),
 * which costs SQLite the same and crosses from JS to SQLite a few times instead of once a row. In
 * one statement the rows are applied in order, as one statement a row would.
 */
const MAX_ROWS_PER_STATEMENT = 256
const TRIM_SERIES = `DELETE FROM ${TABLE} WHERE currency = ? AND asset = ? AND tier = ? AND bucket < ?`
const TRIM_TIER = `DELETE FROM ${TABLE} WHERE tier = ? AND bucket < ?`
const SELECT = `SELECT t, price FROM ${TABLE} WHERE currency = ? AND asset = ? AND tier = ? AND bucket >= ? ORDER BY bucket`

export const SqliteHistoryStoreLive = (options: SqliteHistoryOptions): Layer.Layer<HistoryStore> =>
  Layer.scoped(
    HistoryStore,
    Effect.gen(function*() {
      const withDatabase = yield* sqliteConnection(
        { path: options.path, reopenAfter: options.reopenAfter ?? "30 seconds", busyTimeout: options.busyTimeout ?? "200 millis", setup },
        (operation: "write" | "read" | "trim", reason, cause) => new HistoryStoreError({ store: "sqlite", operation, reason, cause })
      )

      // Per series and tier, the oldest bucket it was last trimmed to (by this store).
      const trimmedTo = new Map<string, number>()

      return HistoryStore.of({
        kind: "sqlite",
        location: options.path,
        write: Effect.fn("SqliteHistoryStore.write")(function*(writes, now) {
          yield* withDatabase("write", (db) => {
            const trim = db.query<unknown, [string, string, number, number]>(TRIM_SERIES)
            /** Inserts `values` (6 per row) with one mode's conflict rule, in statements of many rows. */
            const insert = (mode: keyof typeof ON_CONFLICT, values: Array<string | number>) => {
              let offset = 0
              while (offset < values.length) {
                const left = (values.length - offset) / 6
                let rows = MAX_ROWS_PER_STATEMENT
                while (rows > left) rows /= 2
                db.query<unknown, Array<string | number>>(`${INSERT_ROWS(rows)} ${ON_CONFLICT[mode]}`)
                  .run(...values.slice(offset, offset + rows * 6))
                offset += rows * 6
              }
            }
            const trimmed = new Map<string, number>()
            // One transaction per batch: one fsync for the whole round, and all of it or nothing.
            db.transaction(() => {
              // Consecutive writes of one mode go together; the batch's order is kept.
              let mode: keyof typeof ON_CONFLICT = "seed"
              let values: Array<string | number> = []
              for (const write of writes) {
                if (write.mode !== mode) {
                  insert(mode, values)
                  mode = write.mode
                  values = []
                }
                for (const tier of write.tiers) {
                  const oldest = keepFrom(tier, now)
                  for (const [t, price] of write.points) {
                    if (t >= oldest) values.push(write.currency, write.asset, tier.id, bucketOf(tier, t), t, price)
                  }
                }
              }
              insert(mode, values)
              // A series is trimmed when its oldest kept bucket moves on (at most once a minute), not on every write.
              for (const write of writes) {
                for (const tier of write.tiers) {
                  const series = `${write.currency}\u0000${write.asset}\u0000${tier.id}`
                  const from = bucketOf(tier, keepFrom(tier, now))
                  if ((trimmed.get(series) ?? trimmedTo.get(series) ?? Number.NEGATIVE_INFINITY) < from) {
                    trim.run(write.currency, write.asset, tier.id, from)
                    trimmed.set(series, from)
                  }
                }
              }
            })()
            // Only once the transaction committed: a batch that failed trims again next time.
            for (const [series, from] of trimmed) trimmedTo.set(series, from)
          })
        }),
        read: Effect.fn("SqliteHistoryStore.read")(function*(series, tiers, from) {
          return yield* withDatabase("read", (db) => {
            const select = db.query<{ t: number; price: number }, [string, string, number, number]>(SELECT)
            return series.map(({ asset, currency }) =>
              tiers.map((tier) =>
                select.all(currency, asset, tier.id, bucketOf(tier, from))
                  .filter((row) => row.t >= from)
                  .map((row): Point => [row.t, row.price])
              )
            )
          })
        }),
        trim: Effect.fn("SqliteHistoryStore.trim")(function*(now) {
          yield* withDatabase("trim", (db) => {
            const trim = db.query<unknown, [number, number]>(TRIM_TIER)
            db.transaction(() => {
              for (const tier of TIERS) trim.run(tier.id, bucketOf(tier, keepFrom(tier, now)))
            })()
          })
        })
      })
    })
  )
