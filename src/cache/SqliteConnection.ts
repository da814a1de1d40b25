/**
 * One connection to the SQLite file at `CACHE_PATH`, as the cache, the price history and the alerts
 * each hold one: opened in WAL mode with a busy timeout, its tables created by the caller's `setup`;
 * a file that cannot be opened or used is closed and tried again at most every `reopenAfter`, and
 * calls fail fast in between. bun:sqlite is synchronous, so every call runs on the caller's thread.
 */
import { Database, SQLiteError } from "bun:sqlite"
import * as fs from "node:fs"
import * as path from "node:path"
import { Clock, Duration, Effect, Option, type Scope } from "effect"

/** Why a call failed: a lock (the handle is kept), a file that cannot be used, or a statement refused. */
export type SqliteReason = "Unavailable" | "Busy" | "Rejected"

export interface SqliteConnectionOptions {
  /** The database file (its folder is created), or `:memory:`. */
  readonly path: string
  /** After a failed open, or a failure that drops the handle, how long until the next try. */
  readonly reopenAfter: Duration.DurationInput
  /** How long a write waits for another writer's lock (it blocks the process meanwhile). */
  readonly busyTimeout: Duration.DurationInput
  /** Creates the caller's tables (and any pragma of its own) on a freshly opened handle. */
  readonly setup: (db: Database) => void
}

type Connection =
  | { readonly _tag: "Open"; readonly db: Database }
  | { readonly _tag: "Closed"; readonly retryAt: number; readonly cause: unknown }

const isInMemory = (file: string) => file === "" || file === ":memory:"

export const reasonOf = (cause: unknown): SqliteReason => {
  if (!(cause instanceof SQLiteError)) return "Unavailable"
  const code = cause.code ?? ""
  if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) return "Busy"
  if (code.startsWith("SQLITE_CANTOPEN") || code.startsWith("SQLITE_NOTADB") || code.startsWith("SQLITE_CORRUPT")) return "Unavailable"
  return "Rejected"
}

const openDatabase = (options: SqliteConnectionOptions): Database => {
  if (!isInMemory(options.path)) fs.mkdirSync(path.dirname(options.path), { recursive: true })
  const db = new Database(options.path, { create: true, readwrite: true, strict: true })
  try {
    // A file that is not a database opens fine and fails on its first statement, here.
    db.run(`PRAGMA busy_timeout = ${Duration.toMillis(options.busyTimeout)}`)
    db.run("PRAGMA journal_mode = WAL")
    options.setup(db)
    return db
  } catch (cause) {
    db.close()
    throw cause
  }
}

/**
 * Opens the connection for the scope (a failed first open is not fatal) and returns `withDatabase`:
 * it runs `use` on the open handle, reopening when due, and turns a failure into the caller's error.
 * A lock leaves the handle open; any other failure (read-only, I/O error, a table gone) drops it.
 */
export const sqliteConnection = <Operation extends string, E extends { readonly reason: string; readonly cause: unknown }>(
  options: SqliteConnectionOptions,
  toError: (operation: Operation, reason: SqliteReason, cause: unknown) => E
): Effect.Effect<
  <A>(operation: Operation, use: (db: Database, now: number) => A) => Effect.Effect<A, E>,
  never,
  Scope.Scope
> =>
  Effect.gen(function*() {
    const reopenAfterMillis = Duration.toMillis(options.reopenAfter)
    let connection: Connection = { _tag: "Closed", retryAt: Number.NEGATIVE_INFINITY, cause: undefined }

    const connect = (now: number): Option.Option<Database> => {
      try {
        const db = openDatabase(options)
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

    yield* Effect.acquireRelease(
      Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => connect(now))),
      () => Effect.sync(() => drop(Number.POSITIVE_INFINITY, undefined))
    )

    return <A>(operation: Operation, use: (db: Database, now: number) => A): Effect.Effect<A, E> =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const db = connection._tag === "Open" ? Option.some(connection.db) : now >= connection.retryAt ? connect(now) : Option.none()
        if (Option.isNone(db)) {
          const cause = connection._tag === "Closed" ? connection.cause : undefined
          return yield* Effect.fail(toError(operation, reasonOf(cause), cause))
        }
        return yield* Effect.try({
          try: () => use(db.value, now),
          catch: (cause) => toError(operation, reasonOf(cause), cause)
        }).pipe(Effect.tapError((error) => (error.reason === "Busy" ? Effect.void : Effect.sync(() => drop(now, error.cause)))))
      })
  })
