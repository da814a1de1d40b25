/**
 * The cluster over Redis: a lease `dashcast:leader` (`SET NX PX`, renewed at a third of its life,
 * released on shutdown) picks the one instance that runs the schedule; `INCR dashcast:seq` numbers
 * summaries; the channel `dashcast:updates` carries every broadcast to every instance. While Redis
 * cannot be reached no lease can be held, so every instance polls on its own schedule and serves
 * its own clients; when Redis is back, one leader again. Nothing here is fatal.
 */
import { RedisClient } from "bun"
import { Clock, Duration, Effect, Layer, Option, Queue, Redacted, Schedule, SubscriptionRef } from "effect"
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

// Raises the counter to at least `floor` (never lowers it, consumes no number).
const RAISE_SEQ =
  "local v = tonumber(redis.call('get', KEYS[1]) or '0'); local f = tonumber(ARGV[1]); if v < f then redis.call('set', KEYS[1], f) end; return 1"

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
      const listener = (message: string) => handler(message)
      // Bun's client reconnects by itself but does not subscribe again on the new connection, and
      // subscribing twice would call the listener twice: drop the old subscription, then subscribe,
      // at start and after every reconnect.
      const subscribe = call(async () => {
        try {
          await subscriber.unsubscribe(UPDATES_CHANNEL)
        } catch {
          // Not subscribed (it throws, synchronously, outside subscriber mode): nothing to drop.
        }
        await subscriber.subscribe(UPDATES_CHANNEL, listener)
      }).pipe(
        Effect.tapError(() => connect(subscriber)),
        Effect.retry(Schedule.spaced("1 seconds")),
        Effect.tap(() => Effect.logInfo("subscribed to the cluster channel").pipe(Effect.annotateLogs({ channel: UPDATES_CHANNEL })))
      )
      const reconnected = yield* Queue.sliding<void>(1)
      subscriber.onconnect = () => {
        Queue.unsafeOffer(reconnected, undefined)
      }
      yield* subscribe.pipe(
        Effect.zipRight(Effect.forever(Effect.zipRight(Queue.take(reconnected), subscribe))),
        Effect.forkScoped
      )

      // Pessimistic until the lease loop has spoken: only the leader polls.
      const leadership = yield* SubscriptionRef.make(false)
      let holding = false
      let redisDown = false
      // The highest seq this instance numbered on its own while Redis did not answer. Once Redis
      // answers, the counter is raised to it, so that the leader's next summary is numbered above
      // it: otherwise this instance would take the leader's update for one it already has.
      let unsyncedSeq = 0

      const leaseStep = Effect.gen(function*() {
        // Renewed whenever it is ours, also when we did not know: a SET that timed out here may
        // still have taken the lease in Redis.
        const held = (yield* call(() => commands.send("EVAL", [RENEW, "1", LEADER_KEY, options.instanceId, String(ttlMillis)]))) === 1
        const acquired = held ||
          (yield* call(() => commands.set(LEADER_KEY, options.instanceId, "NX", "PX", String(ttlMillis)))) === "OK"
        if (unsyncedSeq > 0) {
          const floor = unsyncedSeq
          yield* call(() => commands.send("EVAL", [RAISE_SEQ, "1", SEQ_KEY, String(floor)]))
          if (unsyncedSeq === floor) unsyncedSeq = 0
        }
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
            Effect.orElseSucceed(() => {
              unsyncedSeq = Math.max(unsyncedSeq, floor + 1)
              return floor + 1
            })
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
