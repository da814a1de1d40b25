/**
 * The typed cache: values are encoded with their Schema, kept in a bounded in-memory L1 with
 * per-key TTL, and written through to the L2 `CacheStore` (SQLite, or Redis when `REDIS_URL` is set).
 * A read checks L1, then L2, and refills L1 for the rest of the entry's life. A value that no longer
 * decodes is a miss. An L2 failure degrades to L1: it is counted, logged once per outage, and L2 is
 * used again as soon as it answers.
 */
import { Clock, Duration, Effect, Layer, Option, type ParseResult, Schema } from "effect"
import { AppConfig } from "../Config.js"
import { CacheStore, type CacheStoreError, expiryOf } from "./CacheStore.js"
import { RedisStoreLive } from "./RedisStore.js"
import { SqliteStoreLive } from "./SqliteStore.js"

/** A cache entry's name, the Schema its value is stored with, and how long it lives. */
export interface CacheKey<A, I> {
  readonly name: string
  readonly schema: Schema.Schema<A, I>
  readonly ttl: Duration.Duration
  /** The value's JSON codec, built once per key rather than on every read and write. */
  readonly json: Schema.Schema<A, string>
  /** Writes a value as JSON: with the codec, or with the key's own encoder of the Schema's encoded form. */
  readonly toJson: (value: A) => Effect.Effect<string, ParseResult.ParseError>
}

/**
 * A cache key. `encode`, when given, replaces `Schema.encode` on writes (a value written every round
 * whose Schema is costly to run again, see `encodeSnapshot`); it must give what the Schema gives,
 * and reads still decode with the Schema.
 */
export const cacheKey = <A, I>(
  name: string,
  schema: Schema.Schema<A, I>,
  ttl: Duration.DurationInput,
  encode?: (value: A) => I
): CacheKey<A, I> => {
  const json = Schema.parseJson(schema)
  return {
    name,
    schema,
    ttl: Duration.decode(ttl),
    json,
    toJson: encode === undefined ? Schema.encode(json) : (value) => Effect.sync(() => JSON.stringify(encode(value)))
  }
}

/**
 * Counters of one tier since start. `hits` and `misses` count lookups (a value that does not decode
 * is a miss); `errors` counts values that did not decode and, for L2, operations that failed.
 */
export interface TierStats {
  readonly hits: number
  readonly misses: number
  readonly errors: number
}

export interface CacheStats {
  readonly l1: TierStats & { readonly entries: number }
  readonly l2: TierStats & {
    /** 1 while L2 is failing and the cache runs on L1 alone, else 0. */
    readonly degraded: number
    /** Outages since start (each logged once). */
    readonly outages: number
  }
}

/** The L2 store that the configuration asks for: Redis when `REDIS_URL` is set, else SQLite at `CACHE_PATH`. */
export const CacheStoreLive: Layer.Layer<CacheStore, CacheStoreError, AppConfig> = Layer.unwrapEffect(
  Effect.map(AppConfig, (config) =>
    Option.match(config.redisUrl, {
      onNone: () => SqliteStoreLive({ path: config.cachePath }),
      onSome: (url) => RedisStoreLive({ url })
    }))
)

interface L1Entry {
  readonly json: string
  readonly expiresAt: number
}

const L1_MAX_ENTRIES = 1024

type Operation = "get" | "set"

