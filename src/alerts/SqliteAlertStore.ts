/**
 * Alerts in the cache's SQLite file (`CACHE_PATH`), in tables of their own, opened as the cache
 * opens it (WAL, a busy timeout): a rule and its state in one row, so that a compare-and-set is one
 * `UPDATE … WHERE version = ?`, and a firing joins the outbox in the same transaction. A file that
 * cannot be opened is tried again at most every `reopenAfter`; failures are errors of the call, never fatal.
 */
import type { Database } from "bun:sqlite"
import { type Duration, Effect, Layer, Option, Schema } from "effect"
import { sqliteConnection } from "../cache/SqliteConnection.js"
import { AlertRule, AlertState, ATTEMPTS_KEPT, DeliveryAttempt, PendingDelivery, type StoredAlert } from "./AlertRule.js"
import { AlertStore, AlertStoreError } from "./AlertStore.js"

export interface SqliteAlertStoreOptions {
  /** The database file (its folder is created), or `:memory:`. */
  readonly path: string
  readonly reopenAfter?: Duration.DurationInput
  /** How long a write waits for another writer's lock (bun:sqlite blocks the process meanwhile). */
  readonly busyTimeout?: Duration.DurationInput
}

// Versioned, as the cache's table is: a file written by an incompatible schema is ignored, not misread.
const RULES = "alert_rules_v1"
const OUTBOX = "alert_outbox_v1"
const ATTEMPTS = "alert_attempts_v1"

const RuleJson = Schema.parseJson(AlertRule)
const StateJson = Schema.parseJson(AlertState)
const PendingJson = Schema.parseJson(PendingDelivery)
const AttemptJson = Schema.parseJson(DeliveryAttempt)
const encodeRule = Schema.encodeSync(RuleJson)
const encodeState = Schema.encodeSync(StateJson)
const encodePending = Schema.encodeSync(PendingJson)
const encodeAttempt = Schema.encodeSync(AttemptJson)

interface RuleRow {
  readonly rule: string
  readonly state: string
}

const createTables = (db: Database) => {
  db.run(`CREATE TABLE IF NOT EXISTS ${RULES} (id TEXT PRIMARY KEY, rule TEXT NOT NULL, state TEXT NOT NULL, version INTEGER NOT NULL, created_at INTEGER NOT NULL) STRICT`)
  db.run(`CREATE TABLE IF NOT EXISTS ${OUTBOX} (webhook_id TEXT PRIMARY KEY, rule_id TEXT NOT NULL, pending TEXT NOT NULL) STRICT`)
  db.run(`CREATE TABLE IF NOT EXISTS ${ATTEMPTS} (n INTEGER PRIMARY KEY AUTOINCREMENT, rule_id TEXT NOT NULL, attempt TEXT NOT NULL) STRICT`)
  db.run(`CREATE INDEX IF NOT EXISTS ${ATTEMPTS}_rule ON ${ATTEMPTS} (rule_id, n)`)
}

