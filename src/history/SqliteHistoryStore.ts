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

const UPSERT_LIVE = `INSERT INTO ${TABLE} (currency, asset, tier, bucket, t, price) VALUES (?, ?, ?, ?, ?, ?)
  ON CONFLICT (currency, asset, tier, bucket) DO UPDATE SET t = excluded.t, price = excluded.price WHERE excluded.t >= ${TABLE}.t`
const INSERT_SEED = `INSERT INTO ${TABLE} (currency, asset, tier, bucket, t, price) VALUES (?, ?, ?, ?, ?, ?)
  ON CONFLICT (currency, asset, tier, bucket) DO NOTHING`
const TRIM_SERIES = `DELETE FROM ${TABLE} WHERE currency = ? AND asset = ? AND tier = ? AND bucket < ?`
const TRIM_TIER = `DELETE FROM ${TABLE} WHERE tier = ? AND bucket < ?`
const SELECT = `SELECT t, price FROM ${TABLE} WHERE currency = ? AND asset = ? AND tier = ? AND bucket >= ? ORDER BY bucket`

type Binding = [string, string, number, number, number, number]

export const SqliteHistoryStoreLive = (options: SqliteHistoryOptions): Layer.Layer<HistoryStore> =>
  Layer.scoped(
    HistoryStore,
    Effect.gen(function*() {
      const withDatabase = yield* sqliteConnection(
        { path: options.path, reopenAfter: options.reopenAfter ?? "30 seconds", busyTimeout: options.busyTimeout ?? "200 millis", setup },
        (operation: "write" | "read" | "trim", reason, cause) => new HistoryStoreError({ store: "sqlite", operation, reason, cause })
      )

      return HistoryStore.of({
        kind: "sqlite",
        location: options.path,
        write: Effect.fn("SqliteHistoryStore.write")(function*(writes, now) {
          yield* withDatabase("write", (db) => {
            const live = db.query<unknown, Binding>(UPSERT_LIVE)
            const seed = db.query<unknown, Binding>(INSERT_SEED)
            const trim = db.query<unknown, [string, string, number, number]>(TRIM_SERIES)
            // One transaction per batch: one fsync for the whole round, and all of it or nothing.
            db.transaction(() => {
              for (const write of writes) {
                const statement = write.mode === "live" ? live : seed
                for (const tier of write.tiers) {
                  const oldest = keepFrom(tier, now)
                  for (const [t, price] of write.points) {
                    if (t >= oldest) statement.run(write.currency, write.asset, tier.id, bucketOf(tier, t), t, price)
                  }
                  trim.run(write.currency, write.asset, tier.id, bucketOf(tier, oldest))
                }
              }
            })()
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
