/**
 * The Redis cluster port against a real `redis-server` (DESIGN.md "Clustering"): several
 * `RedisClusterLive` instances in one process, each in its own scope, as separate processes would
 * be. Lease expiry, reconnects and resubscription are real time, so the waits are real too: short
 * leases, and polling with deadlines instead of fixed sleeps.
 */
import { describe, expect, it } from "@effect/vitest"
import { RedisClient } from "bun"
import { Context, Duration, Effect, Exit, Layer, Option, Redacted, Scope, SubscriptionRef } from "effect"
import { Cluster } from "../../src/cluster/Cluster.js"
import { FETCH_GAP_KEY, LEADER_KEY, RedisClusterLive, SEQ_KEY, UPDATES_CHANNEL } from "../../src/cluster/RedisCluster.js"
import { makeRedisServer, type RedisServer } from "../support/RedisServer.js"
import { hasTool } from "../support/SystemTools.js"

const LEASE = Duration.millis(1500)

interface Instance {
  readonly id: string
  readonly cluster: Context.Tag.Service<Cluster>
  /** Every message its `onMessage` handler was given, in order. */
  readonly received: Array<string>
  readonly isLeader: Effect.Effect<boolean>
  /** Closes its scope: the lease is released and both connections close. */
  readonly close: Effect.Effect<void>
}

/** One instance in a scope of its own (closed at the latest with the test's scope). */
const instance = (server: RedisServer, id: string) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const cluster = Context.get(
      yield* Layer.buildWithScope(RedisClusterLive({ url: Redacted.make(server.url), leaseTtl: LEASE, instanceId: id }), scope),
      Cluster
    )
    const received: Array<string> = []
    yield* cluster.onMessage((message) => received.push(message))
    return {
      id,
      cluster,
      received,
      isLeader: SubscriptionRef.get(cluster.leadership),
      close: Scope.close(scope, Exit.void)
    } satisfies Instance
  })

const instances = (server: RedisServer, n: number) =>
  Effect.all(Array.from({ length: n }, (_, i) => instance(server, `test-host:${1000 + i}:instance-${i}`)))

/** A plain client, as an operator would look at Redis. */
const inspect = (server: RedisServer) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const client = new RedisClient(server.url, { autoReconnect: true, enableOfflineQueue: true })
      await client.connect()
      return client
    }),
    (client) => Effect.sync(() => client.close())
  )

/** Polls `check` every 25 ms until it returns a value; dies after `within`. Returns the value and the time taken. */
const eventually = <A>(what: string, check: Effect.Effect<A | undefined>, within: Duration.DurationInput = "5 seconds") =>
  Effect.gen(function*() {
    const started = performance.now()
    const deadline = started + Duration.toMillis(within)
    for (;;) {
      const value = yield* check
      if (value !== undefined) return { value, elapsedMs: performance.now() - started }
      if (performance.now() > deadline) return yield* Effect.dieMessage(`${what}: not within ${Duration.format(within)}`)
      yield* Effect.promise(() => Bun.sleep(25))
    }
  })

const leadersOf = (all: ReadonlyArray<Instance>) =>
  Effect.map(Effect.forEach(all, (i) => Effect.map(i.isLeader, (leads) => (leads ? [i] : []))), (r) => r.flat())

/** The single leader, once exactly one instance leads and it is the one named in Redis. */
const soleLeader = (all: ReadonlyArray<Instance>, redis: RedisClient) =>
  Effect.gen(function*() {
    const leaders = yield* leadersOf(all)
    if (leaders.length !== 1) return undefined
    const holder = yield* Effect.promise(() => redis.get(LEADER_KEY).catch(() => null))
    return holder === leaders[0]!.id ? leaders[0]! : undefined
  })

/** How many connections are subscribed to the updates channel. */
const subscribers = (redis: RedisClient) =>
  Effect.promise(async () => {
    const reply = await redis.send("PUBSUB", ["NUMSUB", UPDATES_CHANNEL]).catch(() => [UPDATES_CHANNEL, 0])
    return Number((reply as [string, number])[1])
  })