export const SqliteAlertStoreLive = (options: SqliteAlertStoreOptions): Layer.Layer<AlertStore> =>
  Layer.scoped(
    AlertStore,
    Effect.gen(function*() {
      const withDatabase = yield* sqliteConnection(
        { path: options.path, reopenAfter: options.reopenAfter ?? "5 seconds", busyTimeout: options.busyTimeout ?? "1 second", setup: createTables },
        (operation: string, reason, cause) => new AlertStoreError({ store: "sqlite", operation, reason, cause })
      )

      const decodeRow = (row: RuleRow): Effect.Effect<Option.Option<StoredAlert>> =>
        Effect.all({ rule: Schema.decodeUnknown(RuleJson)(row.rule), state: Schema.decodeUnknown(StateJson)(row.state) }).pipe(
          Effect.map(Option.some),
          Effect.catchTag("ParseError", (error) =>
            Effect.as(Effect.logWarning("ignoring an alert rule that does not decode").pipe(Effect.annotateLogs({ error: error.message })), Option.none()))
        )

      return AlertStore.of({
        kind: "sqlite",
        create: (rule, state) =>
          withDatabase("create", (db) => {
            db.query(`INSERT INTO ${RULES} (id, rule, state, version, created_at) VALUES (?, ?, ?, ?, ?)`).run(
              rule.id,
              encodeRule(rule),
              encodeState(state),
              state.version,
              rule.created_at
            )
          }),
        list: Effect.flatMap(
          withDatabase("list", (db) => db.query<RuleRow, []>(`SELECT rule, state FROM ${RULES} ORDER BY created_at, id`).all()),
          (rows) => Effect.map(Effect.forEach(rows, decodeRow), (alerts) => alerts.flatMap(Option.toArray))
        ),
        get: (id) =>
          Effect.flatMap(
            withDatabase("get", (db) => db.query<RuleRow, [string]>(`SELECT rule, state FROM ${RULES} WHERE id = ?`).get(id)),
            (row) => (row === null ? Effect.succeed(Option.none()) : decodeRow(row))
          ),
        remove: (id) =>
          withDatabase("remove", (db) =>
            db.transaction(() => {
              const removed = db.query(`DELETE FROM ${RULES} WHERE id = ?`).run(id).changes > 0
              db.query(`DELETE FROM ${OUTBOX} WHERE rule_id = ?`).run(id)
              db.query(`DELETE FROM ${ATTEMPTS} WHERE rule_id = ?`).run(id)
              return removed
            }).immediate()),
        transition: (id, fromVersion, next, firing) =>
          withDatabase("transition", (db) =>
            db.transaction(() => {
              const changed = db.query(`UPDATE ${RULES} SET state = ?, version = ? WHERE id = ? AND version = ?`)
                .run(encodeState(next), next.version, id, fromVersion).changes > 0
              if (changed && Option.isSome(firing)) {
                db.query(`INSERT OR IGNORE INTO ${OUTBOX} (webhook_id, rule_id, pending) VALUES (?, ?, ?)`)
                  .run(firing.value.webhook_id, firing.value.rule_id, encodePending(firing.value))
              }
              return changed
            }).immediate()),
        pending: Effect.flatMap(
          withDatabase("pending", (db) => db.query<{ pending: string }, []>(`SELECT pending FROM ${OUTBOX} ORDER BY rowid`).all()),
          (rows) =>
            Effect.forEach(rows, (row) =>
              Schema.decodeUnknown(PendingJson)(row.pending).pipe(
                Effect.map(Option.some),
                Effect.catchTag("ParseError", () => Effect.succeed(Option.none<PendingDelivery>()))
              )).pipe(Effect.map((all) => all.flatMap(Option.toArray)))
        ),
        recordAttempt: (ruleId, webhookId, attempt, next) =>
          withDatabase("recordAttempt", (db) =>
            db.transaction(() => {
              if (db.query(`SELECT 1 FROM ${RULES} WHERE id = ?`).get(ruleId) === null) return
              db.query(`INSERT INTO ${ATTEMPTS} (rule_id, attempt) VALUES (?, ?)`).run(ruleId, encodeAttempt(attempt))
              db.query(
                `DELETE FROM ${ATTEMPTS} WHERE rule_id = ? AND n NOT IN (SELECT n FROM ${ATTEMPTS} WHERE rule_id = ? ORDER BY n DESC LIMIT ?)`
              ).run(ruleId, ruleId, ATTEMPTS_KEPT)
              if (Option.isSome(next)) {
                db.query(`UPDATE ${OUTBOX} SET pending = ? WHERE webhook_id = ?`).run(encodePending(next.value), webhookId)
              } else {
                db.query(`DELETE FROM ${OUTBOX} WHERE webhook_id = ?`).run(webhookId)
              }
            }).immediate()),
        attempts: (id) =>
          Effect.flatMap(
            withDatabase("attempts", (db) =>
              db.query<{ attempt: string }, [string]>(`SELECT attempt FROM ${ATTEMPTS} WHERE rule_id = ? ORDER BY n`).all(id)),
            (rows) =>
              Effect.forEach(rows, (row) =>
                Schema.decodeUnknown(AttemptJson)(row.attempt).pipe(
                  Effect.map(Option.some),
                  Effect.catchTag("ParseError", () => Effect.succeed(Option.none<DeliveryAttempt>()))
                )).pipe(Effect.map((all) => all.flatMap(Option.toArray)))
          )
      })
    })
  )
