/**
 * The default L2 store: one `bun:sqlite` file in WAL mode at `CACHE_PATH`, so the last summary
 * survives a restart. A file that cannot be opened or used is closed and reopened later by itself.
 */
import { Database, SQLiteError } from "bun:sqlite"
import * as fs from "node:fs"
import * as path from "node:path"
import { Clock, Duration, Effect, Layer, Option } from "effect"
import { CacheStore, CacheStoreError, type CacheStoreReason, expiryOf } from "./CacheStore.js"

export interface SqliteStoreOptions {
  /** The database file (its folder is created), or `:memory:`. */
  readonly path: string
  /** After a failed open, or a failure that drops the handle, how long until the next try. */
  readonly reopenAfter?: Duration.DurationInput
  /** How long a write waits for another writer's lock. bun:sqlite is synchronous: it blocks the process. */
  readonly busyTimeout?: Duration.DurationInput
}

// Versioned so that a file written by an incompatible schema is ignored, not misread.
const TABLE = "cache_v1"

interface Row {
  readonly json: string
  readonly expires_at: number
}

type Connection =
  | { readonly _tag: "Open"; readonly db: Database }
  | { readonly _tag: "Closed"; readonly retryAt: number; readonly cause: unknown }

const isInMemory = (file: string) => file === "" || file === ":memory:"

const openDatabase = (file: string, busyTimeoutMillis: number): Database => {
  if (!isInMemory(file)) fs.mkdirSync(path.dirname(file), { recursive: true })
  const db = new Database(file, { create: true, readwrite: true, strict: true })
  try {
    // A file that is not a database opens fine and fails on its first statement, here.
    db.run(`PRAGMA busy_timeout = ${busyTimeoutMillis}`)
    db.run("PRAGMA journal_mode = WAL")
    db.run(`CREATE TABLE IF NOT EXISTS ${TABLE} (name TEXT PRIMARY KEY, json TEXT NOT NULL, expires_at INTEGER NOT NULL) STRICT, WITHOUT ROWID`)
    return db
  } catch (cause) {
    db.close()
    throw cause
  }
}

const reasonOf = (cause: unknown): CacheStoreReason => {
  if (!(cause instanceof SQLiteError)) return "Unavailable"
  const code = cause.code ?? ""
  if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) return "Busy"
  if (code.startsWith("SQLITE_CANTOPEN") || code.startsWith("SQLITE_NOTADB") || code.startsWith("SQLITE_CORRUPT")) {
    return "Unavailable"
  }
  return "Rejected"
}

export const SqliteStoreLive = (options: SqliteStoreOptions): Layer.Layer<CacheStore> =>
  Layer.scoped(
    CacheStore,
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

      /** Runs `use` on an open database, reopening at most every `reopenAfter`, failing fast between tries. */
      const withDatabase = <A>(operation: "get" | "set", use: (db: Database, now: number) => A) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const db = connection._tag === "Open"
            ? Option.some(connection.db)
            : now >= connection.retryAt
            ? connect(now)
            : Option.none()
          if (Option.isNone(db)) {
            const cause = connection._tag === "Closed" ? connection.cause : undefined
            return yield* new CacheStoreError({ store: "sqlite", operation, reason: reasonOf(cause), cause })
          }
          return yield* Effect.try({
            try: () => use(db.value, now),
            catch: (cause) => new CacheStoreError({ store: "sqlite", operation, reason: reasonOf(cause), cause })
          }).pipe(
            // A lock passes; anything else (read-only, I/O error, a table gone) gets a fresh handle later.
            Effect.tapError((error) => error.reason === "Busy" ? Effect.void : Effect.sync(() => drop(now, error.cause)))
          )
        })

      yield* Effect.acquireRelease(
        Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => connect(now))),
        () => Effect.sync(() => drop(Number.POSITIVE_INFINITY, undefined))
      )

      return CacheStore.of({
        kind: "sqlite",
        location: options.path,
        get: Effect.fn("SqliteStore.get")(function*(name: string) {
          const row = yield* withDatabase("get", (db, now) =>
            db.query<Row, [string, number]>(`SELECT json, expires_at FROM ${TABLE} WHERE name = ? AND expires_at > ?`).get(name, now))
          return Option.map(Option.fromNullable(row), (r) => ({ json: r.json, expiresAt: r.expires_at }))
        }),
        set: Effect.fn("SqliteStore.set")(function*(name: string, json: string, ttl: Duration.Duration) {
          yield* withDatabase("set", (db, now) =>
            db.transaction(() => {
              db.query(
                `INSERT INTO ${TABLE} (name, json, expires_at) VALUES (?, ?, ?)
                 ON CONFLICT (name) DO UPDATE SET json = excluded.json, expires_at = excluded.expires_at`
              ).run(name, json, expiryOf(now, ttl))
              db.query(`DELETE FROM ${TABLE} WHERE expires_at <= ?`).run(now)
            })())
        })
      })
    })
  )