describe.skipIf(!hasTool("redis-server"))("RedisCluster", () => {
  it.scopedLive("exactly one of three instances holds the lease, and keeps it past its TTL by renewing", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      const redis = yield* inspect(server)
      const all = yield* instances(server, 3)
      const { value: leader } = yield* eventually("one leader", soleLeader(all, redis))

      // Over twice the lease the same single instance leads: it renews (at a third of the TTL).
      const until = performance.now() + 2 * Duration.toMillis(LEASE)
      while (performance.now() < until) {
        expect((yield* leadersOf(all)).map((i) => i.id)).toEqual([leader.id])
        yield* Effect.promise(() => Bun.sleep(50))
      }
      const pttl = Number(yield* Effect.promise(() => redis.send("PTTL", [LEADER_KEY])))
      expect(pttl).toBeGreaterThan(0)
      expect(pttl).toBeLessThanOrEqual(Duration.toMillis(LEASE))
    }))

  it.scopedLive("a leader that shuts down releases the lease, and another takes over within the lease period", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      const redis = yield* inspect(server)
      const all = yield* instances(server, 3)
      const { value: first } = yield* eventually("one leader", soleLeader(all, redis))

      yield* first.close
      expect(yield* Effect.promise(() => redis.get(LEADER_KEY))).not.toBe(first.id)
      const rest = all.filter((i) => i !== first)
      const { elapsedMs, value: second } = yield* eventually("a new leader", soleLeader(rest, redis), LEASE)
      expect(second.id).not.toBe(first.id)
      // Released, not expired: the next lease step (a third of the TTL) takes it.
      expect(elapsedMs).toBeLessThan(Duration.toMillis(LEASE) / 3 + 300)

      yield* second.close
      const { value: third } = yield* eventually("the last one leads", soleLeader(rest.filter((i) => i !== second), redis), LEASE)
      expect(third.id).not.toBe(second.id)
    }))

  it.scopedLive("a lease left by a crashed instance expires and is taken over within TTL + TTL/3", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      const redis = yield* inspect(server)
      // A dead instance's lease, just renewed.
      yield* Effect.promise(() => redis.set(LEADER_KEY, "gone:1:dead", "PX", String(Duration.toMillis(LEASE))))
      const all = yield* instances(server, 2)
      yield* Effect.promise(() => Bun.sleep(200))
      expect(yield* leadersOf(all)).toEqual([])
      const { elapsedMs } = yield* eventually("a leader after the expiry", soleLeader(all, redis), "3 seconds")
      expect(elapsedMs).toBeGreaterThan(Duration.toMillis(LEASE) - 400)
      expect(elapsedMs).toBeLessThan(Duration.toMillis(LEASE) * 4 / 3 + 300)
    }))

  it.scopedLive("with Redis down every instance leads (each polls alone); when it is back, exactly one leads", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      const redis = yield* inspect(server)
      const all = yield* instances(server, 3)
      yield* eventually("one leader", soleLeader(all, redis))

      yield* server.stop
      yield* eventually("every instance leads", Effect.map(leadersOf(all), (l) => (l.length === 3 ? l : undefined)), "4 seconds")

      yield* server.start
      const { value: leader } = yield* eventually("one leader again", soleLeader(all, redis), "8 seconds")
      // And it stays that way (no instance is left thinking Redis is down).
      const until = performance.now() + Duration.toMillis(LEASE)
      while (performance.now() < until) {
        expect((yield* leadersOf(all)).map((i) => i.id)).toEqual([leader.id])
        yield* Effect.promise(() => Bun.sleep(50))
      }
    }))

  it.scopedLive("after Redis hung past the command timeout, the lease a timed-out SET took is not left leaderless", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      const redis = yield* inspect(server)
      const all = yield* instances(server, 3)
      yield* eventually("one leader", soleLeader(all, redis))

      // Every lease step times out (1 s) while Redis is stopped: each instance polls on its own.
      yield* server.pause
      yield* eventually("every instance leads", Effect.map(leadersOf(all), (l) => (l.length === 3 ? l : undefined)), "3 seconds")
      // Past the TTL, so the queued SET NX of some instance wins in Redis when it resumes, though
      // that instance's call had already timed out.
      yield* Effect.promise(() => Bun.sleep(Duration.toMillis(LEASE)))
      yield* server.resume
      const until = performance.now() + 2 * Duration.toMillis(LEASE)
      let leaderlessMs = 0
      let last = performance.now()
      while (performance.now() < until) {
        const now = performance.now()
        if ((yield* leadersOf(all)).length === 0) leaderlessMs += now - last
        last = now
        yield* Effect.promise(() => Bun.sleep(20))
      }
      // Not until the lease expires again: the owner renews the lease it finds under its name.
      expect(leaderlessMs, "time with no leader after Redis resumed").toBeLessThan(Duration.toMillis(LEASE) / 3)
      yield* eventually("one leader", soleLeader(all, redis), "1 second")
    }))

  it.scopedLive("while Redis hangs an update waits for one timeout at most: the commands after it fail at once, none is sent late", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      const redis = yield* inspect(server)
      const [a, b] = yield* instances(server, 2)
      const all = [a!, b!]
      yield* eventually("one leader", soleLeader(all, redis))
      yield* eventually("two subscribers", Effect.map(subscribers(redis), (n) => (n >= 2 ? n : undefined)))
      expect(yield* a!.cluster.nextSeq(4)).toBe(5)

      yield* server.pause
      // The commands of one update, in the updater's order: each falls back (no gap claim, a local
      // seq, local delivery), and together they wait for one timeout (1 s), not one each.
      const started = performance.now()
      expect(yield* a!.cluster.claimFetch(Duration.seconds(1), true)).toEqual(Option.none())
      expect(yield* a!.cluster.nextSeq(20)).toBe(21)
      expect(yield* a!.cluster.broadcast(() => "during")).toBe(false)
      const updateMs = performance.now() - started
      expect(updateMs, "claimFetch + nextSeq + broadcast while Redis hangs").toBeLessThan(1_000 + 400)
      // The other instance found the hang by itself (heartbeat): it leads, and its commands fail at once.
      yield* eventually("both instances lead", Effect.map(leadersOf(all), (l) => (l.length === 2 ? l : undefined)), "2 seconds")
      const other = performance.now()
      expect(yield* b!.cluster.nextSeq(7)).toBe(8)
      expect(yield* b!.cluster.broadcast(() => "during, too")).toBe(false)
      expect(performance.now() - other, "nextSeq + broadcast once the hang is known").toBeLessThan(500)

      yield* server.resume
      // One leader again, and the number handed out alone is raised into the counter.
      yield* eventually("one leader again", soleLeader(all, redis), "3 seconds")
      yield* eventually("the counter raised to 21", Effect.promise(() => redis.get(SEQ_KEY).then((v) => (v === "21" ? v : undefined))), "3 seconds")
      expect(yield* b!.cluster.nextSeq(0)).toBe(22)
      expect(yield* a!.cluster.broadcast(() => "after")).toBe(true)
      yield* eventually("after everywhere", Effect.sync(() => (all.every((i) => i.received.includes("after")) ? true : undefined)))
      // What was delivered locally was not also published when Redis continued.
      for (const i of all) expect(i.received).toEqual(["after"])
    }))

  it.scopedLive("nextSeq is one strictly increasing sequence across instances, never at or below the floor, also across a Redis outage", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      const redis = yield* inspect(server)
      const all = yield* instances(server, 3)

      const perInstance = yield* Effect.forEach(
        all,
        (i) => Effect.forEach(Array.from({ length: 20 }), () => i.cluster.nextSeq(0)),
        { concurrency: "unbounded" }
      )
      for (const seqs of perInstance) {
        for (let k = 1; k < seqs.length; k++) expect(seqs[k]!).toBeGreaterThan(seqs[k - 1]!)
      }
      expect(perInstance.flat().sort((a, b) => a - b)).toEqual(Array.from({ length: 60 }, (_, k) => k + 1))

      // A summary restored from a cache may be ahead of the counter: the floor wins, then INCR goes on from it.
      expect(yield* all[0]!.cluster.nextSeq(1000)).toBe(1001)
      expect(yield* all[1]!.cluster.nextSeq(5)).toBe(1002)
      expect(yield* all[2]!.cluster.nextSeq(1002)).toBe(1003)
      expect(yield* Effect.promise(() => redis.get(SEQ_KEY))).toBe("1003")

      // Redis down: the local fallback is still above the floor.
      yield* server.stop
      expect(yield* all[0]!.cluster.nextSeq(41)).toBe(42)
      // Back (empty): the number handed out alone is raised into the counter, so the next summary
      // of the cluster is numbered above it, whoever numbers it.
      yield* server.start
      yield* eventually("the counter raised to 42", Effect.promise(() => redis.get(SEQ_KEY).then((v) => (v === "42" ? v : undefined), () => undefined)), "8 seconds")
      expect(yield* all[1]!.cluster.nextSeq(3)).toBe(43)
    }))

  it.scopedLive("broadcast reaches every instance's handler exactly once, this instance's included", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      const redis = yield* inspect(server)
      const all = yield* instances(server, 3)
      yield* eventually("three subscribers", Effect.map(subscribers(redis), (n) => (n >= 3 ? n : undefined)))

      const sent = all.flatMap((i) => Array.from({ length: 10 }, (_, k) => `${i.id}#${k}`))
      const delivered = yield* Effect.forEach(
        all,
        (i) => Effect.forEach(Array.from({ length: 10 }, (_, k) => `${i.id}#${k}`), (m) => i.cluster.broadcast(() => m)),
        { concurrency: "unbounded" }
      )
      expect(delivered.flat().every((ok) => ok)).toBe(true)
      // A marker published after every reply came back arrives after all of them on every connection.
      expect(yield* all[0]!.cluster.broadcast(() => "marker")).toBe(true)
      yield* eventually("the marker everywhere", Effect.sync(() => (all.every((i) => i.received.includes("marker")) ? true : undefined)))

      for (const i of all) {
        expect([...i.received].sort()).toEqual([...sent, "marker"].sort())
        // In the order each sender published.
        for (const from of all) expect(i.received.filter((m) => m.startsWith(`${from.id}#`))).toEqual(sent.filter((m) => m.startsWith(`${from.id}#`)))
      }
    }))

  it.scopedLive("after a Redis restart the subscription works again by itself, with no duplicates", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      const redis = yield* inspect(server)
      const all = yield* instances(server, 3)
      yield* eventually("three subscribers", Effect.map(subscribers(redis), (n) => (n >= 3 ? n : undefined)))
      expect(yield* all[0]!.cluster.broadcast(() => "before")).toBe(true)
      yield* eventually("before everywhere", Effect.sync(() => (all.every((i) => i.received.length === 1) ? true : undefined)))

      yield* server.stop
      // Not sent: the caller delivers to its own clients instead.
      expect(yield* all[1]!.cluster.broadcast(() => "during")).toBe(false)

      yield* server.start
      // The client resubscribes on reconnect (RedisCluster subscribes only once).
      yield* eventually("three subscribers again", Effect.map(subscribers(redis), (n) => (n >= 3 ? n : undefined)), "8 seconds")
      const sent = all.map((i) => `after from ${i.id}`)
      for (const [k, i] of all.entries()) {
        yield* eventually(`broadcast from instance ${k} goes out`, Effect.map(i.cluster.broadcast(() => sent[k]!), (ok) => (ok ? true : undefined)))
      }
      expect(yield* all[2]!.cluster.broadcast(() => "marker")).toBe(true)
      yield* eventually("the marker everywhere", Effect.sync(() => (all.every((i) => i.received.includes("marker")) ? true : undefined)))
      for (const i of all) expect(i.received).toEqual(["before", ...sent, "marker"])
    }))

  it.scopedLive("claimFetch: a forced (scheduled) claim blocks other claims for the gap and tells how long is left", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      const redis = yield* inspect(server)
      const [a, b, c] = yield* instances(server, 3)
      const gap = Duration.millis(1200)

      expect(yield* a!.cluster.claimFetch(gap, true)).toEqual(Option.none())
      expect(yield* Effect.promise(() => redis.get(FETCH_GAP_KEY))).toBe(a!.id)
      const wait = yield* b!.cluster.claimFetch(gap, false)
      expect(Option.isSome(wait)).toBe(true)
      const waitMs = Duration.toMillis(Option.getOrThrow(wait))
      expect(waitMs).toBeGreaterThan(900)
      expect(waitMs).toBeLessThanOrEqual(1200)
      // The claimer itself is refused too: the gap is cluster-wide, not per instance.
      expect(Option.isSome(yield* a!.cluster.claimFetch(gap, false))).toBe(true)
      // A scheduled call always claims (and restarts the gap).
      expect(yield* c!.cluster.claimFetch(gap, true)).toEqual(Option.none())
      expect(yield* Effect.promise(() => redis.get(FETCH_GAP_KEY))).toBe(c!.id)

      // Once the gap is over, one non-forced claim wins and the next is refused again.
      const { elapsedMs } = yield* eventually(
        "the gap to end",
        Effect.map(b!.cluster.claimFetch(gap, false), (w) => (Option.isNone(w) ? true : undefined)),
        "3 seconds"
      )
      expect(elapsedMs).toBeGreaterThan(800)
      expect(Option.isSome(yield* a!.cluster.claimFetch(gap, false))).toBe(true)
      // No gap configured: never refused.
      expect(yield* a!.cluster.claimFetch(Duration.zero, false)).toEqual(Option.none())

      // Redis down: nothing to coordinate with, so nothing is refused.
      yield* server.stop
      expect(yield* a!.cluster.claimFetch(gap, false)).toEqual(Option.none())
      expect(yield* b!.cluster.claimFetch(gap, false)).toEqual(Option.none())
    }))
})
