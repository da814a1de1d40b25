/**
 * The alert store's contract (src/alerts/AlertStore.ts), run against both implementations: the
 * SQLite file (tables beside the cache's, surviving a reopen) and a real redis-server (shared by
 * every instance). The compare-and-set that decides a firing, the outbox written with it, the
 * attempts kept newest last and capped, a delete that takes everything the rule owns, and a store
 * that does not answer failing the call rather than the process.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Option, Redacted, type Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { AlertRule, AlertState, ATTEMPTS_KEPT, type DeliveryAttempt, PendingDelivery } from "../../src/alerts/AlertRule.js"
import { AlertStore } from "../../src/alerts/AlertStore.js"
import { RedisAlertStoreLive } from "../../src/alerts/RedisAlertStore.js"
import { SqliteAlertStoreLive } from "../../src/alerts/SqliteAlertStore.js"
import { newSecret } from "../../src/alerts/Webhooks.js"
import { makeRedisServer } from "../support/RedisServer.js"
import { hasTool } from "../support/SystemTools.js"

const ruleOf = (id: string, createdAt: number) =>
  AlertRule.make({
    id,
    asset: "bitcoin",
    currency: "usd",
    condition: "price_above",
    threshold: 70_000,
    webhook_url: "https://hooks.example.com/x",
    cooldown: "0 seconds",
    cooldown_ms: 0,
    created_at: createdAt,
    created_seq: 3,
    secret: newSecret()
  })

const pendingOf = (ruleId: string, webhookId: string, attempts = 0) =>
  PendingDelivery.make({ webhook_id: webhookId, rule_id: ruleId, body: `{"for":"${webhookId}"}`, attempts, next_at: 1000 * attempts })

const attemptOf = (webhookId: string, n: number): DeliveryAttempt => ({
  webhook_id: webhookId,
  attempt: n,
  at: new Date(1_700_000_000_000 + n).toISOString(),
  status: 503,
  latency_ms: n,
  outcome: "failed",
  error: "HTTP 503"
})

const storeOf = <E>(layer: Layer.Layer<AlertStore, E>) => Effect.map(Layer.build(layer), Context.get(AlertStore))

/** The contract, against a fresh store made by `open` (twice for a store that must persist). */
const contract = (open: Effect.Effect<AlertStore["Type"], never, Scope.Scope>) =>
  Effect.gen(function*() {
    const store = yield* open
    const one = ruleOf("alr_one", 1_000)
    const two = ruleOf("alr_two", 2_000)
    yield* store.create(two, AlertState.initial(3))
    yield* store.create(one, AlertState.initial(3))
    const listed = yield* store.list
    expect(listed.map((a) => a.rule.id)).toEqual(["alr_one", "alr_two"])
    // The secret comes back whole (it signs), as a Redacted.
    expect(Redacted.value(listed[0]!.rule.secret)).toBe(Redacted.value(one.secret))
    expect(listed[0]!.state).toEqual(AlertState.initial(3))
    expect(Option.map(yield* store.get("alr_two"), (a) => a.rule.threshold)).toEqual(Option.some(70_000))
    expect(yield* store.get("alr_none")).toEqual(Option.none())

    // Compare-and-set: the first writer of version 0 wins, with its firing; the second writes nothing.
    const fired = AlertState.make({ version: 1, armed: false, last_seq: 4, last_fired_at: 5_000 })
    expect(yield* store.transition("alr_one", 0, fired, Option.some(pendingOf("alr_one", "msg_one_4")))).toBe(true)
    const rival = AlertState.make({ version: 1, armed: false, last_seq: 4, last_fired_at: 5_001 })
    expect(yield* store.transition("alr_one", 0, rival, Option.some(pendingOf("alr_one", "msg_one_4b")))).toBe(false)
    expect(Option.map(yield* store.get("alr_one"), (a) => a.state)).toEqual(Option.some(fired))
    expect((yield* store.pending).map((p) => p.webhook_id)).toEqual(["msg_one_4"])
    // A re-arm writes no firing; a rule that is gone takes no change.
    const rearmed = AlertState.make({ version: 2, armed: true, last_seq: 5, last_fired_at: 5_000 })
    expect(yield* store.transition("alr_one", 1, rearmed, Option.none())).toBe(true)
    expect(yield* store.transition("alr_gone", 0, fired, Option.some(pendingOf("alr_gone", "msg_gone")))).toBe(false)
    expect((yield* store.pending).map((p) => p.webhook_id)).toEqual(["msg_one_4"])

    // Attempts: recorded with the next step of the firing, newest last, capped.
    yield* store.recordAttempt("alr_one", "msg_one_4", attemptOf("msg_one_4", 1), Option.some(pendingOf("alr_one", "msg_one_4", 1)))
    expect((yield* store.pending).map((p) => [p.webhook_id, p.attempts])).toEqual([["msg_one_4", 1]])
    yield* store.recordAttempt("alr_one", "msg_one_4", { ...attemptOf("msg_one_4", 2), status: 200, outcome: "delivered" }, Option.none())
    expect(yield* store.pending).toEqual([])
    expect((yield* store.attempts("alr_one")).map((a) => [a.attempt, a.outcome])).toEqual([[1, "failed"], [2, "delivered"]])
    for (let n = 3; n <= ATTEMPTS_KEPT + 7; n++) yield* store.recordAttempt("alr_one", "msg_x", attemptOf("msg_x", n), Option.none())
    const kept = yield* store.attempts("alr_one")
    expect(kept.length).toBe(ATTEMPTS_KEPT)
    expect(kept.at(-1)?.attempt).toBe(ATTEMPTS_KEPT + 7)
    expect(kept[0]?.attempt).toBe(8)

    // Delete: the rule, its state, its attempts and its firings not yet delivered; the others stay.
    expect(yield* store.transition("alr_two", 0, fired, Option.some(pendingOf("alr_two", "msg_two_4")))).toBe(true)
    expect(yield* store.transition("alr_one", 2, AlertState.make({ ...fired, version: 3 }), Option.some(pendingOf("alr_one", "msg_one_9")))).toBe(true)
    expect(yield* store.remove("alr_one")).toBe(true)
    expect(yield* store.remove("alr_one")).toBe(false)
    expect((yield* store.list).map((a) => a.rule.id)).toEqual(["alr_two"])
    expect(yield* store.attempts("alr_one")).toEqual([])
    expect((yield* store.pending).map((p) => p.webhook_id)).toEqual(["msg_two_4"])
    // An attempt of a deleted rule's firing is not recorded.
    yield* store.recordAttempt("alr_one", "msg_one_9", attemptOf("msg_one_9", 1), Option.none())
    expect(yield* store.attempts("alr_one")).toEqual([])

    // Another connection (a restart, or another instance) sees all of it.
    const again = yield* open
    expect((yield* again.list).map((a) => [a.rule.id, a.state.version])).toEqual([["alr_two", 1]])
    expect((yield* again.pending).map((p) => p.webhook_id)).toEqual(["msg_two_4"])
  })

