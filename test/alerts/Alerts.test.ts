/**
 * The Alerts service under the TestClock (src/alerts/Alerts.ts, issue 15): a firing's attempts
 * follow the retry schedule from the first failure, with the same webhook-id, each one recorded;
 * evaluation never holds up a broadcast; only the leader evaluates and delivers, a new leader
 * evaluates the snapshot it holds and resumes the outbox without firing again, and two evaluators
 * of one snapshot (a lease changing hands) make one firing. Two "instances" here are two stacks
 * over one store, each with its own market state and a cluster whose leadership the test sets.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, ConfigProvider, Context, DateTime, Deferred, Duration, Effect, Layer, Option, SubscriptionRef, TestClock } from "effect"
import { Alerts, MAX_IN_FLIGHT } from "../../src/alerts/Alerts.js"
import { AlertStore } from "../../src/alerts/AlertStore.js"
import { SqliteAlertStoreLive } from "../../src/alerts/SqliteAlertStore.js"
import { AttemptResult, DnsResolver, WebhookSender } from "../../src/alerts/Webhooks.js"
import { Cluster } from "../../src/cluster/Cluster.js"
import { AppConfig } from "../../src/Config.js"
import { MarketSnapshot } from "../../src/market/Watchlist.js"
import { Broadcaster } from "../../src/realtime/Broadcaster.js"
import { MarketState } from "../../src/state/MarketState.js"
import { makeView } from "../support/TestServer.js"

const START = Date.parse("2025-08-20T12:00:00.000Z")

const snapshot = (seq: number, usd: number) =>
  MarketSnapshot.make({ view: makeView({ bitcoin: { usd, eur: usd * 0.92 } }), seq, fetched_at: DateTime.unsafeMake(START + seq * 60_000) })

interface SentAttempt {
  readonly webhookId: string
  readonly at: number
  readonly body: string
}

/** A sender that records each attempt's time (by the Clock) and answers from a script (then delivers). */
const scriptedSender = (answers: Array<AttemptResult | "hang">, sent: Array<SentAttempt>) =>
  WebhookSender.make({
    attempt: (_url, _secret, webhookId, body) =>
      Effect.gen(function*() {
        sent.push({ webhookId, at: yield* Clock.currentTimeMillis, body })
        const answer = answers.shift() ?? AttemptResult.Delivered({ status: 200 })
        return answer === "hang" ? yield* Effect.never : answer
      })
  })

interface Instance {
  readonly alerts: Alerts
  readonly state: MarketState
  readonly leadership: SubscriptionRef.SubscriptionRef<boolean>
  readonly sent: Array<SentAttempt>
  /** Frames published on Bun topics, by topic. */
  readonly frames: Array<readonly [string, string]>
}

const settings = { ASSETS: "bitcoin,ethereum", CURRENCIES: "usd,eur", CACHE_PATH: ":memory:", WEBHOOK_RETRY_DELAY: "5 seconds" }

/** One instance over `store`: its own market state and Broadcaster, a cluster whose leadership is `leader`. */
const instance = (store: AlertStore["Type"], options: { readonly leader: boolean; readonly answers?: Array<AttemptResult | "hang"> }) =>
  Effect.gen(function*() {
    const leadership = yield* SubscriptionRef.make(options.leader)
    const sent: Array<SentAttempt> = []
    const cluster = Cluster.of({
      kind: "redis",
      leadership,
      nextSeq: (floor) => Effect.succeed(floor + 1),
      broadcast: () => Effect.succeed(false),
      onMessage: () => Effect.void,
      claimFetch: () => Effect.succeed(Option.none())
    })
    const context = yield* Layer.build(
      Alerts.DefaultWithoutDependencies.pipe(
        Layer.provide(Layer.succeed(WebhookSender, scriptedSender(options.answers ?? [], sent))),
        Layer.provide(Layer.succeed(DnsResolver, async () => ["93.184.216.34"])),
        Layer.provide(Layer.succeed(AlertStore, store)),
        Layer.provideMerge(Broadcaster.DefaultWithoutDependencies),
        Layer.provideMerge(MarketState.DefaultWithoutDependencies),
        Layer.provide(Layer.succeed(Cluster, cluster)),
        Layer.provide(AppConfig.Default),
        Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(settings)))))
      )
    )
    const frames: Array<readonly [string, string]> = []
    yield* Context.get(context, Broadcaster).attach({
      publish: (topic, frame) => {
        frames.push([topic, frame])
        return frame.length
      },
      subscriberCount: () => 1
    })
    return { alerts: Context.get(context, Alerts), state: Context.get(context, MarketState), leadership, sent, frames } satisfies Instance
  })

