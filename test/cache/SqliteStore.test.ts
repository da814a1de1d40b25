import { describe, expect, it } from "@effect/vitest"
import { Database } from "bun:sqlite"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Context, Duration, Effect, Layer, Option, Schema, TestClock } from "effect"
import { CacheManager, cacheKey } from "../../src/cache/CacheManager.js"
import { CacheStore } from "../../src/cache/CacheStore.js"
import { SqliteStoreLive, type SqliteStoreOptions } from "../../src/cache/SqliteStore.js"
import { linesAt, withCapturedLogs } from "./CapturedLogs.js"

const Point = Schema.Struct({ x: Schema.Number, y: Schema.Number })
const PointKey = cacheKey("point", Point, "1 minute")

/** A temp folder removed when the test's scope closes. */
const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "dashcast-sqlite-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

const storeAt = (options: SqliteStoreOptions) => Effect.map(Layer.build(SqliteStoreLive(options)), Context.get(CacheStore))
const managerAt = (options: SqliteStoreOptions) =>
  Effect.map(Layer.build(CacheManager.over(SqliteStoreLive(options))), Context.get(CacheManager))

/** What another process sees in the file. */
const rowsIn = (file: string) => {
  const db = new Database(file, { readonly: true })
  try {
    return db.query<{ name: string; json: string }, []>("SELECT name, json FROM cache_v1 ORDER BY name").all()
  } finally {
    db.close()
  }
}

