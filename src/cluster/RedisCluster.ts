/**
 * The cluster over Redis: a lease `dashcast:leader` (`SET NX PX`, renewed at a third of its life,
 * released on shutdown) picks the one instance that runs the schedule; `INCR dashcast:seq` numbers
 * summaries; the channel `dashcast:updates` carries every broadcast to every instance. While Redis
 * cannot be reached, or hangs, no lease can be held, so every instance polls on its own schedule and
 * serves its own clients; when Redis is back, one leader again. Nothing here is fatal.
 */
import { RedisClient } from "bun"
import { Clock, Data, Deferred, Duration, Effect, Layer, Option, Queue, Redacted, Schedule, SubscriptionRef } from "effect"
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
  /** How often Redis is pinged, so that a hang is noticed before an update waits for it. */
  readonly heartbeat?: Duration.DurationInput
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

/**
 * A command that got no answer: it failed (`Failed`, e.g. while disconnected), timed out
 * (`Timeout`), or was not sent because Redis is known to hang (`Hung`).
 */
class RedisUnavailable extends Data.TaggedError("RedisUnavailable")<{
  readonly reason: "Failed" | "Timeout" | "Hung"
  readonly cause?: unknown
}> {}

export const RedisClusterLive = (options: RedisClusterOptions): Layer.Layer<Cluster> =>
  Layer.scoped(
    Cluster,
    Effect.gen(function*() {
      const timeout = Duration.decode(options.timeout ?? "1 second")
      const heartbeat = Duration.decode(options.heartbeat ?? "250 millis")
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

      /** One command with its timeout, whatever is known about Redis. */
      const send = <A>(run: () => Promise<A>) =>
        Effect.tryPromise({ try: run, catch: (cause) => new RedisUnavailable({ reason: "Failed", cause }) }).pipe(
          Effect.timeoutFail({ duration: timeout, onTimeout: () => new RedisUnavailable({ reason: "Timeout" }) }),
          Effect.withClock(realClock)
        )
      const connect = (client: RedisClient) => send(() => client.connect()).pipe(Effect.ignore)

      // A hung Redis (stopped, swapping, blocked by a slow command) keeps its connections open and
      // answers nothing, so each command would wait for its own timeout, and an update makes
      // several in turn. Once one times out, or the heartbeat's PING does, Redis counts as hung:
      // commands fail at once (the callers fall back: no gap claim, a local seq, local delivery),
      // also those already waiting, until a PING is answered again. A PING's answer also means every
      // command queued before it on the connection has run.
      let hung = false
      // Completed when Redis is found hung; a fresh one once it answers again.
      let hangStarted = yield* Deferred.make<void>()
      // Runs a lease step at once: this instance polls alone as soon as Redis hangs, and the
      // lease decides again as soon as it answers.
      const leaseNow = yield* Queue.sliding<void>(1)

      // Uninterruptible: the command that finds the hang loses its race to the commands it ends.
      const markHung = Effect.uninterruptible(Effect.gen(function*() {
        if (hung) return
        hung = true
        yield* Queue.offer(leaseNow, undefined)
        yield* Effect.logWarning(`Redis does not answer within ${Duration.format(timeout)}: cluster commands fail at once until it answers a PING`)
        yield* Deferred.succeed(hangStarted, undefined)
      }))
      const markAnswering = Effect.gen(function*() {
        if (!hung) return
        hangStarted = yield* Deferred.make<void>()
        hung = false
        yield* Effect.logInfo("Redis answers again")
        yield* Queue.offer(leaseNow, undefined)
      })

      /** A command of the cluster's own: at once `Hung` while Redis hangs, and at most one timeout overall. */
      const call = <A>(run: () => Promise<A>): Effect.Effect<A, RedisUnavailable> =>
        Effect.suspend(() => {
          if (hung) return Effect.fail(new RedisUnavailable({ reason: "Hung" }))
          const started = hangStarted
          // Both sides interruptible, so that the loser stops at once also in a finalizer (the release).
          return Effect.raceFirst(
            Effect.interruptible(send(run).pipe(Effect.tapError((error) => (error.reason === "Timeout" ? markHung : Effect.void)))),
            Effect.interruptible(Effect.zipRight(Deferred.await(started), Effect.fail(new RedisUnavailable({ reason: "Hung" }))))
          )
        })

      // Start without waiting long: Redis down at start is a degraded cluster, not a failed start.
      yield* Effect.all([connect(commands), connect(subscriber)], { concurrency: 2 })

      // The heartbeat: notices a hang when nothing else is sent, and the end of one.
      yield* send(() => commands.send("PING", [])).pipe(
        Effect.matchEffect({
          onFailure: (error) => (error.reason === "Timeout" ? markHung : Effect.void),
          onSuccess: () => markAnswering
        }),
        Effect.repeat(Schedule.spaced(heartbeat)),
        Effect.withClock(realClock),
        Effect.forkScoped
      )

      const handlers: Array<(message: string) => void> = []
      const listener = (message: string) => {
        for (const handler of handlers) handler(message)
      }
      // Bun's client reconnects by itself but does not subscribe again on the new connection, and
      // subscribing twice would call the listener twice: drop the old subscription, then subscribe,
      // at start and after every reconnect. (Not on any update's path: it waits for Redis, hung or not.)
      const subscribe = send(async () => {
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

      // Every third of the lease, and at once when Redis starts or stops hanging.
      yield* leaseStep.pipe(
        Effect.zipRight(Effect.raceFirst(Effect.sleep(Duration.millis(Math.floor(ttlMillis / 3))), Queue.take(leaseNow))),
        Effect.forever,
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
          call(() => commands.publish(UPDATES_CHANNEL, message())).pipe(
            // Zero receivers means not even this instance's subscriber heard it: deliver locally.
            Effect.map((receivers) => receivers > 0),
            Effect.orElseSucceed(() => false)
          ),
        onMessage: (next) =>
          Effect.sync(() => {
            handlers.push(next)
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
