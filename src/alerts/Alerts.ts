/**
 * Price alerts (docs/ARCHITECTURE.md, "Alerts"): rules over the admin API, kept in L2; evaluated on
 * every new snapshot by the leader alone; each firing published to the clients of the rule's
 * currency and delivered as a signed webhook, retried by `webhookRetryPolicy`. The armed state and
 * every firing not yet delivered are in L2, written by compare-and-set, so that a new leader (after
 * a kill -9) or a restarted instance neither loses nor repeats a firing, and finishes its delivery
 * with the same `webhook-id`. Evaluation never delays a broadcast: the state's reader only queues.
 */
import { Clock, Data, DateTime, Duration, Effect, FiberSet, Layer, Option, Queue, Redacted, Schedule, Schema, Stream } from "effect"
import { randomBytes } from "node:crypto"
import { Cluster } from "../cluster/Cluster.js"
import { AppConfig } from "../Config.js"
import type { MarketSnapshot } from "../market/Watchlist.js"
import * as Metrics from "../metrics/Metrics.js"
import { Broadcaster } from "../realtime/Broadcaster.js"
import { encodeServerMessage } from "../realtime/Protocol.js"
import { MarketState } from "../state/MarketState.js"
import {
  AlertRule,
  AlertState,
  type AttemptOutcome,
  type Condition,
  type DeliveryAttempt,
  measureOf,
  needsAsset,
  PendingDelivery,
  type StoredAlert
} from "./AlertRule.js"
import { AlertStore, type AlertStoreError } from "./AlertStore.js"
import { evaluate } from "./Evaluation.js"
import { RedisAlertStoreLive } from "./RedisAlertStore.js"
import { SqliteAlertStoreLive } from "./SqliteAlertStore.js"
import { parseWebhookUrl, pinTarget } from "./TargetGuard.js"
import {
  AttemptResult,
  describeResult,
  DnsResolver,
  type Firing,
  newSecret,
  retryDelayAfter,
  webhookBody,
  webhookIdOf,
  webhookRetryPolicy,
  WebhookSender
} from "./Webhooks.js"

/** The alert store the configuration asks for: Redis when `REDIS_URL` is set, else the SQLite file at `CACHE_PATH`. */
export const AlertStoreLive: Layer.Layer<AlertStore, never, AppConfig> = Layer.unwrapEffect(
  Effect.map(AppConfig, (config) =>
    Option.match(config.redisUrl, {
      onNone: () => SqliteAlertStoreLive({ path: config.cachePath }),
      onSome: (url) => RedisAlertStoreLive({ url })
    }))
)

/** Webhook requests in flight at once, over every rule. */
export const MAX_IN_FLIGHT = 16
/** Webhook requests in flight at once to one rule's receiver. */
export const MAX_IN_FLIGHT_PER_RULE = 1
/** The longest cooldown a rule may have. */
const MAX_COOLDOWN = Duration.days(30)

/** A new rule as asked for (the API has checked the JSON types). */
export interface AlertInput {
  readonly asset?: string | undefined
  readonly currency: string
  readonly condition: Condition
  readonly threshold: number
  readonly webhook_url: string
  readonly cooldown?: string | undefined
}

/** A value of a new rule that cannot be used, and which field it is. */
export class InvalidAlert extends Data.TaggedError("InvalidAlert")<{ readonly field: string; readonly detail: string }> {
  override get message(): string {
    return `${this.field}: ${this.detail}`
  }
}

const DURATION_TEXT = /^\d+(?:\.\d+)?\s+(?:nanos?|micros?|millis?|seconds?|minutes?|hours?|days?|weeks?)$/

/** The relayed firing: every instance publishes it to its own clients of the currency. */
const AlertEnvelope = Schema.parseJson(Schema.Struct({ kind: Schema.Literal("alert"), currency: Schema.String, frame: Schema.String }))
const encodeEnvelope = Schema.encodeSync(AlertEnvelope)
const ALERT_ENVELOPE_START = "{\"kind\":\"alert\""
const decodeEnvelope = Schema.decodeUnknownOption(AlertEnvelope)

