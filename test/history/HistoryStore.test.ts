/**
 * Both stores of the price history against one contract (src/history/HistoryStore.ts): a bucket
 * holds the newest live point, seeds only fill empty buckets, reads return each tier since a time,
 * retention drops what is too old, and what was written is there for the next store on the same
 * file or Redis (a restart, or another instance of a cluster).
 */
import { describe, expect, it } from "@effect/vitest"
import { RedisClient } from "bun"
import { Context, Effect, Layer, Redacted, type Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { HistoryStore, type HistoryWrite } from "../../src/history/HistoryStore.js"
import { historyKey, RedisHistoryStoreLive } from "../../src/history/RedisHistoryStore.js"
import { SqliteHistoryStoreLive } from "../../src/history/SqliteHistoryStore.js"
import { DAY_TIER, HOUR_TIER, MINUTE_TIER, type Point, type Tier, TIERS } from "../../src/history/Tiers.js"
import { makeRedisServer } from "../support/RedisServer.js"
import { hasTool } from "../support/SystemTools.js"

const M = 60_000
const H = 60 * M
const D = 24 * H
const NOW = Date.parse("2026-11-20T12:00:00Z")

const live = (asset: string, currency: string, points: ReadonlyArray<Point>, tiers: ReadonlyArray<Tier> = TIERS): HistoryWrite => ({
  asset,
  currency,
  mode: "live",
  tiers,
  points
})
const seed = (asset: string, currency: string, points: ReadonlyArray<Point>, tiers: ReadonlyArray<Tier> = [HOUR_TIER, DAY_TIER]): HistoryWrite => ({
  asset,
  currency,
  mode: "seed",
  tiers,
  points
})

/** Opens a store; `reopen` gives another one on the same file or Redis. */
type Opener = () => Effect.Effect<HistoryStore["Type"], unknown, Scope.Scope>

const contract = (name: string, setup: Effect.Effect<Opener, unknown, Scope.Scope>) =>
  describe(name, () => {
    it.scoped("keeps the newest live point of each bucket in each tier, never an older one", () =>
      Effect.gen(function*() {
        const store = yield* (yield* setup)()
        yield* store.write([live("bitcoin", "usd", [[NOW - 50 * M, 100], [NOW - 50 * M + 20_000, 101], [NOW - 10 * M, 105]])], NOW)
        // An older point of a bucket already written (a relayed round arriving late) changes nothing.
        yield* store.write([live("bitcoin", "usd", [[NOW - 50 * M + 10_000, 999]])], NOW)
        const [series] = yield* store.read([{ asset: "bitcoin", currency: "usd" }], TIERS, NOW - D)
        expect(series).toEqual([
          [[NOW - 50 * M + 20_000, 101], [NOW - 10 * M, 105]],
          // 11:10 and 11:50 are one hour bucket (11:00-12:00) and one day: the newest holds it.
          [[NOW - 10 * M, 105]],
          [[NOW - 10 * M, 105]]
        ])
      }))

    it.scoped("fills only empty buckets from seeds, and a live point replaces a seed of its bucket", () =>
      Effect.gen(function*() {
        const store = yield* (yield* setup)()
        yield* store.write([live("ethereum", "eur", [[NOW - 30 * M, 3_000]])], NOW)
        const sparkline: Array<Point> = Array.from({ length: 5 }, (_, i) => [NOW - (4 - i) * H, 2_900 + i])
        yield* store.write([seed("ethereum", "eur", sparkline)], NOW)
        const [series] = yield* store.read([{ asset: "ethereum", currency: "eur" }], [HOUR_TIER], NOW - D)
        // The seed of the 11:00 bucket is not taken (the live point is there); 12:00 is a new bucket.
        expect(series?.[0]).toEqual([[NOW - 4 * H, 2_900], [NOW - 3 * H, 2_901], [NOW - 2 * H, 2_902], [NOW - 30 * M, 3_000], [NOW, 2_904]])
        yield* store.write([live("ethereum", "eur", [[NOW + 5 * M, 3_010]])], NOW + 5 * M)
        const [after] = yield* store.read([{ asset: "ethereum", currency: "eur" }], [HOUR_TIER], NOW - 90 * M)
        expect(after?.[0]).toEqual([[NOW - 30 * M, 3_000], [NOW + 5 * M, 3_010]])
      }))

    it.scoped("keeps series apart and reads several at once, each since the time asked", () =>
      Effect.gen(function*() {
        const store = yield* (yield* setup)()
        yield* store.write([
          live("bitcoin", "usd", [[NOW - 3 * H, 1]], [HOUR_TIER]),
          live("bitcoin", "eur", [[NOW - 3 * H, 2]], [HOUR_TIER]),
          live("solana", "usd", [[NOW - 5 * H, 3], [NOW - 1 * H, 4]], [HOUR_TIER])
        ], NOW)
        const read = yield* store.read(
          [{ asset: "solana", currency: "usd" }, { asset: "bitcoin", currency: "eur" }, { asset: "tether", currency: "usd" }],
          [HOUR_TIER],
          NOW - 2 * H
        )
        expect(read).toEqual([[[[NOW - 1 * H, 4]]], [[]], [[]]])
      }))

    it.scoped("drops what is past each tier's retention and does not store it", () =>
      Effect.gen(function*() {
        const store = yield* (yield* setup)()
        const old: Array<Point> = [[NOW - 26 * H, 1], [NOW - 2 * H, 2]]
        yield* store.write([live("bitcoin", "usd", old)], NOW)
        const [series] = yield* store.read([{ asset: "bitcoin", currency: "usd" }], TIERS, 0)
        // The minute tier keeps 25 hours; the hour and day tiers keep both (10:00 yesterday and today).
        expect(series).toEqual([[[NOW - 2 * H, 2]], old, old])
        // Two days later, a new point: the minute tier forgets the old ones.
        yield* store.write([live("bitcoin", "usd", [[NOW + 2 * D, 3]])], NOW + 2 * D)
        const [later] = yield* store.read([{ asset: "bitcoin", currency: "usd" }], [MINUTE_TIER], 0)
        expect(later).toEqual([[[NOW + 2 * D, 3]]])
      }))

    it.scoped("is there for the next store on the same L2 (a restart, another instance)", () =>
      Effect.gen(function*() {
        const open = yield* setup
        const first = yield* open()
        const points: Array<Point> = Array.from({ length: 168 }, (_, i) => [NOW - (167 - i) * H, 60_000 + i])
        yield* first.write([seed("bitcoin", "usd", points), live("bitcoin", "usd", [[NOW, 61_000]])], NOW)
        const second = yield* open()
        const [series] = yield* second.read([{ asset: "bitcoin", currency: "usd" }], [HOUR_TIER], NOW - 7 * D)
        expect(series?.[0]).toHaveLength(168)
        expect(series?.[0]?.at(-1)).toEqual([NOW, 61_000])
        expect(series?.[0]?.[0]).toEqual([NOW - 167 * H, 60_000])
      }))
  })

const sqliteFile = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "i13-history-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
).pipe(Effect.map((dir) => path.join(dir, "nested", "cache.sqlite")))

