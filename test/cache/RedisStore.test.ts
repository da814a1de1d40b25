import { describe, expect, it } from "@effect/vitest"
import { RedisClient } from "bun"
import { ConfigProvider, Context, Duration, Effect, Layer, Option, Redacted, Schema, TestClock } from "effect"
import { CacheManager, cacheKey, CacheStoreLive } from "../../src/cache/CacheManager.js"
import { CacheStore } from "../../src/cache/CacheStore.js"
import { KEY_PREFIX, RedisStoreLive, type RedisStoreOptions } from "../../src/cache/RedisStore.js"
import { AppConfig } from "../../src/Config.js"
import { makeRedisServer, type RedisServer } from "../support/RedisServer.js"
import { hasTool } from "../support/SystemTools.js"
import { linesAt, withCapturedLogs } from "./CapturedLogs.js"

const Point = Schema.Struct({ x: Schema.Number, y: Schema.Number })
const PointKey = cacheKey("point", Point, "1 minute")

type StoreOptions = Omit<RedisStoreOptions, "url">

const storeOn = (server: RedisServer, options: StoreOptions = {}) =>
  Effect.map(Layer.build(RedisStoreLive({ url: Redacted.make(server.url), ...options })), Context.get(CacheStore))
const managerOn = (server: RedisServer, options: StoreOptions = {}) =>
  Effect.map(
    Layer.build(CacheManager.over(RedisStoreLive({ url: Redacted.make(server.url), ...options }))),
    Context.get(CacheManager)
  )

/** A plain client to look at what the store wrote, as another instance or an operator would. */
const inspect = (server: RedisServer) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const client = new RedisClient(server.url)
      await client.connect()
      return client
    }),
    (client) => Effect.sync(() => client.close())
  )

/** Real time: the client reconnects with its own backoff (up to 2 s between attempts). */
const eventually = <E, R>(attempt: Effect.Effect<boolean, E, R>, within: Duration.DurationInput = "10 seconds") =>
  Effect.gen(function*() {
    const deadline = Date.now() + Duration.toMillis(within)
    while (Date.now() < deadline) {
      if (yield* attempt) return
      yield* Effect.promise(() => Bun.sleep(50))
    }
    return yield* Effect.die(new Error("condition not reached in time"))
  })

