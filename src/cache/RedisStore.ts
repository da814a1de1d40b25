/**
 * The L2 store of a cluster: Bun's `RedisClient` at `REDIS_URL`, keys under `dashcast:cache:`. Each
 * value carries its absolute expiry by Effect's `Clock` (`<expiresAt> <json>`) and a Redis `PX`, so
 * expired keys also leave Redis. Calls fail fast while disconnected; the client reconnects by itself.
 */
import { Clock, Duration, Effect, Layer, Option, type Redacted } from "effect"
import { CacheStore, CacheStoreError, type CacheStoreEntry, expiryOf } from "./CacheStore.js"
import { locationOf, redisConnection } from "./RedisConnection.js"

export const KEY_PREFIX = "dashcast:cache:"

export interface RedisStoreOptions {
  readonly url: Redacted.Redacted<string>
  /** Longest wait for one command before it counts as failed. */
  readonly timeout?: Duration.DurationInput
  /** Longest wait for the first connection at start-up; Redis down at start is not fatal. */
  readonly connectTimeout?: Duration.DurationInput
  /**
   * Reconnection attempts (Bun backs off up to 2 seconds between them) before the client gives up;
   * after that, the next call starts a new round.
   */
  readonly maxRetries?: number
}

const decodeEnvelope = (raw: string): Option.Option<CacheStoreEntry> => {
  const space = raw.indexOf(" ")
  const expiresAt = Number(raw.slice(0, space))
  return space > 0 && Number.isSafeInteger(expiresAt)
    ? Option.some({ expiresAt, json: raw.slice(space + 1) })
    : Option.none()
}

export const RedisStoreLive = (options: RedisStoreOptions): Layer.Layer<CacheStore, CacheStoreError> =>
  Layer.scoped(
    CacheStore,
    Effect.gen(function*() {
      const { call, client } = yield* redisConnection(
        {
          url: options.url,
          timeout: options.timeout ?? "1 second",
          connectTimeout: options.connectTimeout ?? "2 seconds",
          ...(options.maxRetries === undefined ? {} : { maxRetries: options.maxRetries })
        },
        (operation: "open" | "get" | "set", reason, cause) => new CacheStoreError({ store: "redis", operation, reason, cause })
      )

      return CacheStore.of({
        kind: "redis",
        location: locationOf(options.url),
        get: Effect.fn("RedisStore.get")(function*(name: string) {
          const raw = yield* call("get", () => client.get(KEY_PREFIX + name))
          if (raw === null) return Option.none()
          const entry = decodeEnvelope(raw)
          if (Option.isNone(entry)) {
            yield* Effect.logWarning("ignoring a malformed cache value in Redis").pipe(Effect.annotateLogs({ key: name }))
            return Option.none()
          }
          const now = yield* Clock.currentTimeMillis
          return Option.filter(entry, (e) => e.expiresAt > now)
        }),
        set: Effect.fn("RedisStore.set")(function*(name: string, json: string, ttl: Duration.Duration) {
          const now = yield* Clock.currentTimeMillis
          const expiresAt = expiryOf(now, ttl)
          const px = Math.max(1, Math.ceil(Math.min(Duration.toMillis(ttl), Number.MAX_SAFE_INTEGER)))
          yield* call("set", () => client.set(KEY_PREFIX + name, `${expiresAt} ${json}`, "PX", px))
        })
      })
    })
  )