contract(
  "SqliteHistoryStore",
  Effect.map(sqliteFile, (file): Opener => () => Effect.map(Layer.build(SqliteHistoryStoreLive({ path: file })), Context.get(HistoryStore)))
)

describe("SqliteHistoryStore alone", () => {
  it.scoped("trims series nobody writes any more (an asset removed from ASSETS)", () =>
    Effect.gen(function*() {
      const file = yield* sqliteFile
      const store = yield* Effect.map(Layer.build(SqliteHistoryStoreLive({ path: file })), Context.get(HistoryStore))
      yield* store.write([live("gone", "usd", [[NOW - 2 * H, 1]])], NOW)
      yield* store.trim(NOW + 30 * H)
      const [series] = yield* store.read([{ asset: "gone", currency: "usd" }], TIERS, 0)
      expect(series).toEqual([[], [[NOW - 2 * H, 1]], [[NOW - 2 * H, 1]]])
    }))

  it.scoped("fails with a typed error when the file cannot be used, and works once it can", () =>
    Effect.gen(function*() {
      const file = yield* sqliteFile
      fs.mkdirSync(path.dirname(file), { recursive: true })
      fs.writeFileSync(file, "this is not a database, it is a text file of some length ".repeat(20))
      const store = yield* Effect.map(Layer.build(SqliteHistoryStoreLive({ path: file, reopenAfter: "0 millis" })), Context.get(HistoryStore))
      const error = yield* Effect.flip(store.write([live("bitcoin", "usd", [[NOW, 1]])], NOW))
      expect(error._tag).toBe("HistoryStoreError")
      expect(error.message).toMatch(/^history sqlite write failed \(Unavailable\)/)
      fs.rmSync(file)
      yield* store.write([live("bitcoin", "usd", [[NOW, 1]])], NOW)
      expect((yield* store.read([{ asset: "bitcoin", currency: "usd" }], [DAY_TIER], 0))[0]).toEqual([[[NOW, 1]]])
    }))
})

