/**
 * The default L2 store: one `bun:sqlite` file in WAL mode at `CACHE_PATH`, so the last summary
 * survives a restart. A file that cannot be opened or used is closed and reopened later by itself.
 */
import type { Database } from "bun:sqlite"
import { type Duration, Effect, Layer, Option } from "effect"
import { CacheStore, CacheStoreError, expiryOf } from "./CacheStore.js"
import { sqliteConnection } from "./SqliteConnection.js"

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

const createTable = (db: Database) =>
  db.run(`CREATE TABLE IF NOT EXISTS ${TABLE} (name TEXT PRIMARY KEY, json TEXT NOT NULL, expires_at INTEGER NOT NULL) STRICT, WITHOUT ROWID`)

export const SqliteStoreLive = (options: SqliteStoreOptions): Layer.Layer<CacheStore> =>
  Layer.scoped(
    CacheStore,
    Effect.gen(function*() {
      const withDatabase = yield* sqliteConnection(
        {
          path: options.path,
          reopenAfter: options.reopenAfter ?? "30 seconds",
          busyTimeout: options.busyTimeout ?? "200 millis",
          setup: createTable
        },
        (operation: "get" | "set", reason, cause) => new CacheStoreError({ store: "sqlite", operation, reason, cause })
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