describe("SqliteStore", () => {
  it.scoped(":memory: stores entries until their expiry by the Clock", () =>
    Effect.gen(function*() {
      const store = yield* storeAt({ path: ":memory:" })
      yield* store.set("a", "{\"v\":1}", Duration.seconds(10))
      expect(yield* store.get("a")).toEqual(Option.some({ json: "{\"v\":1}", expiresAt: 10_000 }))
      expect(yield* store.get("b")).toEqual(Option.none())
      yield* TestClock.adjust("9999 millis")
      expect(Option.isSome(yield* store.get("a"))).toBe(true)
      yield* TestClock.adjust("1 millis")
      expect(yield* store.get("a")).toEqual(Option.none())
    }))

  it.scoped("creates its folder, uses WAL, and survives a restart (warm start through a fresh manager)", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const file = path.join(dir, "nested", "data", "cache.sqlite")
      yield* Effect.scoped(Effect.flatMap(managerAt({ path: file }), (cache) => cache.set(PointKey, { x: 1, y: 2 })))

      const db = new Database(file, { readonly: true })
      expect(db.query("PRAGMA journal_mode").get()).toEqual({ journal_mode: "wal" })
      db.close()

      yield* TestClock.adjust("30 seconds")
      const cache = yield* managerAt({ path: file })
      expect(yield* cache.get(PointKey)).toEqual(Option.some({ x: 1, y: 2 }))
      expect((yield* cache.stats).l2).toMatchObject({ hits: 1, errors: 0 })
      // The refilled L1 entry lives only for the 30 s the stored one had left.
      yield* TestClock.adjust("30 seconds")
      expect(yield* cache.get(PointKey)).toEqual(Option.none())
    }))

  it.scoped("treats a stored value of an older shape as a logged miss", () =>
    withCapturedLogs((lines) =>
      Effect.gen(function*() {
        const dir = yield* tempDir
        const file = path.join(dir, "cache.sqlite")
        yield* Effect.scoped(Effect.flatMap(storeAt({ path: file }), (s) => s.set("point", "{\"lat\":1}", Duration.minutes(1))))
        const cache = yield* managerAt({ path: file })
        expect(yield* cache.get(PointKey)).toEqual(Option.none())
        expect(linesAt(lines, "WARN", "no longer decodes")).toHaveLength(1)
        yield* cache.set(PointKey, { x: 1, y: 2 })
        expect(rowsIn(file)).toEqual([{ name: "point", json: "{\"x\":1,\"y\":2}" }])
      })
    ))

  it.scoped("runs on L1 when the file is not a database, and reopens it at most every reopenAfter", () =>
    withCapturedLogs((lines) =>
      Effect.gen(function*() {
        const dir = yield* tempDir
        const file = path.join(dir, "cache.sqlite")
        const garbage = "this is not a database\n".repeat(500)
        fs.writeFileSync(file, garbage)
        const cache = yield* managerAt({ path: file, reopenAfter: "30 seconds" })

        expect(yield* cache.get(PointKey)).toEqual(Option.none())
        yield* cache.set(PointKey, { x: 1, y: 2 })
        yield* cache.set(PointKey, { x: 3, y: 4 })
        expect(yield* cache.get(PointKey)).toEqual(Option.some({ x: 3, y: 4 }))
        expect(fs.readFileSync(file, "utf8")).toBe(garbage)
        const warnings = linesAt(lines, "WARN", "L2 cache unavailable")
        expect(warnings).toHaveLength(1)
        expect(warnings[0]?.annotations).toMatchObject({ store: "sqlite", location: file, reason: "Unavailable" })
        expect(String(warnings[0]?.annotations.error)).toContain("not a database")
        expect((yield* cache.stats).l2).toMatchObject({ errors: 3, degraded: 1, outages: 1 })

        // The operator moves the bad file away. Within reopenAfter nothing touches the path.
        fs.rmSync(file)
        yield* TestClock.adjust("20 seconds")
        yield* cache.set(PointKey, { x: 5, y: 6 })
        expect(fs.existsSync(file)).toBe(false)
        yield* TestClock.adjust("10 seconds")
        yield* cache.set(PointKey, { x: 7, y: 8 })
        expect(rowsIn(file)).toEqual([{ name: "point", json: "{\"x\":7,\"y\":8}" }])
        expect(linesAt(lines, "WARN", "L2 cache unavailable")).toHaveLength(1)
        expect(linesAt(lines, "INFO", "L2 cache available again")).toHaveLength(1)
        expect((yield* cache.stats).l2).toMatchObject({ errors: 4, degraded: 0, outages: 1 })
      })
    ))

  it.scoped("runs on L1 when the path cannot be created or opened", () =>
    withCapturedLogs((lines) =>
      Effect.gen(function*() {
        const dir = yield* tempDir
        fs.writeFileSync(path.join(dir, "a-file"), "x")
        fs.mkdirSync(path.join(dir, "a-folder.sqlite"))
        // A folder under a regular file cannot be made; a folder cannot be opened as a database.
        for (const file of [path.join(dir, "a-file", "cache.sqlite"), path.join(dir, "a-folder.sqlite")]) {
          const cache = yield* managerAt({ path: file })
          yield* cache.set(PointKey, { x: 1, y: 2 })
          expect(yield* cache.get(PointKey)).toEqual(Option.some({ x: 1, y: 2 }))
          expect(yield* cache.get(cacheKey("missing", Point, "1 minute"))).toEqual(Option.none())
          expect((yield* cache.stats).l2).toMatchObject({ errors: 2, degraded: 1 })
        }
        expect(linesAt(lines, "WARN", "L2 cache unavailable").map((l) => l.annotations.location)).toEqual([
          path.join(dir, "a-file", "cache.sqlite"),
          path.join(dir, "a-folder.sqlite")
        ])
      })
    ))

  it.scoped("degrades writes while another process holds the lock, and writes again once it is released", () =>
    withCapturedLogs((lines) =>
      Effect.gen(function*() {
        const dir = yield* tempDir
        const file = path.join(dir, "cache.sqlite")
        const cache = yield* managerAt({ path: file, busyTimeout: "10 millis" })
        const elsewhere = cacheKey("elsewhere", Point, "1 minute")
        // Written by another instance, so it is in L2 but not in this manager's L1.
        yield* Effect.scoped(Effect.flatMap(storeAt({ path: file }), (s) => s.set(elsewhere.name, "{\"x\":0,\"y\":0}", Duration.minutes(1))))

        const other = new Database(file)
        yield* Effect.addFinalizer(() => Effect.sync(() => other.close()))
        other.run("BEGIN IMMEDIATE")
        for (let i = 1; i <= 3; i++) yield* cache.set(PointKey, { x: i, y: i })
        expect(yield* cache.get(PointKey)).toEqual(Option.some({ x: 3, y: 3 }))
        // WAL: reads still work, and a read that works must not end the write outage.
        expect(yield* cache.get(elsewhere)).toEqual(Option.some({ x: 0, y: 0 }))
        expect((yield* cache.stats).l2.hits).toBe(1)
        const warnings = linesAt(lines, "WARN", "L2 cache unavailable")
        expect(warnings).toHaveLength(1)
        expect(warnings[0]?.annotations).toMatchObject({ reason: "Busy", operation: "set" })
        expect((yield* cache.stats).l2).toMatchObject({ errors: 3, degraded: 1 })

        other.run("COMMIT")
        yield* cache.set(PointKey, { x: 4, y: 4 })
        expect(rowsIn(file)).toContainEqual({ name: "point", json: "{\"x\":4,\"y\":4}" })
        expect(linesAt(lines, "INFO", "L2 cache available again")).toHaveLength(1)
        expect((yield* cache.stats).l2).toMatchObject({ errors: 3, degraded: 0, outages: 1 })
      })
    ))

  it.scoped("drops a handle that fails for another reason than a lock, and reopens it after reopenAfter", () =>
    withCapturedLogs((lines) =>
      Effect.gen(function*() {
        const dir = yield* tempDir
        const file = path.join(dir, "cache.sqlite")
        const cache = yield* managerAt({ path: file, reopenAfter: "30 seconds" })
        yield* cache.set(PointKey, { x: 1, y: 1 })
        const other = new Database(file)
        other.run("DROP TABLE cache_v1")
        other.close()

        yield* cache.set(PointKey, { x: 2, y: 2 })
        expect(linesAt(lines, "WARN", "L2 cache unavailable")[0]?.annotations).toMatchObject({ reason: "Rejected" })
        yield* TestClock.adjust("30 seconds")
        yield* cache.set(PointKey, { x: 3, y: 3 })
        expect(rowsIn(file)).toEqual([{ name: "point", json: "{\"x\":3,\"y\":3}" }])
        expect(linesAt(lines, "INFO", "L2 cache available again")).toHaveLength(1)
      })
    ))
})