describe.skipIf(!hasTool("redis-server"))("RedisStore", () => {
  it.scoped("writes SET key value PX under dashcast:cache: and serves a fresh manager (shared L2)", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      const redis = yield* inspect(server)
      const writer = yield* managerOn(server)
      yield* writer.set(PointKey, { x: 1, y: 2 })

      const raw = yield* Effect.promise(() => redis.get(`${KEY_PREFIX}point`))
      expect(raw).toBe("60000 {\"x\":1,\"y\":2}")
      const pttl = yield* Effect.promise(() => redis.send("PTTL", [`${KEY_PREFIX}point`]))
      expect(pttl).toBeGreaterThan(55_000)
      expect(pttl).toBeLessThanOrEqual(60_000)

      const reader = yield* managerOn(server)
      expect(yield* reader.get(PointKey)).toEqual(Option.some({ x: 1, y: 2 }))
      expect((yield* reader.stats).l2).toMatchObject({ hits: 1, errors: 0 })
    }))

  it.scoped("honours the stored expiry by the Clock, before Redis drops the key", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      const redis = yield* inspect(server)
      const store = yield* storeOn(server)
      yield* store.set("a", "{}", Duration.minutes(1))
      yield* TestClock.adjust("59999 millis")
      expect(yield* store.get("a")).toEqual(Option.some({ json: "{}", expiresAt: 60_000 }))
      yield* TestClock.adjust("1 millis")
      expect(yield* store.get("a")).toEqual(Option.none())
      expect(yield* Effect.promise(() => redis.exists(`${KEY_PREFIX}a`))).toBe(true)
    }))

  it.scoped("treats a malformed stored value as a logged miss", () =>
    withCapturedLogs((lines) =>
      Effect.gen(function*() {
        const server = yield* makeRedisServer
        const redis = yield* inspect(server)
        yield* Effect.promise(() => redis.set(`${KEY_PREFIX}point`, "{\"x\":1,\"y\":2}"))
        const cache = yield* managerOn(server)
        expect(yield* cache.get(PointKey)).toEqual(Option.none())
        expect(linesAt(lines, "WARN", "malformed")).toHaveLength(1)
        expect((yield* cache.stats).l2).toMatchObject({ misses: 1, degraded: 0 })
      })
    ))

  it.scoped("keeps working from L1 while Redis is down, logs once, and writes L2 again after a restart", () =>
    withCapturedLogs((lines) =>
      Effect.gen(function*() {
        const server = yield* makeRedisServer
        const cache = yield* managerOn(server)
        yield* cache.set(PointKey, { x: 1, y: 1 })

        yield* server.stop
        const started = Date.now()
        for (let i = 2; i <= 4; i++) yield* cache.set(PointKey, { x: i, y: i })
        expect(yield* cache.get(PointKey)).toEqual(Option.some({ x: 4, y: 4 }))
        expect(yield* cache.get(cacheKey("missing", Point, "1 minute"))).toEqual(Option.none())
        expect(Date.now() - started).toBeLessThan(500)
        expect((yield* cache.stats).l2).toMatchObject({ errors: 4, degraded: 1, outages: 1 })
        expect(linesAt(lines, "WARN", "L2 cache unavailable")).toHaveLength(1)
        expect(linesAt(lines, "WARN", "L2 cache unavailable")[0]?.annotations).toMatchObject({
          store: "redis",
          location: `redis://127.0.0.1:${server.port}`,
          reason: "Unavailable"
        })

        yield* server.start
        let n = 10
        yield* eventually(
          Effect.gen(function*() {
            yield* cache.set(PointKey, { x: ++n, y: 0 })
            return (yield* cache.stats).l2.degraded === 0
          })
        )
        const redis = yield* inspect(server)
        expect(yield* Effect.promise(() => redis.get(`${KEY_PREFIX}point`))).toBe(`60000 {"x":${n},"y":0}`)
        expect(linesAt(lines, "WARN", "L2 cache unavailable")).toHaveLength(1)
        expect(linesAt(lines, "INFO", "L2 cache available again")).toHaveLength(1)
        expect((yield* cache.stats).l2.outages).toBe(1)
      })
    ))

  it.scoped("starts while Redis is unreachable and uses it once it comes up", () =>
    withCapturedLogs((lines) =>
      Effect.gen(function*() {
        const server = yield* makeRedisServer
        yield* server.stop
        const cache = yield* managerOn(server, { connectTimeout: "200 millis" })
        expect(yield* cache.get(PointKey)).toEqual(Option.none())
        yield* cache.set(PointKey, { x: 1, y: 2 })
        expect(yield* cache.get(PointKey)).toEqual(Option.some({ x: 1, y: 2 }))
        expect(linesAt(lines, "WARN", "L2 cache unavailable")).toHaveLength(1)

        yield* server.start
        yield* eventually(
          Effect.gen(function*() {
            yield* cache.set(PointKey, { x: 3, y: 4 })
            return (yield* cache.stats).l2.degraded === 0
          })
        )
        const redis = yield* inspect(server)
        expect(yield* Effect.promise(() => redis.get(`${KEY_PREFIX}point`))).toBe("60000 {\"x\":3,\"y\":4}")
        expect(linesAt(lines, "INFO", "L2 cache available again")).toHaveLength(1)
      })
    ))

  it.scoped("reconnects after the client has used up its reconnection attempts", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      const cache = yield* managerOn(server, { maxRetries: 1 })
      yield* server.stop
      yield* cache.set(PointKey, { x: 1, y: 1 })
      // One attempt after 50 ms, then the client gives up for good unless told to connect again.
      yield* Effect.promise(() => Bun.sleep(400))
      yield* server.start
      yield* eventually(
        Effect.gen(function*() {
          yield* cache.set(PointKey, { x: 2, y: 2 })
          return (yield* cache.stats).l2.degraded === 0
        }),
        "5 seconds"
      )
    }))

  it.scoped("fails fast on a server that does not answer (per-call timeout)", () =>
    withCapturedLogs((lines) =>
      Effect.gen(function*() {
        const server = yield* makeRedisServer
        const cache = yield* managerOn(server, { timeout: "200 millis" })
        yield* cache.set(PointKey, { x: 1, y: 1 })
        yield* server.pause
        yield* Effect.addFinalizer(() => server.resume)
        const started = Date.now()
        yield* cache.set(PointKey, { x: 2, y: 2 })
        expect(yield* cache.get(cacheKey("missing", Point, "1 minute"))).toEqual(Option.none())
        expect(Date.now() - started).toBeLessThan(1_000)
        expect(yield* cache.get(PointKey)).toEqual(Option.some({ x: 2, y: 2 }))
        expect(linesAt(lines, "WARN", "L2 cache unavailable")[0]?.annotations).toMatchObject({ reason: "Timeout" })
        expect((yield* cache.stats).l2).toMatchObject({ errors: 2, degraded: 1 })

        yield* server.resume
        yield* eventually(
          Effect.gen(function*() {
            yield* cache.set(PointKey, { x: 3, y: 3 })
            return (yield* cache.stats).l2.degraded === 0
          })
        )
      })
    ))

  it.scoped("is the store CacheStoreLive picks when REDIS_URL is set", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      const config = AppConfig.Default.pipe(
        Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map([["REDIS_URL", server.url]]))))
      )
      const store = Context.get(yield* Layer.build(CacheStoreLive.pipe(Layer.provide(config))), CacheStore)
      expect(store.kind).toBe("redis")
      yield* store.set("picked", "{}", Duration.minutes(1))
      const redis = yield* inspect(server)
      expect(yield* Effect.promise(() => redis.exists(`${KEY_PREFIX}picked`))).toBe(true)
    }))

  it.scoped("logs where Redis is without its credentials, and refuses a URL that is not Redis", () =>
    Effect.gen(function*() {
      const store = Context.get(
        yield* Layer.build(RedisStoreLive({ url: Redacted.make("redis://user:secret@127.0.0.1:1/0"), connectTimeout: "50 millis" })),
        CacheStore
      )
      expect(store.location).toBe("redis://127.0.0.1:1")
      const refused = yield* Effect.flip(Layer.build(RedisStoreLive({ url: Redacted.make("http://127.0.0.1:1") })))
      expect(refused).toMatchObject({ _tag: "CacheStoreError", operation: "open", reason: "Rejected" })
    }))
})
