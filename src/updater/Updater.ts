/**
 * Keeps the market fresh: the initial load and background schedule (`Policy`), force updates and
 * stale-while-revalidate refreshes. Every round, whoever asks for it, goes through one coalesced
 * round trip, is published to the market state (which readers such as the Broadcaster follow)
 * and written to the cache and the price history, behind the broadcast.
 */
import { Cause, Clock, Data, DateTime, Deferred, Duration, Effect, Exit, Fiber, FiberSet, Option, Queue, Ref, Schedule, Stream } from "effect"
import { CacheManager, cacheKey } from "../cache/CacheManager.js"
import { Cluster } from "../cluster/Cluster.js"
import { AppConfig } from "../Config.js"
import { History } from "../history/History.js"
import { MarketData, type UpstreamError } from "../market/MarketData.js"
import { encodeSnapshot, MarketSnapshot } from "../market/Watchlist.js"
import * as Metrics from "../metrics/Metrics.js"
import { MarketState, type UpdateSource } from "../state/MarketState.js"
import { Attempt, type Decision, updateDecisions } from "./Policy.js"

/** The latest snapshot, kept long enough to survive restarts and outages (its age is shown). */
export const SnapshotKey = cacheKey("market:snapshot", MarketSnapshot, "7 days", encodeSnapshot)

/**
 * A force update or refresh that may not call upstream now: within `MIN_FETCH_GAP` of the last
 * call (`min_fetch_gap`), or while the provider's `Retry-After` holds (`upstream_rate_limit`).
 */
export class RefreshTooSoon extends Data.TaggedError("RefreshTooSoon")<{
  readonly retryAfter: Duration.Duration
  readonly reason: "min_fetch_gap" | "upstream_rate_limit"
}> {
  override get message(): string {
    const why = this.reason === "min_fetch_gap"
      ? "upstream was called less than MIN_FETCH_GAP ago"
      : "the market data provider asked not to be called yet (Retry-After)"
    return `${why}; retry after ${Duration.format(this.retryAfter)}`
  }
}

/**
 * The end of one upstream round that published a snapshot. `failure` is set when some calls
 * failed and the schedule counts the round as failed; `problems` lists every call that failed or
 * was held (what they feed kept its last good value and is named in the snapshot's stale parts).
 */
export interface Round {
  readonly snapshot: MarketSnapshot
  readonly failure: Option.Option<UpstreamError>
  readonly problems: ReadonlyArray<UpstreamError>
}

/** Lets the event loop finish its turn (Bun flushes published frames then), on the real loop whatever the Clock. */
const endOfTurn = Effect.async<void>((resume) => {
  const id = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(id))
})