describe("SqliteAlertStore", () => {
  it.scoped("keeps rules, states, firings and attempts, and another connection to the file sees them", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dashcast-alerts-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      yield* contract(storeOf(SqliteAlertStoreLive({ path: path.join(dir, "nested", "cache.sqlite") })))
    }))

  it.scoped("fails its calls, not the process, when the file cannot be opened", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dashcast-alerts-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const blocker = path.join(dir, "file")
      fs.writeFileSync(blocker, "not a folder")
      const store = yield* storeOf(SqliteAlertStoreLive({ path: path.join(blocker, "cache.sqlite") }))
      const error = yield* Effect.flip(store.list)
      expect(error._tag).toBe("AlertStoreError")
      expect(error.message).toContain("alert store (sqlite) list failed")
    }))
})

describe.skipIf(!hasTool("redis-server"))("RedisAlertStore", () => {
  it.scoped("keeps rules, states, firings and attempts in Redis, shared by every client", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      yield* contract(storeOf(RedisAlertStoreLive({ url: Redacted.make(server.url) })))
    }))

  it.scoped("fails its calls, not the process, while Redis is down, and works again when it is back", () =>
    Effect.gen(function*() {
      const server = yield* makeRedisServer
      const store = yield* storeOf(RedisAlertStoreLive({ url: Redacted.make(server.url) }))
      yield* store.create(ruleOf("alr_one", 1), AlertState.initial(0))
      yield* server.stop
      const error = yield* Effect.flip(store.list)
      expect(error.message).toContain("alert store (redis) list failed")
      yield* server.start
      // Restarted empty: the client reconnects by itself and answers again.
      const deadline = Date.now() + 10_000
      let answered = false
      while (!answered && Date.now() < deadline) {
        answered = yield* store.list.pipe(Effect.as(true), Effect.orElseSucceed(() => false))
        if (!answered) yield* Effect.promise(() => Bun.sleep(100))
      }
      expect(answered).toBe(true)
    }))
})
