import { describe, expect, it } from "@effect/vitest"
import { Database } from "bun:sqlite"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { ConfigProvider, Context, Duration, Effect, Layer, Option, Schema, TestClock } from "effect"
import { CacheManager, cacheKey, CacheStoreLive } from "../../src/cache/CacheManager.js"
import { CacheStore, CacheStoreError, type CacheStoreEntry, expiryOf } from "../../src/cache/CacheStore.js"
import { AppConfig } from "../../src/Config.js"
import { linesAt, withCapturedLogs } from "./CapturedLogs.js"

const Point = Schema.Struct({ x: Schema.Number, y: Schema.Number })
const PointKey = cacheKey("point", Point, "1 minute")

/** An L2 double whose reads and writes can be made to fail, with a Clock-driven expiry like the real ones. */
const makeFakeStore = () => {
  const entries = new Map<string, CacheStoreEntry>()
  const control = { failGets: false, failSets: false, gets: 0, sets: 0 }
  const failure = (operation: "get" | "set") =>
    new CacheStoreError({ store: "sqlite", operation, reason: "Unavailable", cause: new Error("store down") })
  const store = CacheStore.of({
    kind: "sqlite",
    location: "fake",
    get: (name) =>
      Effect.gen(function*() {
        control.gets++
        if (control.failGets) return yield* failure("get")
        const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
        return Option.filter(Option.fromNullable(entries.get(name)), (e) => e.expiresAt > now)
      }),
    set: (name, json, ttl) =>
      Effect.gen(function*() {
        control.sets++
        if (control.failSets) return yield* failure("set")
        const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
        entries.set(name, { json, expiresAt: expiryOf(now, ttl) })
      })
  })
  return { entries, control, layer: Layer.succeed(CacheStore, store) }
}

/** A manager over `store`, alive for the rest of the test's scope. */
const managerOver = <E>(store: Layer.Layer<CacheStore, E>) =>
  Effect.map(Layer.build(CacheManager.over(store)), Context.get(CacheManager))

