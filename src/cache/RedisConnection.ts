/**
 * One `RedisClient` at `REDIS_URL`, as the cache, the price history and the alerts each hold one:
 * calls fail fast while disconnected (no offline queue) and each waits at most `timeout` of real
 * time; Redis down at start-up is not fatal, the client reconnects by itself, and once it has used up
 * its attempts the next call starts a new round.
 */
import { RedisClient } from "bun"
import { Clock, Duration, Effect, Redacted, type Scope } from "effect"

/** Why a call failed: Redis refused it, is not connected, or did not answer within the timeout. */
export type RedisReason = "Unavailable" | "Timeout" | "Rejected"

export interface RedisConnectionOptions {
  readonly url: Redacted.Redacted<string>
  /** Longest wait for one command before it counts as failed. */
  readonly timeout: Duration.DurationInput
  /** Longest wait for the first connection at start-up. */
  readonly connectTimeout: Duration.DurationInput
  /** Reconnection attempts (Bun backs off up to 2 seconds between them) before the client gives up. */
  readonly maxRetries?: number
}

export interface RedisConnection<Operation extends string, E> {
  readonly client: RedisClient
  /** Runs one command, failing with the caller's error when it is refused, disconnected or late. */
  readonly call: <A>(operation: Operation, run: () => Promise<A>) => Effect.Effect<A, E>
}

// Network timeouts are real time, also when a test drives the Clock.
const realClock = Clock.make()

/** The URL without credentials, for logs. */
export const locationOf = (url: Redacted.Redacted<string>): string => {
  const value = Redacted.value(url)
  return URL.canParse(value) ? `${new URL(value).protocol}//${new URL(value).host}` : "redis"
}

export const redisConnection = <Operation extends string, E>(
  options: RedisConnectionOptions,
  toError: (operation: Operation | "open", reason: RedisReason, cause: unknown) => E
): Effect.Effect<RedisConnection<Operation, E>, E, Scope.Scope> =>
  Effect.gen(function*() {
    const timeout = Duration.decode(options.timeout)
    const connectTimeout = Duration.decode(options.connectTimeout)
    const scope = yield* Effect.scope
    // Set when the client has used up its reconnection attempts and will not try again by itself.
    let gaveUp = false

    const client = yield* Effect.acquireRelease(
      Effect.try({
        try: () =>
          new RedisClient(Redacted.value(options.url), {
            enableOfflineQueue: false,
            autoReconnect: true,
            maxRetries: options.maxRetries ?? 1_000_000,
            connectionTimeout: Duration.toMillis(connectTimeout)
          }),
        catch: (cause) => toError("open", "Rejected", cause)
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

    // A first connection, so that a warm start can read Redis; the client keeps trying if this times out.
    yield* connect.pipe(Effect.timeout(connectTimeout), Effect.ignore, Effect.withClock(realClock))

    const call = <A>(operation: Operation, run: () => Promise<A>): Effect.Effect<A, E> =>
      Effect.gen(function*() {
        if (gaveUp && !client.connected) {
          gaveUp = false
          yield* Effect.forkIn(connect, scope)
        }
        return yield* Effect.tryPromise({
          try: run,
          catch: (cause) => toError(operation, client.connected ? "Rejected" : "Unavailable", cause)
        }).pipe(
          Effect.timeoutFail({
            duration: timeout,
            onTimeout: () => toError(operation, "Timeout", new Error(`no reply within ${Duration.format(timeout)}`))
          }),
          Effect.withClock(realClock)
        )
      })

    return { client, call }
  })
