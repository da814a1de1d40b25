/**
 * The L2 store of a cluster: Bun's `RedisClient` at `REDIS_URL`, keys under `dashcast:cache:`. Each
 * value carries its absolute expiry by Effect's `Clock` (`<expiresAt> <json>`) and a Redis `PX`, so
 * expired keys also leave Redis. Calls fail fast while disconnected; the client reconnects by itself.
 */
import { RedisClient } from "bun"
import { Clock, Duration, Effect, Layer, Option, Redacted } from "effect"
import { CacheStore, CacheStoreError, type CacheStoreEntry, expiryOf } from "./CacheStore.js"

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

// Network timeouts are real time, also when a test drives the Clock.
const realClock = Clock.make()

/** The URL without credentials, for logs. */
const locationOf = (url: string): string =>
  URL.canParse(url) ? `${new URL(url).protocol}//${new URL(url).host}` : "redis"

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
      const timeout = Duration.decode(options.timeout ?? "1 second")
      const connectTimeout = Duration.decode(options.connectTimeout ?? "2 seconds")
      const scope = yield* Effect.scope
      // Set when the client has used up its reconnection attempts and will not try again by itself.
      let gaveUp = false

      const client = yield* Effect.acquireRelease(
        Effect.try({
          try: () =>
            new RedisClient(Redacted.value(options.url), {
              // Without the offline queue, calls while disconnected are rejected at once instead of piling up.
              enableOfflineQueue: false,
              autoReconnect: true,
              maxRetries: options.maxRetries ?? 1_000_000,
              connectionTimeout: Duration.toMillis(connectTimeout)
            }),
          catch: (cause) => new CacheStoreError({ store: "redis", operation: "open", reason: "Rejected", cause })
        }),
        (client) =>
          Effect.sync(() => {
            client.onclose = null
            client.close()
          })
      )
      client.onconnect = () => {
        gaveUp = false
      }
      client.onclose = () => {
        gaveUp = true
      }

      const connect = Effect.tryPromise(() => client.connect()).pipe(Effect.ignore)

      // A first connection, so that a warm start can read L2; the client keeps trying if this times out.
      yield* connect.pipe(Effect.timeout(connectTimeout), Effect.ignore, Effect.withClock(realClock))

      const call = <A>(operation: "get" | "set", run: () => Promise<A>) =>
        Effect.gen(function*() {
          if (gaveUp && !client.connected) {
            gaveUp = false
            yield* Effect.forkIn(connect, scope)
          }
          return yield* Effect.tryPromise({
            try: run,
            catch: (cause) =>
              new CacheStoreError({ store: "redis", operation, reason: client.connected ? "Rejected" : "Unavailable", cause })
          }).pipe(
            Effect.timeoutFail({
              duration: timeout,
              onTimeout: () =>
                new CacheStoreError({
                  store: "redis",
                  operation,
                  reason: "Timeout",
                  cause: new Error(`no reply within ${Duration.format(timeout)}`)
                })
            }),
            Effect.withClock(realClock)
          )
        })

      return CacheStore.of({
        kind: "redis",
        location: locationOf(Redacted.value(options.url)),
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