describe("CacheManager", () => {
  it.scoped("getFresh reads what another instance wrote to L2 since, where get answers from L1; it falls back to L1 while L2 fails", () =>
    Effect.gen(function*() {
      const fake = makeFakeStore()
      const one = yield* managerOver(fake.layer)
      const other = yield* managerOver(fake.layer)
      yield* one.set(PointKey, { x: 1, y: 1 })
      expect(yield* other.get(PointKey)).toEqual(Option.some({ x: 1, y: 1 }))
      yield* one.set(PointKey, { x: 2, y: 2 })
      // L1 still holds the old value for `get`; `getFresh` asks L2 and refills L1.
      expect(yield* other.get(PointKey)).toEqual(Option.some({ x: 1, y: 1 }))
      expect(yield* other.getFresh(PointKey)).toEqual(Option.some({ x: 2, y: 2 }))
      expect(yield* other.get(PointKey)).toEqual(Option.some({ x: 2, y: 2 }))
      fake.control.failGets = true
      expect(yield* other.getFresh(PointKey)).toEqual(Option.some({ x: 2, y: 2 }))
    }))

  it.scoped("writes through to L2 and reads through from it into L1", () =>
    Effect.gen(function*() {
      const fake = makeFakeStore()
      const writer = yield* managerOver(fake.layer)
      yield* writer.set(PointKey, { x: 1, y: 2 })
      expect(fake.entries.get("point")?.json).toBe("{\"x\":1,\"y\":2}")

      // A second manager has an empty L1: its first read comes from L2, the next from L1.
      const reader = yield* managerOver(fake.layer)
      expect(yield* reader.get(PointKey)).toEqual(Option.some({ x: 1, y: 2 }))
      expect(yield* reader.get(PointKey)).toEqual(Option.some({ x: 1, y: 2 }))
      expect(fake.control.gets).toBe(1)
      const stats = yield* reader.stats
      expect(stats.l1).toMatchObject({ hits: 1, misses: 1, errors: 0, entries: 1 })
      expect(stats.l2).toMatchObject({ hits: 1, misses: 0, errors: 0, degraded: 0, outages: 0 })
    }))

  it.scoped("refills L1 with the entry's remaining lifetime, not a fresh TTL", () =>
    Effect.gen(function*() {
      const fake = makeFakeStore()
      const writer = yield* managerOver(fake.layer)
      yield* writer.set(PointKey, { x: 1, y: 2 })
      yield* TestClock.adjust("40 seconds")
      const reader = yield* managerOver(fake.layer)
      expect(yield* reader.get(PointKey)).toEqual(Option.some({ x: 1, y: 2 }))

      // 61 s after the write: with a fresh TTL the refilled L1 entry would still answer.
      yield* TestClock.adjust("21 seconds")
      expect(yield* reader.get(PointKey)).toEqual(Option.none())
      const stats = yield* reader.stats
      expect(stats.l1.hits).toBe(0)
      expect(stats.l2).toMatchObject({ hits: 1, misses: 1 })
    }))

  it.effect("expires L1 entries by their TTL", () =>
    Effect.gen(function*() {
      const fake = makeFakeStore()
      const cache = yield* CacheManager.pipe(Effect.provide(CacheManager.over(fake.layer)))
      yield* cache.set(PointKey, { x: 1, y: 2 })
      yield* TestClock.adjust(Duration.subtract(Duration.minutes(1), Duration.millis(1)))
      expect(yield* cache.get(PointKey)).toEqual(Option.some({ x: 1, y: 2 }))
      yield* TestClock.adjust("1 millis")
      expect(yield* cache.get(PointKey)).toEqual(Option.none())
    }))

  it.effect("treats a value that no longer decodes as a logged miss, in L1 and in L2", () =>
    withCapturedLogs((lines) =>
      Effect.gen(function*() {
        const fake = makeFakeStore()
        const cache = yield* CacheManager.pipe(Effect.provide(CacheManager.over(fake.layer)))
        // An older version stored a different shape; a crash left half a document.
        fake.entries.set("point", { json: "{\"x\":\"one\"}", expiresAt: 60_000 })
        fake.entries.set("broken", { json: "{\"x\":1,", expiresAt: 60_000 })
        expect(yield* cache.get(PointKey)).toEqual(Option.none())
        expect(yield* cache.get(cacheKey("broken", Point, "1 minute"))).toEqual(Option.none())
        expect(yield* cache.stats).toMatchObject({ l2: { hits: 0, misses: 2, errors: 2 } })
        expect(linesAt(lines, "WARN", "no longer decodes").map((l) => l.annotations.tier)).toEqual(["l2", "l2"])

        // The same bytes under a key whose schema changed since they were written to L1.
        yield* cache.set(cacheKey("shape", Schema.Struct({ x: Schema.String }), "1 minute"), { x: "one" })
        expect(yield* cache.get(cacheKey("shape", Point, "1 minute"))).toEqual(Option.none())
        expect((yield* cache.stats).l1).toMatchObject({ hits: 0, errors: 1 })
        expect(linesAt(lines, "WARN", "no longer decodes").map((l) => l.annotations.tier)).toContain("l1")
      })
    ))

  it.effect("keeps serving from L1 while L2 fails, logging the outage once and its end once", () =>
    withCapturedLogs((lines) =>
      Effect.gen(function*() {
        const fake = makeFakeStore()
        const cache = yield* CacheManager.pipe(Effect.provide(CacheManager.over(fake.layer)))
        fake.control.failGets = true
        fake.control.failSets = true
        yield* cache.set(PointKey, { x: 1, y: 2 })
        yield* cache.set(PointKey, { x: 3, y: 4 })
        expect(yield* cache.get(PointKey)).toEqual(Option.some({ x: 3, y: 4 }))
        expect(yield* cache.get(cacheKey("other", Point, "1 minute"))).toEqual(Option.none())
        let stats = yield* cache.stats
        expect(stats.l2).toMatchObject({ errors: 3, degraded: 1, outages: 1, misses: 0 })
        expect(linesAt(lines, "WARN", "L2 cache unavailable")).toHaveLength(1)
        expect(linesAt(lines, "WARN", "L2 cache unavailable")[0]?.annotations).toMatchObject({
          store: "sqlite",
          operation: "set",
          reason: "Unavailable"
        })

        fake.control.failGets = false
        fake.control.failSets = false
        yield* TestClock.adjust("90 seconds")
        yield* cache.set(PointKey, { x: 5, y: 6 })
        expect(fake.entries.get("point")?.json).toBe("{\"x\":5,\"y\":6}")
        stats = yield* cache.stats
        expect(stats.l2).toMatchObject({ degraded: 0, outages: 1 })
        const recovered = linesAt(lines, "INFO", "L2 cache available again")
        expect(recovered).toHaveLength(1)
        expect(recovered[0]?.annotations).toMatchObject({ outage_seconds: 90, failed_operations: 3 })
      })
    ))

  it.effect("does not end a write outage on a read that works (no flapping with a read-only store)", () =>
    withCapturedLogs((lines) =>
      Effect.gen(function*() {
        const fake = makeFakeStore()
        const cache = yield* CacheManager.pipe(Effect.provide(CacheManager.over(fake.layer)))
        fake.control.failSets = true
        for (let i = 0; i < 3; i++) {
          yield* cache.set(PointKey, { x: i, y: i })
          expect(yield* cache.get(cacheKey("elsewhere", Point, "1 minute"))).toEqual(Option.none())
        }
        expect((yield* cache.stats).l2).toMatchObject({ degraded: 1, outages: 1, errors: 3 })
        expect(linesAt(lines, "WARN", "L2 cache unavailable")).toHaveLength(1)
        expect(linesAt(lines, "INFO", "available again")).toHaveLength(0)
      })
    ))

  it.effect("ends a read outage when a write works (the updater only reads at start)", () =>
    withCapturedLogs((lines) =>
      Effect.gen(function*() {
        const fake = makeFakeStore()
        const cache = yield* CacheManager.pipe(Effect.provide(CacheManager.over(fake.layer)))
        fake.control.failGets = true
        expect(yield* cache.get(PointKey)).toEqual(Option.none())
        fake.control.failGets = false
        yield* cache.set(PointKey, { x: 1, y: 1 })
        expect((yield* cache.stats).l2).toMatchObject({ degraded: 0, outages: 1, errors: 1 })
        expect(linesAt(lines, "INFO", "available again")).toHaveLength(1)
      })
    ))

  it.effect("bounds L1, evicting the least recently used entry", () =>
    Effect.gen(function*() {
      const fake = makeFakeStore()
      const cache = yield* CacheManager.pipe(Effect.provide(CacheManager.over(fake.layer)))
      const key = (i: number) => cacheKey(`k${i}`, Point, "1 minute")
      for (let i = 0; i < 1024; i++) yield* cache.set(key(i), { x: i, y: i })
      yield* cache.get(key(0))
      yield* cache.set(key(1024), { x: 0, y: 0 })
      expect((yield* cache.stats).l1.entries).toBe(1024)
      const before = fake.control.gets
      yield* cache.get(key(0))
      expect(fake.control.gets).toBe(before)
      expect(yield* cache.get(key(1))).toEqual(Option.some({ x: 1, y: 1 }))
      expect(fake.control.gets).toBe(before + 1)
    }))

  it.scoped("is built by default over SQLite at CACHE_PATH", () =>
    Effect.gen(function*() {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "dashcast-cache-"))),
        (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
      )
      const file = path.join(dir, "data", "dashcast.sqlite")
      const config = AppConfig.Default.pipe(
        Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map([["CACHE_PATH", file]]))))
      )
      const context = yield* Layer.build(Layer.merge(CacheManager.Default, CacheStoreLive).pipe(Layer.provide(config)))
      expect(Context.get(context, CacheStore).kind).toBe("sqlite")
      const cache = Context.get(context, CacheManager)
      yield* cache.set(PointKey, { x: 1, y: 2 })
      const db = new Database(file, { readonly: true })
      expect(db.query("SELECT json FROM cache_v1 WHERE name = 'point'").get()).toEqual({ json: "{\"x\":1,\"y\":2}" })
      db.close()
      expect((yield* cache.stats).l2).toMatchObject({ errors: 0, degraded: 0 })
    }))
})