export class Updater extends Effect.Service<Updater>()("dashcast/Updater", {
  scoped: Effect.gen(function*() {
    const config = yield* AppConfig
    const market = yield* MarketData
    const cache = yield* CacheManager
    const state = yield* MarketState
    const cluster = yield* Cluster
    const history = yield* History
    const minGapMillis = Duration.toMillis(config.minFetchGap)
    const freshnessMillis = Duration.toMillis(config.freshness)

    yield* Effect.logInfo(`update schedule: every ${Duration.format(config.updateInterval)}`).pipe(
      Effect.annotateLogs({ update_interval_ms: Duration.toMillis(config.updateInterval), demo: config.demo })
    )

    // A warm start: the last snapshot from the cache is served at once, marked with its age.
    const cached = yield* cache.get(SnapshotKey)
    if (Option.isSome(cached)) {
      yield* state.seed(cached.value)
      yield* Effect.logInfo("serving the cached summary until the first fetch").pipe(
        Effect.annotateLogs({ seq: cached.value.seq, fetched_at: DateTime.formatIso(cached.value.fetched_at) })
      )
    }

    const background = yield* FiberSet.make()
    let inFlight: Option.Option<Deferred.Deferred<Round, UpstreamError | RefreshTooSoon>> = Option.none()
    let lastFetchStartedAt = Number.NEGATIVE_INFINITY
    // The outcome of every round, whoever started it, in order: the schedule's input.
    const outcomes = yield* Queue.sliding<Attempt>(64)
    // Snapshots this instance numbered, so that their relayed copies are not counted twice.
    const ownSeqs = new Set<number>()

    // The cache is written behind the rounds, latest first: an L2 that is slow or hangs (Redis
    // waits one timeout) neither delays clients nor the next round. The snapshot waiting to be
    // written leaves this slot only in the step that writes it; one still waiting at shutdown is
    // written then.
    let toCache = Option.none<MarketSnapshot>()
    const cacheWaiting = yield* Queue.sliding<void>(1)
    const writeCache = Effect.suspend(() => {
      const pending = toCache
      toCache = Option.none()
      return Option.match(pending, { onNone: () => Effect.void, onSome: (snapshot) => cache.set(SnapshotKey, snapshot) })
    })
    yield* Queue.take(cacheWaiting).pipe(Effect.zipRight(Effect.uninterruptible(writeCache)), Effect.forever, Effect.forkScoped)
    yield* Effect.addFinalizer(() => writeCache)

    // A round another instance made (a force update on a follower, a refresh) counts like one of
    // ours: the leader's schedule follows it.
    yield* state.subscribe((event) => {
      if (event._tag !== "Updated" || ownSeqs.has(event.snapshot.seq)) return
      Queue.unsafeOffer(
        outcomes,
        event.snapshot.view.stale.isEmpty ? Attempt.Success() : Attempt.Failure({ retryAfter: Option.none() })
      )
    })

    /**
     * What is left of the price provider's wait: as this instance's client saw it, or as another
     * instance told every one (a 429 there). When it changes here, the others learn it.
     */
    const providerWait = Effect.map(Effect.all([market.blockedFor, state.heldFor]), ([local, shared]) =>
      Option.isNone(local) ? shared : Option.isNone(shared) ? local : Option.some(Duration.max(local.value, shared.value)))
    const shareProviderWait = Effect.gen(function*() {
      const local = yield* market.blockedFor
      if (Option.isSome(local)) yield* state.holdUpstream((yield* Clock.currentTimeMillis) + Duration.toMillis(local.value))
    })

    const fetchOnce = (source: UpdateSource) =>
      Effect.gen(function*() {
        // The provider's Retry-After binds every round, the schedule's included: nothing is sent.
        const blocked = yield* providerWait
        if (Option.isSome(blocked)) return yield* new RefreshTooSoon({ retryAfter: blocked.value, reason: "upstream_rate_limit" })
        // Cluster-wide gap: a scheduled call always takes it; a force update or refresh must win it.
        const wait = yield* cluster.claimFetch(config.minFetchGap, source === "scheduled_update")
        if (Option.isSome(wait)) return yield* new RefreshTooSoon({ retryAfter: wait.value, reason: "min_fetch_gap" })
        const previous = yield* state.latest
        const fetched = yield* market.fetch(Option.map(previous, (p) => p.view)).pipe(
          Effect.tapError((error) =>
            Effect.zipRight(
              Metrics.updateOutcome("failure"),
              Effect.flatMap(state.status, (status) => state.setStatus({ ...status, lastError: Option.some(error.message) }))
            )
          )
        )
        const snapshot = MarketSnapshot.make({
          view: fetched.view,
          seq: yield* cluster.nextSeq(Option.match(previous, { onNone: () => 0, onSome: (p) => p.seq })),
          fetched_at: yield* DateTime.now
        })
        ownSeqs.add(snapshot.seq)
        if (ownSeqs.size > 64) ownSeqs.delete(ownSeqs.values().next().value ?? snapshot.seq)
        // Clients first, then the cache, behind. Bun sends a published frame under 16 KiB when the
        // event loop's turn ends: end it now, before the answer to a force update and the cache write.
        yield* state.publish(snapshot, source)
        yield* endOfTurn
        toCache = Option.some(snapshot)
        yield* Queue.offer(cacheWaiting, undefined)
        // The instance that made the round records it in the price history (shared by a cluster).
        yield* history.record(snapshot, fetched.seeds)
        yield* Metrics.updateOutcome(fetched.problems.length > 0 ? "partial" : "success")
        const failure = fetched.failure
        if (Option.isSome(failure)) {
          yield* Effect.flatMap(state.status, (status) => state.setStatus({ ...status, lastError: Option.some(failure.value.message) }))
        }
        return { snapshot, failure, problems: fetched.problems } satisfies Round
      }).pipe(Effect.withSpan("Updater.fetch", { attributes: { source } }))

    /**
     * What a round's end means to the schedule: a published snapshot without failures is a success,
     * anything else a failure, lengthened to what the provider still asks to wait. A round that was
     * refused by the fetch gap never happened, so it is no outcome at all.
     */
    const outcomeOf = (exit: Exit.Exit<Round, UpstreamError | RefreshTooSoon>): Effect.Effect<Option.Option<Attempt>> =>
      Effect.gen(function*() {
        if (Exit.isSuccess(exit) && Option.isNone(exit.value.failure)) return Option.some(Attempt.Success())
        const refusedByGap = Exit.isFailure(exit) &&
          Option.exists(Cause.failureOption(exit.cause), (e) => e._tag === "RefreshTooSoon" && e.reason === "min_fetch_gap")
        if (refusedByGap || Exit.isInterrupted(exit)) return Option.none()
        return Option.some(Attempt.Failure({ retryAfter: yield* providerWait }))
      })

    /**
     * Claims the upstream for one round and returns the effect that performs it. Claiming is
     * synchronous, so callers that check and claim in one step never start two round trips. The
     * round's outcome goes to the schedule, whoever started it.
     */
    const claimFetch = (source: UpdateSource) =>
      Effect.gen(function*() {
        const deferred = yield* Deferred.make<Round, UpstreamError | RefreshTooSoon>()
        inFlight = Option.some(deferred)
        lastFetchStartedAt = yield* Clock.currentTimeMillis
        return Effect.uninterruptibleMask((restore) =>
          Effect.gen(function*() {
            const exit = yield* Effect.exit(restore(fetchOnce(source)))
            yield* shareProviderWait
            inFlight = Option.none()
            yield* Deferred.done(deferred, exit)
            const outcome = yield* outcomeOf(exit)
            if (Option.isSome(outcome)) yield* Queue.offer(outcomes, outcome.value)
            return yield* exit
          })
        )
      })

    /** One upstream round trip shared by every concurrent caller (schedule, force, refresh). */
    const fetchCoalesced = (source: UpdateSource): Effect.Effect<Round, UpstreamError | RefreshTooSoon> =>
      Effect.suspend(() =>
        Option.match(inFlight, {
          onSome: Deferred.await,
          onNone: () => Effect.flatten(claimFetch(source))
        })
      )

    /** After each round: record when the next is due; after a failure, tell clients and log one line. */
    const announce = (decision: Decision) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const nextAttemptAt = Option.some(now + Duration.toMillis(decision.delay))
        const status = yield* state.status
        yield* Metrics.consecutiveFailures(decision.failures)
        if (Attempt.$is("Success")(decision.last)) {
          return yield* state.setStatus({ nextAttemptAt, lastError: Option.none() })
        }
        yield* state.setStatus({ ...status, nextAttemptAt })
        if (decision.failures === config.maxConsecutiveFailures + 1) yield* Metrics.backoffEntered
        const retryAfter = Math.ceil(Duration.toMillis(decision.delay) / 1000)
        const reason = Option.getOrElse(status.lastError, () => "unknown error")
        yield* state.publishError(`Failed to fetch market data: ${reason}`, retryAfter)
        yield* Effect.logWarning(`upstream fetch failed: ${reason}; next attempt in ${retryAfter} s`).pipe(
          Effect.annotateLogs({ consecutive_failures: decision.failures })
        )
      })

    const decisions = updateDecisions({
      interval: config.updateInterval,
      threshold: config.maxConsecutiveFailures,
      cap: config.maxBackoff,
      initialAttempts: config.initialFetchRetries,
      initialDelay: config.initialRetryDelay
    }).pipe(Schedule.tapOutput(announce))

    /**
     * Only the leader runs the schedule (alone, an instance always leads). An instance that takes
     * over from another waits until the summary it inherited is due, so a takeover is no burst.
     */
    const takeoverDelay = Effect.gen(function*() {
      if (cluster.kind === "standalone") return Duration.zero
      const now = yield* Clock.currentTimeMillis
      const latest = yield* state.latest
      return Option.match(latest, {
        onNone: () => Duration.zero,
        onSome: (l) =>
          Duration.millis(Math.max(0, DateTime.toEpochMillis(l.fetched_at) + Duration.toMillis(config.updateInterval) - now))
      })
    })

    /**
     * A scheduled round after `delay`. Until the round starts, the wait is cut short by any other
     * round's outcome; once it runs, it is waited for (its outcome is already on its way).
     */
    const armTimer = (delay: Duration.Duration) =>
      Effect.gen(function*() {
        const started = yield* Ref.make(false)
        const fiber = yield* Effect.sleep(delay).pipe(
          Effect.zipRight(Ref.set(started, true)),
          Effect.zipRight(Effect.ignore(fetchCoalesced("scheduled_update"))),
          Effect.fork
        )
        return Effect.flatMap(Ref.get(started), (running) => (running ? Effect.asVoid(Fiber.await(fiber)) : Fiber.interrupt(fiber)))
      })

    /**
     * The schedule (docs/ARCHITECTURE.md, "The schedule"): every round's outcome, scheduled or not, is the
     * next input of the same `Schedule`, and the next scheduled round follows the delay it decides.
     * So a force update that succeeds resets the failures and puts the next attempt one
     * `UPDATE_INTERVAL` after it.
     */
    const runSchedule = Effect.gen(function*() {
      const driver = yield* Schedule.driver(decisions)
      // Outcomes from before this term of leadership are not this schedule's.
      yield* Queue.takeAll(outcomes)
      let disarm = yield* armTimer(yield* takeoverDelay)
      for (;;) {
        const outcome = yield* Queue.take(outcomes)
        yield* disarm
        const decision = yield* Effect.orDie(driver.next(outcome))
        disarm = yield* armTimer(decision.delay)
      }
    })

    yield* cluster.leadership.changes.pipe(
      Stream.changes,
      Stream.flatMap((leader) => (leader ? Stream.fromEffect(runSchedule) : Stream.empty), { switch: true }),
      Stream.runDrain,
      Effect.forkScoped,
      Effect.interruptible
    )

    /** Seconds until upstream may be called again outside the schedule, or none if it may now. */
    const gapRemaining = Effect.map(Clock.currentTimeMillis, (now) => {
      const wait = lastFetchStartedAt + minGapMillis - now
      return wait > 0 ? Option.some(Duration.millis(wait)) : Option.none()
    })

    /**
     * Stale-while-revalidate: asked for when a client connects to an old snapshot. Starts one
     * background refresh, unless one runs or the gap or the provider forbids it.
     */
    const refreshIfStale = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const latest = yield* state.latest
      const fresh = Option.exists(latest, (l) => now - DateTime.toEpochMillis(l.fetched_at) < freshnessMillis)
      if (fresh || Option.isNone(latest) || Option.isSome(inFlight) || Option.isSome(yield* gapRemaining)) return false
      if (Option.isSome(yield* providerWait)) return false
      const refresh = yield* claimFetch("refresh")
      yield* refresh.pipe(
        // Another instance refreshed within the gap: its update reaches us through the channel.
        Effect.catchTag("RefreshTooSoon", () => Effect.void),
        Effect.catchTag("UpstreamError", (error) => Effect.logWarning(`background refresh failed: ${error.message}`)),
        Effect.catchAllCause((cause) => (Cause.isInterruptedOnly(cause) ? Effect.void : Effect.logError("background refresh failed", cause))),
        FiberSet.run(background)
      )
      return true
    })
    const runInBackground = yield* FiberSet.makeRuntime<never>()
    yield* state.onRefreshWanted(() => {
      runInBackground(refreshIfStale)
    })

    return {
      /**
       * A fetch on demand (`POST /api/dashboard/refresh`), refused within `MIN_FETCH_GAP` and while
       * the provider's `Retry-After` holds. A round in flight is joined.
       */
      forceUpdate: Effect.fn("Updater.forceUpdate")(function*() {
        if (Option.isSome(inFlight)) return yield* Deferred.await(inFlight.value)
        const blocked = yield* providerWait
        if (Option.isSome(blocked)) return yield* new RefreshTooSoon({ retryAfter: blocked.value, reason: "upstream_rate_limit" })
        const wait = yield* gapRemaining
        if (Option.isSome(wait)) return yield* new RefreshTooSoon({ retryAfter: wait.value, reason: "min_fetch_gap" })
        return yield* fetchCoalesced("force_update")
      }),
      /** Waits until the round in flight, if any, has ended (whatever its outcome). */
      idle: Effect.suspend(() => Option.match(inFlight, { onNone: () => Effect.void, onSome: (d) => Effect.ignore(Deferred.await(d)) })),
      refreshIfStale
    }
  }),
  dependencies: [MarketState.Default, CacheManager.Default]
}) {}
