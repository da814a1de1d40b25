/**
 * The cluster over Redis: a lease `dashcast:leader` (`SET NX PX`, renewed at a third of its life,
 * released on shutdown) picks the one instance that runs the schedule; `INCR dashcast:seq` numbers
 * summaries; the channel `dashcast:updates` carries every broadcast to every instance. While Redis
 * cannot be reached no lease can be held, so every instance polls on its own schedule and serves
 * its own clients; when Redis is back, one leader again. Nothing here is fatal.
 */
import { RedisClient } from "bun"
import { Clock, Duration, Effect, Layer, Option, Redacted, Schedule, SubscriptionRef } from "effect"
import { Cluster } from "./Cluster.js"

export const LEADER_KEY = "dashcast:leader"
export const SEQ_KEY = "dashcast:seq"
export const FETCH_GAP_KEY = "dashcast:fetch-gap"
export const UPDATES_CHANNEL = "dashcast:updates"

export interface RedisClusterOptions {
  readonly url: Redacted.Redacted<string>
  readonly leaseTtl: Duration.Duration
  /** This instance's name in the lease (unique per process). */
  readonly instanceId: string
  /** Longest wait for one Redis command. */
  readonly timeout?: Duration.DurationInput
}

// Renews only a lease this instance holds; releases likewise.
const RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
const RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
// INCR, but never at or below `floor` (a summary restored from a cache may be ahead of the counter).
const NEXT_SEQ =
  "local v = redis.call('incr', KEYS[1]); local f = tonumber(ARGV[1]); if v <= f then redis.call('set', KEYS[1], f + 1); return f + 1 end; return v"

// Network timeouts are real time, also when a test drives the Clock.
const realClock = Clock.make()

class RedisUnavailable {
  readonly _tag = "RedisUnavailable"
  constructor(readonly cause: unknown) {}
}

export const RedisClusterLive = (options: RedisClusterOptions): Layer.Layer<Cluster> =>
  Layer.scoped(
    Cluster,
    Effect.gen(function*() {
      const timeout = Duration.decode(options.timeout ?? "1 second")
      const ttlMillis = Math.max(1000, Duration.toMillis(options.leaseTtl))
      const url = Redacted.value(options.url)
      const clientOptions = { enableOfflineQueue: false, autoReconnect: true, maxRetries: 1_000_000, connectionTimeout: 2000 }
      const commands = yield* Effect.acquireRelease(
        Effect.sync(() => new RedisClient(url, clientOptions)),
        (client) => Effect.sync(() => client.close())
      )
      const subscriber = yield* Effect.acquireRelease(
        Effect.sync(() => new RedisClient(url, clientOptions)),
        (client) => Effect.sync(() => client.close())
      )

      const call = <A>(run: () => Promise<A>) =>
        Effect.tryPromise({ try: run, catch: (cause) => new RedisUnavailable(cause) }).pipe(
          Effect.timeoutFail({ duration: timeout, onTimeout: () => new RedisUnavailable("timeout") }),
          Effect.withClock(realClock)
        )
      const connect = (client: RedisClient) => call(() => client.connect()).pipe(Effect.ignore)

      // Start without waiting long: Redis down at start is a degraded cluster, not a failed start.
      yield* Effect.all([connect(commands), connect(subscriber)], { concurrency: 2 })

      let handler: (message: string) => void = () => {}
      // Subscribe once; Bun's client resubscribes by itself after a reconnect.
      yield* call(() => subscriber.subscribe(UPDATES_CHANNEL, (message) => handler(message))).pipe(
        Effect.tapError(() => connect(subscriber)),
        Effect.retry(Schedule.spaced("1 seconds")),
        Effect.tap(() => Effect.logInfo("subscribed to the cluster channel").pipe(Effect.annotateLogs({ channel: UPDATES_CHANNEL }))),
        Effect.forkScoped
      )

      // Pessimistic until the lease loop has spoken: only the leader polls.
      const leadership = yield* SubscriptionRef.make(false)
      let holding = false
      let redisDown = false

      const leaseStep = Effect.gen(function*() {
        const held = holding
          ? (yield* call(() => commands.send("EVAL", [RENEW, "1", LEADER_KEY, options.instanceId, String(ttlMillis)]))) === 1
          : false
        const acquired = held ||
          (yield* call(() => commands.set(LEADER_KEY, options.instanceId, "NX", "PX", String(ttlMillis)))) === "OK"
        if (redisDown) {
          redisDown = false
          yield* Effect.logInfo("Redis reachable again; the lease decides the leader")
        }
        if (acquired !== holding) {
          yield* Effect.logInfo(acquired ? "this instance holds the lease: it runs the schedule" : "another instance holds the lease: following it")
        }
        holding = acquired
        yield* SubscriptionRef.set(leadership, acquired)
      }).pipe(
        Effect.catchAll(() =>
          Effect.gen(function*() {
            if (!redisDown) {
              redisDown = true
              yield* Effect.logWarning("Redis unreachable: no lease can be held, this instance polls on its own schedule")
            }
            holding = false
            yield* SubscriptionRef.set(leadership, true)
            if (!commands.connected) yield* Effect.forkDaemon(connect(commands))
          })
        )
      )

      yield* leaseStep.pipe(
        Effect.repeat(Schedule.spaced(Duration.millis(Math.floor(ttlMillis / 3)))),
        Effect.withClock(realClock),
        Effect.forkScoped
      )
      yield* Effect.addFinalizer(() =>
        holding
          ? call(() => commands.send("EVAL", [RELEASE, "1", LEADER_KEY, options.instanceId])).pipe(
            Effect.tap(() => Effect.logInfo("lease released")),
            Effect.ignore
          )
          : Effect.void
      )

      return Cluster.of({
        kind: "redis",
        leadership,
        nextSeq: (floor) =>
          call(() => commands.send("EVAL", [NEXT_SEQ, "1", SEQ_KEY, String(floor)])).pipe(
            Effect.map((n) => (typeof n === "number" && Number.isSafeInteger(n) && n > floor ? n : floor + 1)),
            Effect.orElseSucceed(() => floor + 1)
          ),
        broadcast: (message) =>
          call(() => commands.publish(UPDATES_CHANNEL, message)).pipe(
            // Zero receivers means not even this instance's subscriber heard it: deliver locally.
            Effect.map((receivers) => receivers > 0),
            Effect.orElseSucceed(() => false)
          ),
        onMessage: (next) =>
          Effect.sync(() => {
            handler = next
          }),
        claimFetch: (gap, force) => {
          const gapMillis = Math.ceil(Duration.toMillis(gap))
          if (gapMillis <= 0) return Effect.succeed(Option.none())
          return Effect.gen(function*() {
            if (force) {
              yield* call(() => commands.set(FETCH_GAP_KEY, options.instanceId, "PX", String(gapMillis)))
              return Option.none()
            }
            const claimed = yield* call(() => commands.set(FETCH_GAP_KEY, options.instanceId, "NX", "PX", String(gapMillis)))
            if (claimed === "OK") return Option.none()
            const left = yield* call(() => commands.send("PTTL", [FETCH_GAP_KEY]))
            return Option.some(Duration.millis(typeof left === "number" && left > 0 ? left : gapMillis))
          }).pipe(Effect.orElseSucceed(() => Option.none()))
        }
      })
    })
  )
