/**
 * The typed cache: values are encoded with their Schema, kept in a bounded in-memory L1 with
 * per-key TTL, and written through to the L2 store. A value that no longer decodes is a miss.
 */
import { Clock, Duration, Effect, Option, Schema } from "effect"

/** A cache entry's name, the Schema its value is stored with, and how long it lives. */
export interface CacheKey<A, I> {
  readonly name: string
  readonly schema: Schema.Schema<A, I>
  readonly ttl: Duration.Duration
}

export const cacheKey = <A, I>(name: string, schema: Schema.Schema<A, I>, ttl: Duration.DurationInput): CacheKey<A, I> => ({
  name,
  schema,
  ttl: Duration.decode(ttl)
})

interface L1Entry {
  readonly json: string
  readonly expiresAt: number
}

const L1_MAX_ENTRIES = 1024

export class CacheManager extends Effect.Service<CacheManager>()("dashcast/CacheManager", {
  effect: Effect.sync(() => {
    // Insertion order makes the Map an LRU when a read re-inserts its entry.
    const l1 = new Map<string, L1Entry>()

    const get = Effect.fn("CacheManager.get")(function*<A, I>(key: CacheKey<A, I>) {
      const now = yield* Clock.currentTimeMillis
      const entry = l1.get(key.name)
      if (entry === undefined) return Option.none<A>()
      if (entry.expiresAt <= now) {
        l1.delete(key.name)
        return Option.none<A>()
      }
      l1.delete(key.name)
      l1.set(key.name, entry)
      return yield* Schema.decodeUnknown(Schema.parseJson(key.schema))(entry.json).pipe(
        Effect.map(Option.some),
        Effect.catchTag("ParseError", (error) =>
          Effect.logWarning("cached value no longer decodes; treating it as a miss").pipe(
            Effect.annotateLogs({ key: key.name, error: error.message }),
            Effect.as(Option.none<A>())
          ))
      )
    })

    const set = Effect.fn("CacheManager.set")(function*<A, I>(key: CacheKey<A, I>, value: A) {
      const now = yield* Clock.currentTimeMillis
      const json = yield* Effect.orDie(Schema.encode(Schema.parseJson(key.schema))(value))
      l1.delete(key.name)
      l1.set(key.name, { json, expiresAt: now + Duration.toMillis(key.ttl) })
      while (l1.size > L1_MAX_ENTRIES) {
        const oldest = l1.keys().next()
        if (oldest.done === true) break
        l1.delete(oldest.value)
      }
    })

    return { get, set } as const
  })
}) {}