describe.skipIf(!hasTool("redis-server"))("RedisHistoryStore", () => {
  contract(
    "on a real Redis",
    Effect.map(makeRedisServer, (server): Opener => () =>
      Effect.map(Layer.build(RedisHistoryStoreLive({ url: Redacted.make(server.url) })), Context.get(HistoryStore)))
  )

  it.scoped("keeps one sorted set per series and tier that expires a retention after its last write", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      const store = yield* Effect.map(Layer.build(RedisHistoryStoreLive({ url: Redacted.make(server.url) })), Context.get(HistoryStore))
      yield* store.write([live("bitcoin", "usd", [[NOW - M, 64_000.5]])], NOW)
      const redis = yield* Effect.acquireRelease(
        Effect.promise(async () => {
          const client = new RedisClient(server.url)
          await client.connect()
          return client
        }),
        (client) => Effect.sync(() => client.close())
      )
      const keys = (yield* Effect.promise(() => redis.send("KEYS", ["dashcast:history:*"]) as Promise<Array<string>>)).sort()
      expect(keys).toEqual(["dashcast:history:usd:bitcoin:day", "dashcast:history:usd:bitcoin:hour", "dashcast:history:usd:bitcoin:minute"])
      expect(yield* Effect.promise(() => redis.send("ZRANGE", [historyKey("usd", "bitcoin", HOUR_TIER), "0", "-1", "WITHSCORES"])))
        .toEqual([[`${NOW - M}:64000.5`, NOW - M]])
      const ttl = Number(yield* Effect.promise(() => redis.send("PTTL", [historyKey("usd", "bitcoin", MINUTE_TIER)])))
      expect(ttl).toBeGreaterThan(25 * H - 60_000)
      expect(ttl).toBeLessThanOrEqual(25 * H)
    }))

  it.scoped("two instances writing the same bucket at once leave one point, the newest", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      const open = () => Effect.map(Layer.build(RedisHistoryStoreLive({ url: Redacted.make(server.url) })), Context.get(HistoryStore))
      const [a, b] = [yield* open(), yield* open()]
      yield* Effect.all(
        Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? a : b).write([live("bitcoin", "usd", [[NOW + i * 1_000, 100 + i]])], NOW + i * 1_000)),
        { concurrency: "unbounded" }
      )
      const [series] = yield* a.read([{ asset: "bitcoin", currency: "usd" }], TIERS, 0)
      expect(series).toEqual([[[NOW + 39_000, 139]], [[NOW + 39_000, 139]], [[NOW + 39_000, 139]]])
    }))

  it.scoped("fails with a typed error within the timeout when Redis does not answer", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      const store = yield* Effect.map(
        Layer.build(RedisHistoryStoreLive({ url: Redacted.make(server.url), timeout: "300 millis" })),
        Context.get(HistoryStore)
      )
      yield* server.pause
      const started = Date.now()
      const error = yield* Effect.flip(store.read([{ asset: "bitcoin", currency: "usd" }], TIERS, 0))
      yield* server.resume
      expect(error.reason).toBe("Timeout")
      expect(Date.now() - started).toBeLessThan(2_000)
    }))
})