const sqliteStore = Effect.map(Layer.build(SqliteAlertStoreLive({ path: ":memory:" })), Context.get(AlertStore))

/** Lets the forked fibers (evaluation, delivery) run up to their next wait. */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow()
})

const priceAbove = (threshold: number) => ({
  asset: "bitcoin",
  currency: "usd",
  condition: "price_above" as const,
  threshold,
  webhook_url: "https://hooks.example.com/dashcast"
})

const alertFrames = (i: Instance) => i.frames.filter(([, frame]) => frame.startsWith("{\"type\":\"alert\""))

describe("Alerts", () => {
  it.scoped("retries a failed webhook on the schedule: first WEBHOOK_RETRY_DELAY after the failure, the same webhook-id each time, every attempt recorded", () =>
    Effect.gen(function*() {
      const store = yield* sqliteStore
      const a = yield* instance(store, {
        leader: true,
        answers: [AttemptResult.HttpStatus({ status: 500, detail: "down" }), AttemptResult.Network({ detail: "connection refused" })]
      })
      const { rule } = yield* a.alerts.create(priceAbove(70_000))
      yield* a.state.publish(snapshot(1, 69_000), "scheduled_update")
      yield* a.state.publish(snapshot(2, 71_000), "scheduled_update")
      yield* settle
      expect(a.sent.map((s) => s.at)).toEqual([0])
      expect(alertFrames(a).map(([topic]) => topic)).toEqual(["dashboard:usd"])
      yield* TestClock.adjust(Duration.millis(4_999))
      yield* settle
      expect(a.sent.length).toBe(1)
      yield* TestClock.adjust(Duration.millis(1))
      yield* settle
      expect(a.sent.map((s) => s.at)).toEqual([0, 5_000])
      // The second retry: 10 s ± 20 % after the second failure.
      yield* TestClock.adjust(Duration.millis(7_999))
      yield* settle
      expect(a.sent.length).toBe(2)
      yield* TestClock.adjust(Duration.millis(4_001))
      yield* settle
      expect(a.sent.length).toBe(3)
      expect(new Set(a.sent.map((s) => s.webhookId))).toEqual(new Set([`msg_${rule.id.slice(4)}_2`]))
      expect(new Set(a.sent.map((s) => s.body)).size).toBe(1)
      const deliveries = Option.getOrThrow(yield* a.alerts.deliveries(rule.id))
      expect(deliveries.map((d) => [d.attempt, d.status, d.outcome, d.error])).toEqual([
        [1, 500, "failed", "HTTP 500: down"],
        [2, null, "failed", "connection refused"],
        [3, 200, "delivered", undefined]
      ])
      expect(yield* store.pending).toEqual([])
      expect(JSON.parse(a.sent[0]!.body)).toMatchObject({ type: "alert.fired", data: { alert_id: rule.id, value: 71_000, threshold: 70_000, seq: 2 } })
    }))

  it.scoped("gives up after nine attempts over about ten minutes", () =>
    Effect.gen(function*() {
      const store = yield* sqliteStore
      const a = yield* instance(store, { leader: true, answers: Array.from({ length: 20 }, () => AttemptResult.HttpStatus({ status: 502, detail: "" })) })
      const { rule } = yield* a.alerts.create(priceAbove(70_000))
      yield* a.state.publish(snapshot(1, 71_000), "scheduled_update")
      yield* settle
      for (let i = 0; i < 12 * 60; i++) {
        yield* TestClock.adjust("1 second")
        yield* settle
      }
      expect(a.sent.length).toBe(9)
      expect(a.sent.at(-1)!.at).toBeGreaterThanOrEqual(9 * 60_000)
      expect(a.sent.at(-1)!.at).toBeLessThanOrEqual(11 * 60_000)
      const deliveries = Option.getOrThrow(yield* a.alerts.deliveries(rule.id))
      expect(deliveries.map((d) => d.outcome)).toEqual([...Array.from({ length: 8 }, () => "failed"), "gave_up"])
      expect(yield* store.pending).toEqual([])
    }))

  it.scoped("never holds up a broadcast: the state's readers are told before the store is even read", () =>
    Effect.gen(function*() {
      const real = yield* sqliteStore
      const listing = yield* Deferred.make<void>()
      // A store whose reads hang (a Redis that stopped answering).
      const hung = AlertStore.of({ ...real, list: Effect.zipRight(Deferred.succeed(listing, undefined), Effect.never) })
      const a = yield* instance(hung, { leader: true })
      yield* a.alerts.create(priceAbove(70_000))
      yield* a.state.publish(snapshot(1, 71_000), "scheduled_update")
      // publish returned: the Broadcaster has published the update frames, evaluation has not run yet.
      expect(a.frames.filter(([, f]) => f.includes("dashboard_update")).map(([t]) => t)).toEqual(["dashboard:usd", "dashboard:eur"])
      expect(yield* Deferred.isDone(listing)).toBe(false)
      yield* settle
      expect(yield* Deferred.isDone(listing)).toBe(true)
      yield* a.state.publish(snapshot(2, 72_000), "scheduled_update")
      expect(a.frames.filter(([, f]) => f.includes("dashboard_update")).length).toBe(4)
    }))

  it.scoped("only the leader evaluates and delivers; a new leader evaluates the snapshot it holds and resumes the outbox with the same webhook-id, firing nothing twice", () =>
    Effect.gen(function*() {
      const store = yield* sqliteStore
      const a = yield* instance(store, { leader: true, answers: ["hang"] })
      const b = yield* instance(store, { leader: false })
      const { rule } = yield* b.alerts.create(priceAbove(70_000))
      for (const i of [a, b]) yield* i.state.publish(snapshot(1, 71_000), "scheduled_update")
      yield* settle
      // The leader fired and its first attempt is in flight (it never answers).
      expect(a.sent.length).toBe(1)
      expect(b.sent.length).toBe(0)
      expect(alertFrames(a).length).toBe(1)
      expect(alertFrames(b).length).toBe(0)
      // The lease moves: a stops, b takes over.
      yield* SubscriptionRef.set(a.leadership, false)
      yield* SubscriptionRef.set(b.leadership, true)
      yield* settle
      expect(b.sent.map((s) => s.webhookId)).toEqual([a.sent[0]!.webhookId])
      expect(alertFrames(b).length).toBe(0)
      expect((yield* store.pending).length).toBe(0)
      // The price stays above: no firing, on either.
      for (const i of [a, b]) yield* i.state.publish(snapshot(2, 72_000), "scheduled_update")
      yield* settle
      expect(a.sent.length + b.sent.length).toBe(2)
      // Below, then above again: b (the leader now) fires once more, with a new webhook-id.
      for (const i of [a, b]) yield* i.state.publish(snapshot(3, 69_000), "scheduled_update")
      for (const i of [a, b]) yield* i.state.publish(snapshot(4, 73_000), "scheduled_update")
      yield* settle
      expect(b.sent.map((s) => s.webhookId)).toEqual([`msg_${rule.id.slice(4)}_1`, `msg_${rule.id.slice(4)}_4`])
      expect(a.sent.length).toBe(1)
    }))

  it.scoped("a new leader that took over before the old one evaluated a crossing fires it, once", () =>
    Effect.gen(function*() {
      const store = yield* sqliteStore
      const a = yield* instance(store, { leader: false })
      const b = yield* instance(store, { leader: false })
      yield* a.alerts.create(priceAbove(70_000))
      // The crossing reached both, but its leader died before evaluating it: nobody leads.
      for (const i of [a, b]) yield* i.state.publish(snapshot(1, 71_000), "scheduled_update")
      yield* settle
      expect(a.sent.length + b.sent.length).toBe(0)
      yield* SubscriptionRef.set(b.leadership, true)
      yield* settle
      expect(b.sent.length).toBe(1)
      expect(alertFrames(b).length).toBe(1)
    }))

  it.scoped("a warm start evaluates the snapshot it restores (its process may have died before evaluating it), once", () =>
    Effect.gen(function*() {
      const store = yield* sqliteStore
      const before = yield* instance(store, { leader: true })
      const { rule } = yield* before.alerts.create(priceAbove(70_000))
      yield* before.state.publish(snapshot(1, 69_000), "scheduled_update")
      yield* settle
      // The restarted process: the same store, the last snapshot (a crossing) restored from the cache.
      const after = yield* instance(store, { leader: true })
      // Its term has begun (with no snapshot yet) when the Updater restores the cached one.
      yield* settle
      yield* after.state.seed(snapshot(2, 71_000))
      yield* settle
      expect(after.sent.map((s) => s.webhookId)).toEqual([`msg_${rule.id.slice(4)}_2`])
      // Restored once more (another restart): nothing new.
      const again = yield* instance(store, { leader: true })
      yield* settle
      yield* again.state.seed(snapshot(2, 71_000))
      yield* settle
      expect(again.sent).toEqual([])
    }))

  it.scoped("two evaluators of one snapshot (a lease changing hands) make one firing, also when both read the rule before either writes", () =>
    Effect.gen(function*() {
      const store = yield* sqliteStore
      // Each read of the rules waits for the other's: both decide from the same state, then race to write.
      const bothRead = yield* Deferred.make<void>()
      let reads = 0
      const racing = AlertStore.of({
        ...store,
        list: Effect.gen(function*() {
          const alerts = yield* store.list
          if (++reads === 2) yield* Deferred.succeed(bothRead, undefined)
          yield* Deferred.await(bothRead)
          return alerts
        })
      })
      const a = yield* instance(racing, { leader: true })
      const b = yield* instance(racing, { leader: true })
      yield* a.alerts.create(priceAbove(70_000))
      yield* Effect.all([a.state.publish(snapshot(1, 71_000), "scheduled_update"), b.state.publish(snapshot(1, 71_000), "scheduled_update")])
      yield* settle
      expect(reads).toBe(2)
      expect(a.sent.length + b.sent.length).toBe(1)
      expect(alertFrames(a).length + alertFrames(b).length).toBe(1)
    }))

  it.scoped("one request in flight per rule, and at most MAX_IN_FLIGHT over all rules", () =>
    Effect.gen(function*() {
      const store = yield* sqliteStore
      // Every attempt waits for the test to let it finish.
      const gates: Array<Deferred.Deferred<void>> = []
      const sent: Array<SentAttempt> = []
      const gated = WebhookSender.make({
        attempt: (_url, _secret, webhookId, body) =>
          Effect.gen(function*() {
            const gate = yield* Deferred.make<void>()
            gates.push(gate)
            sent.push({ webhookId, at: yield* Clock.currentTimeMillis, body })
            yield* Deferred.await(gate)
            return AttemptResult.Delivered({ status: 200 })
          })
      })
      const leadership = yield* SubscriptionRef.make(true)
      const context = yield* Layer.build(
        Alerts.DefaultWithoutDependencies.pipe(
          Layer.provide(Layer.succeed(WebhookSender, gated)),
          Layer.provide(Layer.succeed(DnsResolver, async () => ["93.184.216.34"])),
          Layer.provide(Layer.succeed(AlertStore, store)),
          Layer.provideMerge(Broadcaster.DefaultWithoutDependencies),
          Layer.provideMerge(MarketState.DefaultWithoutDependencies),
          Layer.provide(Layer.succeed(Cluster, Cluster.of({
            kind: "standalone",
            leadership,
            nextSeq: (floor) => Effect.succeed(floor + 1),
            broadcast: () => Effect.succeed(false),
            onMessage: () => Effect.void,
            claimFetch: () => Effect.succeed(Option.none())
          }))),
          Layer.provide(AppConfig.Default),
          Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(settings)))))
        )
      )
      const alerts = Context.get(context, Alerts)
      const state = Context.get(context, MarketState)
      // One rule that fires twice while its first webhook is still in flight.
      const { rule } = yield* alerts.create(priceAbove(70_000))
      yield* state.publish(snapshot(1, 71_000), "scheduled_update")
      yield* state.publish(snapshot(2, 69_000), "scheduled_update")
      yield* state.publish(snapshot(3, 71_000), "scheduled_update")
      yield* settle
      expect(sent.map((s) => s.webhookId)).toEqual([`msg_${rule.id.slice(4)}_1`])
      expect((yield* store.pending).length).toBe(2)
      yield* Deferred.succeed(gates[0]!, undefined)
      yield* settle
      expect(sent.map((s) => s.webhookId)).toEqual([`msg_${rule.id.slice(4)}_1`, `msg_${rule.id.slice(4)}_3`])
      yield* Deferred.succeed(gates[1]!, undefined)
      yield* settle
      // The first rule and MAX_IN_FLIGHT + 4 new ones fire at once: MAX_IN_FLIGHT requests, the rest wait for a slot.
      for (let i = 0; i < MAX_IN_FLIGHT + 4; i++) yield* alerts.create(priceAbove(80_000 + i))
      yield* state.publish(snapshot(4, 60_000), "scheduled_update")
      yield* state.publish(snapshot(5, 99_000), "scheduled_update")
      yield* settle
      expect((yield* store.pending).length).toBe(MAX_IN_FLIGHT + 5)
      expect(sent.length - 2).toBe(MAX_IN_FLIGHT)
      for (const gate of gates.slice(2, 6)) yield* Deferred.succeed(gate, undefined)
      yield* settle
      expect(sent.length - 2).toBe(MAX_IN_FLIGHT + 4)
      // Finishing them lets the last one through.
      for (let round = 0; round < 5 && (yield* store.pending).length > 0; round++) {
        for (const gate of gates) yield* Deferred.succeed(gate, undefined)
        yield* settle
      }
      expect(sent.length - 2).toBe(MAX_IN_FLIGHT + 5)
      expect(yield* store.pending).toEqual([])
    }))

  it.scoped("a rule deleted while its firing waits for a retry is not sent again", () =>
    Effect.gen(function*() {
      const store = yield* sqliteStore
      const a = yield* instance(store, { leader: true, answers: [AttemptResult.Timeout({ after: Duration.seconds(10) })] })
      const { rule } = yield* a.alerts.create(priceAbove(70_000))
      yield* a.state.publish(snapshot(1, 71_000), "scheduled_update")
      yield* settle
      expect(a.sent.length).toBe(1)
      expect(yield* a.alerts.remove(rule.id)).toBe(true)
      yield* TestClock.adjust("1 minute")
      yield* settle
      expect(a.sent.length).toBe(1)
      expect(yield* store.pending).toEqual([])
      expect(yield* a.alerts.deliveries(rule.id)).toEqual(Option.none())
    }))
})