const outcomeLabel = (result: AttemptResult): Metrics.WebhookAttemptOutcome =>
  AttemptResult.$match(result, {
    Delivered: () => "delivered" as const,
    HttpStatus: () => "http_status" as const,
    Timeout: () => "timeout" as const,
    Network: () => "network" as const,
    Refused: () => "refused" as const
  })

export class Alerts extends Effect.Service<Alerts>()("dashcast/Alerts", {
  scoped: Effect.gen(function*() {
    const config = yield* AppConfig
    const store = yield* AlertStore
    const state = yield* MarketState
    const cluster = yield* Cluster
    const broadcaster = yield* Broadcaster
    const sender = yield* WebhookSender
    const resolve = yield* DnsResolver
    const policy = webhookRetryPolicy(config.webhookRetryDelay)
    const assets = new Set(config.assets)
    const currencies = new Set(config.currencies)

    // --- Firings to clients, on every instance ---------------------------------------------------

    // Every update travels on the same channel: only what starts as an alert envelope is decoded.
    yield* cluster.onMessage((message) => {
      if (!message.startsWith(ALERT_ENVELOPE_START)) return
      Option.map(decodeEnvelope(message), ({ currency, frame }) => broadcaster.publishOnTopic(currency, frame))
    })

    const publishFiring = (firing: Firing) =>
      Effect.gen(function*() {
        const frame = encodeServerMessage({
          type: "alert",
          id: firing.webhookId,
          alert_id: firing.rule.id,
          asset: firing.rule.asset,
          currency: firing.rule.currency,
          condition: firing.rule.condition,
          threshold: firing.rule.threshold,
          value: firing.value,
          seq: firing.seq,
          timestamp: new Date(firing.at).toISOString()
        })
        const relayed = yield* cluster.broadcast(() => encodeEnvelope({ kind: "alert", currency: firing.rule.currency, frame }))
        if (!relayed) broadcaster.publishOnTopic(firing.rule.currency, frame)
      })

    // --- Delivery (leader only) --------------------------------------------------------------------

    const global = yield* Effect.makeSemaphore(MAX_IN_FLIGHT)
    const perRule = new Map<string, Effect.Semaphore>()
    const ruleSlot = (id: string) =>
      Effect.gen(function*() {
        const existing = perRule.get(id)
        if (existing !== undefined) return existing
        const made = yield* Effect.makeSemaphore(MAX_IN_FLIGHT_PER_RULE)
        perRule.set(id, made)
        return made
      })
    /** Firings being delivered by this instance, so that none is delivered twice at once. */
    const delivering = new Set<string>()

    const logStoreError = (what: string) => (error: AlertStoreError) =>
      Effect.logWarning(`${what}: ${error.message}`).pipe(Effect.annotateLogs({ service: "Alerts" }))

    /**
     * Delivers one firing until it succeeds or the schedule gives up, from the attempt the store
     * says is next, at the time it says. Every attempt is logged, counted and recorded with the
     * next one (or the end) in one step, so a restart or a takeover resumes exactly there.
     */
    const deliver = (pending: PendingDelivery): Effect.Effect<void> =>
      Effect.gen(function*() {
        let current = pending
        for (;;) {
          const wait = current.next_at - (yield* Clock.currentTimeMillis)
          if (wait > 0) yield* Effect.sleep(Duration.millis(wait))
          const found = yield* store.get(current.rule_id).pipe(Effect.option)
          if (Option.isSome(found) && Option.isNone(found.value)) {
            // The rule was deleted (its firings with it).
            yield* Metrics.webhookDelivery("cancelled")
            return
          }
          // The store does not answer: try again at the next retry's time, from memory.
          const rule = Option.flatten(found).pipe(Option.map((a) => a.rule))
          if (Option.isNone(rule)) {
            yield* Effect.logWarning("alert store unavailable: webhook attempt postponed").pipe(
              Effect.annotateLogs({ alert_id: current.rule_id, webhook_id: current.webhook_id })
            )
            current = PendingDelivery.make({ ...current, next_at: (yield* Clock.currentTimeMillis) + Duration.toMillis(config.webhookRetryDelay) })
            continue
          }
          const attemptNumber = current.attempts + 1
          const slot = yield* ruleSlot(current.rule_id)
          const startedAt = yield* Clock.currentTimeMillis
          const result = yield* sender.attempt(new URL(rule.value.webhook_url), rule.value.secret, current.webhook_id, current.body).pipe(
            slot.withPermits(1),
            global.withPermits(1)
          )
          const endedAt = yield* Clock.currentTimeMillis
          const delivered = result._tag === "Delivered"
          const retryIn = delivered ? Option.none<Duration.Duration>() : yield* retryDelayAfter(policy, attemptNumber)
          const outcome: AttemptOutcome = delivered ? "delivered" : Option.isSome(retryIn) ? "failed" : "gave_up"
          const status = result._tag === "Delivered" || result._tag === "HttpStatus" ? result.status : null
          const record: DeliveryAttempt = {
            webhook_id: current.webhook_id,
            attempt: attemptNumber,
            at: new Date(startedAt).toISOString(),
            status,
            latency_ms: endedAt - startedAt,
            outcome,
            ...(delivered ? {} : { error: describeResult(result) })
          }
          const next = Option.map(retryIn, (delay) =>
            PendingDelivery.make({ ...current, attempts: attemptNumber, next_at: endedAt + Duration.toMillis(delay) }))
          yield* store.recordAttempt(current.rule_id, current.webhook_id, record, next).pipe(
            Effect.catchAll(logStoreError("webhook attempt not recorded"))
          )
          yield* Metrics.webhookAttempt(outcomeLabel(result))
          const annotations = {
            alert_id: current.rule_id,
            webhook_id: current.webhook_id,
            attempt: attemptNumber,
            status: status ?? "none",
            latency_ms: record.latency_ms,
            target: new URL(rule.value.webhook_url).host
          }
          if (delivered) {
            yield* Metrics.webhookDelivery("delivered")
            return yield* Effect.logInfo("webhook delivered").pipe(Effect.annotateLogs(annotations))
          }
          if (Option.isNone(next)) {
            yield* Metrics.webhookDelivery("gave_up")
            return yield* Effect.logError(`webhook given up after ${attemptNumber} attempts: ${describeResult(result)}`).pipe(
              Effect.annotateLogs(annotations)
            )
          }
          const nextIn = Duration.millis(Math.round(Duration.toMillis(Option.getOrElse(retryIn, () => Duration.zero))))
          yield* Effect.logWarning(`webhook attempt failed: ${describeResult(result)}; next in ${Duration.format(nextIn)}`).pipe(
            Effect.annotateLogs(annotations)
          )
          current = next.value
        }
      }).pipe(Effect.withSpan("Alerts.deliver", { attributes: { webhook_id: pending.webhook_id } }))

    // --- Evaluation (leader only) ------------------------------------------------------------------

    /** Evaluates every rule against `snapshot`; each change is written by compare-and-set before anything is sent. */
    const evaluateSnapshot = (snapshot: MarketSnapshot, startDelivery: (pending: PendingDelivery) => Effect.Effect<void>) =>
      Effect.gen(function*() {
        const alerts = yield* store.list
        for (const { rule, state: ruleState } of alerts) {
          const transition = evaluate(rule, ruleState, snapshot)
          if (Option.isNone(transition)) continue
          const change = transition.value
          const firing = change._tag === "Fired"
            ? Option.some({
              webhookId: webhookIdOf(rule.id, snapshot.seq),
              rule,
              value: change.value,
              seq: snapshot.seq,
              at: DateTime.toEpochMillis(snapshot.fetched_at)
            })
            : Option.none<Firing>()
          const pending = Option.map(firing, (f) =>
            PendingDelivery.make({ webhook_id: f.webhookId, rule_id: rule.id, body: webhookBody(f), attempts: 0, next_at: 0 }))
          const applied = yield* store.transition(rule.id, ruleState.version, change.state, pending).pipe(
            Effect.catchAll((error) => Effect.as(logStoreError(`alert ${rule.id} not evaluated at seq ${snapshot.seq}`)(error), false))
          )
          // Not applied: another evaluator changed it first (or the rule is gone); it owns the firing.
          if (!applied || Option.isNone(firing) || Option.isNone(pending)) continue
          yield* Metrics.alertFired(rule.condition)
          yield* Effect.logInfo("alert fired").pipe(
            Effect.annotateLogs({
              alert_id: rule.id,
              webhook_id: firing.value.webhookId,
              asset: rule.asset ?? "",
              currency: rule.currency,
              condition: rule.condition,
              threshold: rule.threshold,
              value: firing.value.value,
              seq: snapshot.seq
            })
          )
          yield* publishFiring(firing.value)
          yield* startDelivery(pending.value)
        }
      }).pipe(
        Effect.catchAll(logStoreError(`alerts not evaluated at seq ${snapshot.seq}`)),
        Effect.withSpan("Alerts.evaluate", { attributes: { seq: snapshot.seq } })
      )

    // Readers are called synchronously by the market state: this one only queues the snapshot. A
    // warm start's snapshot (Seeded) is queued too: the process may have published it and died
    // before evaluating it, and evaluating a snapshot again decides nothing new.
    const snapshots = yield* Queue.sliding<MarketSnapshot>(256)
    yield* state.subscribe((event) => {
      if (event._tag === "Updated" || event._tag === "Seeded") Queue.unsafeOffer(snapshots, event.snapshot)
    })

    /**
     * One term of leadership: the snapshot held now is evaluated (a leader that died may have
     * published it without evaluating it), the firings in the outbox are resumed, then every new
     * snapshot is evaluated. Losing the lead ends the term and its deliveries.
     */
    const leaderTerm = Effect.gen(function*() {
      const fibers = yield* FiberSet.make()
      const startDelivery = (pending: PendingDelivery) =>
        Effect.suspend(() => {
          if (delivering.has(pending.webhook_id)) return Effect.void
          delivering.add(pending.webhook_id)
          return FiberSet.run(fibers, deliver(pending).pipe(Effect.ensuring(Effect.sync(() => delivering.delete(pending.webhook_id)))))
            .pipe(Effect.asVoid)
        })
      yield* Queue.takeAll(snapshots)
      const held = state.current()
      if (Option.isSome(held)) yield* evaluateSnapshot(held.value, startDelivery)
      // The outbox, until the store answers once.
      yield* store.pending.pipe(
        Effect.tapError(logStoreError("pending webhooks not read; trying again")),
        Effect.retry(Schedule.spaced(config.webhookRetryDelay)),
        Effect.flatMap((all) => Effect.forEach(all, startDelivery, { discard: true })),
        Effect.forkScoped
      )
      return yield* Queue.take(snapshots).pipe(Effect.flatMap((snapshot) => evaluateSnapshot(snapshot, startDelivery)), Effect.forever)
    }).pipe(Effect.scoped)

    yield* cluster.leadership.changes.pipe(
      Stream.changes,
      Stream.flatMap((leader) => (leader ? Stream.fromEffect(leaderTerm) : Stream.empty), { switch: true }),
      Stream.runDrain,
      Effect.forkScoped,
      Effect.interruptible
    )

    // --- Rules -------------------------------------------------------------------------------------

    const invalid = (field: string, detail: string) => Effect.fail(new InvalidAlert({ field, detail }))

    /** Checks a new rule field by field; the first problem is the answer. */
    const validate = (input: AlertInput) =>
      Effect.gen(function*() {
        if (!currencies.has(input.currency)) {
          return yield* invalid("currency", `${JSON.stringify(input.currency)} is not one of CURRENCIES (${config.currencies.join(", ")})`)
        }
        const asset = needsAsset(input.condition) ? input.asset : undefined
        if (needsAsset(input.condition) && asset === undefined) return yield* invalid("asset", `${input.condition} needs an asset`)
        if (input.asset !== undefined && !assets.has(input.asset)) {
          return yield* invalid("asset", `${JSON.stringify(input.asset)} is not watched; ASSETS has ${config.assets.join(", ")}`)
        }
        if (!Number.isFinite(input.threshold)) return yield* invalid("threshold", "must be a finite number")
        const measure = measureOf(input.condition)
        if ((measure === "rsi" || measure === "fear_greed") && (input.threshold < 0 || input.threshold > 100)) {
          return yield* invalid("threshold", `${measure === "rsi" ? "RSI-14" : "Fear & Greed"} is between 0 and 100`)
        }
        const url = yield* parseWebhookUrl(input.webhook_url).pipe(Effect.mapError((e) => new InvalidAlert({ field: "webhook_url", detail: e.message })))
        yield* pinTarget(url, { allowPrivate: config.webhookAllowPrivate, resolve }).pipe(
          Effect.mapError((e) => new InvalidAlert({ field: "webhook_url", detail: e.message }))
        )
        const cooldownText = (input.cooldown ?? "0 seconds").trim()
        const cooldown = DURATION_TEXT.test(cooldownText) ? Duration.decodeUnknown(cooldownText) : Option.none()
        if (Option.isNone(cooldown)) {
          return yield* invalid("cooldown", `${JSON.stringify(input.cooldown)} is not a duration such as "15 minutes"`)
        }
        if (Duration.greaterThan(cooldown.value, MAX_COOLDOWN)) return yield* invalid("cooldown", "is longer than 30 days")
        return { asset: asset ?? null, url, cooldownText, cooldownMs: Duration.toMillis(cooldown.value) }
      })

    return {
      /** Stores a new rule; the answer is the only place its secret is ever shown. */
      create: Effect.fn("Alerts.create")(function*(input: AlertInput) {
        const checked = yield* validate(input)
        const rule = AlertRule.make({
          id: `alr_${randomBytes(12).toString("hex")}`,
          asset: checked.asset,
          currency: input.currency,
          condition: input.condition,
          threshold: input.threshold,
          webhook_url: checked.url.href,
          cooldown: checked.cooldownText,
          cooldown_ms: checked.cooldownMs,
          created_at: yield* Clock.currentTimeMillis,
          created_seq: Option.match(state.current(), { onNone: () => 0, onSome: (s) => s.seq }),
          secret: newSecret()
        })
        const initial = AlertState.initial(rule.created_seq)
        yield* store.create(rule, initial)
        yield* Effect.logInfo("alert rule created").pipe(
          Effect.annotateLogs({ alert_id: rule.id, condition: rule.condition, asset: rule.asset ?? "", currency: rule.currency, threshold: rule.threshold })
        )
        return { rule, state: initial, secret: Redacted.value(rule.secret) }
      }),
      list: store.list,
      get: (id: string): Effect.Effect<Option.Option<StoredAlert>, AlertStoreError> => store.get(id),
      remove: Effect.fn("Alerts.remove")(function*(id: string) {
        const removed = yield* store.remove(id)
        if (removed) {
          perRule.delete(id)
          yield* Effect.logInfo("alert rule deleted").pipe(Effect.annotateLogs({ alert_id: id }))
        }
        return removed
      }),
      /** The rule's delivery attempts, newest last, or none when there is no such rule. */
      deliveries: (id: string) =>
        Effect.gen(function*() {
          const alert = yield* store.get(id)
          if (Option.isNone(alert)) return Option.none<ReadonlyArray<DeliveryAttempt>>()
          return Option.some(yield* store.attempts(id))
        })
    }
  }),
  dependencies: [WebhookSender.Default]
}) {}
