/**
 * The price history in the SQLite file of the L2 cache (`CACHE_PATH`), in its own table: one row
 * per series, tier and bucket. It opens its own connection to the file (WAL lets it and the cache
 * write side by side) and, like the cache, reopens a file it could not use after a while.
 */
import { Database, SQLiteError } from "bun:sqlite"
import * as fs from "node:fs"
import * as path from "node:path"
import { Clock, Duration, Effect, Layer, Option } from "effect"
import { HistoryStore, HistoryStoreError, type HistoryStoreReason } from "./HistoryStore.js"
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

type Connection =
  | { readonly _tag: "Open"; readonly db: Database }
  | { readonly _tag: "Closed"; readonly retryAt: number; readonly cause: unknown }

const isInMemory = (file: string) => file === "" || file === ":memory:"

const openDatabase = (file: string, busyTimeoutMillis: number): Database => {
  if (!isInMemory(file)) fs.mkdirSync(path.dirname(file), { recursive: true })
  const db = new Database(file, { create: true, readwrite: true, strict: true })
  try {
    db.run(`PRAGMA busy_timeout = ${busyTimeoutMillis}`)
    db.run("PRAGMA journal_mode = WAL")
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
    return db
  } catch (cause) {
    db.close()
    throw cause
  }
}

const reasonOf = (cause: unknown): HistoryStoreReason => {
  if (!(cause instanceof SQLiteError)) return "Unavailable"
  const code = cause.code ?? ""
  if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) return "Busy"
  if (code.startsWith("SQLITE_CANTOPEN") || code.startsWith("SQLITE_NOTADB") || code.startsWith("SQLITE_CORRUPT")) return "Unavailable"
  return "Rejected"
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
      const reopenAfterMillis = Duration.toMillis(options.reopenAfter ?? "30 seconds")
      const busyTimeoutMillis = Duration.toMillis(options.busyTimeout ?? "200 millis")
      let connection: Connection = { _tag: "Closed", retryAt: Number.NEGATIVE_INFINITY, cause: undefined }

      const connect = (now: number): Option.Option<Database> => {
        try {
          const db = openDatabase(options.path, busyTimeoutMillis)
          connection = { _tag: "Open", db }
          return Option.some(db)
        } catch (cause) {
          connection = { _tag: "Closed", retryAt: now + reopenAfterMillis, cause }
          return Option.none()
        }
      }

      const drop = (now: number, cause: unknown) => {
        if (connection._tag === "Open") connection.db.close()
        connection = { _tag: "Closed", retryAt: now + reopenAfterMillis, cause }
      }

      const withDatabase = <A>(operation: "write" | "read" | "trim", use: (db: Database) => A) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const db = connection._tag === "Open" ? Option.some(connection.db) : now >= connection.retryAt ? connect(now) : Option.none()
          if (Option.isNone(db)) {
            const cause = connection._tag === "Closed" ? connection.cause : undefined
            return yield* new HistoryStoreError({ store: "sqlite", operation, reason: reasonOf(cause), cause })
          }
          return yield* Effect.try({
            try: () => use(db.value),
            catch: (cause) => new HistoryStoreError({ store: "sqlite", operation, reason: reasonOf(cause), cause })
          }).pipe(Effect.tapError((error) => (error.reason === "Busy" ? Effect.void : Effect.sync(() => drop(now, error.cause)))))
        })

      yield* Effect.acquireRelease(
        Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => connect(now))),
        () => Effect.sync(() => drop(Number.POSITIVE_INFINITY, undefined))
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