export class CacheManager extends Effect.Service<CacheManager>()("dashcast/CacheManager", {
  effect: Effect.gen(function*() {
    const store = yield* CacheStore
    // Insertion order makes the Map an LRU when a read re-inserts its entry.
    const l1 = new Map<string, L1Entry>()
    const l1Stats = { hits: 0, misses: 0, errors: 0 }
    const l2Stats = { hits: 0, misses: 0, errors: 0, outages: 0 }
    // The operations failing in the current outage. A read that works again clears reads only (a
    // read-only file still fails writes); a write that works proves the store healthy.
    const failing = new Set<Operation>()
    let outageStartedAt = 0
    let outageErrors = 0

    const remember = (name: string, entry: L1Entry) => {
      l1.delete(name)
      l1.set(name, entry)
      while (l1.size > L1_MAX_ENTRIES) {
        const oldest = l1.keys().next()
        if (oldest.done === true) break
        l1.delete(oldest.value)
      }
    }

    const decode = <A, I>(key: CacheKey<A, I>, json: string, tier: "l1" | "l2") =>
      Schema.decodeUnknown(key.json)(json).pipe(
        Effect.map(Option.some),
        Effect.catchTag("ParseError", (error) =>
          Effect.logWarning("cached value no longer decodes; treating it as a miss").pipe(
            Effect.annotateLogs({ key: key.name, tier, error: error.message }),
            Effect.as(Option.none<A>())
          ))
      )

    /** Runs an L2 operation; a failure is counted, logged once per outage, and becomes `None`. */
    const guarded = <A>(operation: Operation, key: string, effect: Effect.Effect<A, CacheStoreError>) =>
      Effect.matchEffect(effect, {
        onFailure: (error) =>
          Effect.gen(function*() {
            const now = yield* Clock.currentTimeMillis
            l2Stats.errors++
            const starts = failing.size === 0
            failing.add(operation)
            if (starts) {
              l2Stats.outages++
              outageStartedAt = now
              outageErrors = 0
            }
            outageErrors++
            const log = starts
              ? Effect.logWarning("L2 cache unavailable; serving from memory until it recovers")
              : Effect.logDebug("L2 cache still unavailable")
            yield* log.pipe(
              Effect.annotateLogs({ store: store.kind, location: store.location, operation, key, reason: error.reason, error: error.message })
            )
            return Option.none<A>()
          }),
        onSuccess: (value) =>
          Effect.gen(function*() {
            if (failing.size > 0) {
              if (operation === "set") failing.clear()
              else failing.delete("get")
              if (failing.size === 0) {
                const now = yield* Clock.currentTimeMillis
                yield* Effect.logInfo("L2 cache available again").pipe(
                  Effect.annotateLogs({
                    store: store.kind,
                    location: store.location,
                    outage_seconds: Math.round((now - outageStartedAt) / 1000),
                    failed_operations: outageErrors
                  })
                )
              }
            }
            return Option.some(value)
          })
      })

    /** A read through L1, or straight from L2 (`fresh`) when another instance may have written it. */
    const read = <A, I>(key: CacheKey<A, I>, fresh: boolean) => Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const entry = l1.get(key.name)
      if (!fresh && entry !== undefined && entry.expiresAt > now) {
        remember(key.name, entry)
        const value = yield* decode(key, entry.json, "l1")
        if (Option.isSome(value)) {
          l1Stats.hits++
          return value
        }
        l1Stats.errors++
      }
      if (!fresh) {
        l1Stats.misses++
        l1.delete(key.name)
      }

      const stored = yield* guarded("get", key.name, store.get(key.name))
      // L2 failing: what this instance has is better than nothing.
      if (Option.isNone(stored)) return fresh && entry !== undefined && entry.expiresAt > now ? yield* decode(key, entry.json, "l1") : Option.none<A>()
      if (Option.isNone(stored.value)) {
        l2Stats.misses++
        return Option.none<A>()
      }
      const found = stored.value.value
      const value = yield* decode(key, found.json, "l2")
      if (Option.isNone(value)) {
        l2Stats.errors++
        l2Stats.misses++
        return value
      }
      l2Stats.hits++
      // The refilled entry keeps the expiry it was stored with, not a fresh TTL.
      remember(key.name, found)
      return value
    })

    const get = Effect.fn("CacheManager.get")(<A, I>(key: CacheKey<A, I>) => read(key, false))
    /**
     * Reads L2 first (refilling L1): for a value another instance of a cluster may have rewritten
     * since this one last saw it. Falls back to L1 while L2 fails.
     */
    const getFresh = Effect.fn("CacheManager.getFresh")(<A, I>(key: CacheKey<A, I>) => read(key, true))

    const set = Effect.fn("CacheManager.set")(function*<A, I>(key: CacheKey<A, I>, value: A) {
      const now = yield* Clock.currentTimeMillis
      const json = yield* Effect.orDie(key.toJson(value))
      remember(key.name, { json, expiresAt: expiryOf(now, key.ttl) })
      yield* guarded("set", key.name, store.set(key.name, json, key.ttl))
    })

    /** Counters for `/metrics`, as plain numbers. */
    const stats: Effect.Effect<CacheStats> = Effect.sync(() => ({
      l1: { ...l1Stats, entries: l1.size },
      l2: { ...l2Stats, degraded: failing.size > 0 ? 1 : 0 }
    }))

    return { get, getFresh, set, stats } as const
  }),
  dependencies: [CacheStoreLive]
}) {
  /** The manager over a given L2 store (tests, tools), instead of the one the configuration picks. */
  static readonly over = <E, R>(store: Layer.Layer<CacheStore, E, R>): Layer.Layer<CacheManager, E, R> =>
    Layer.provide(CacheManager.DefaultWithoutDependencies, store)
}
