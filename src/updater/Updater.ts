/**
 * Keeps the summary fresh: the initial load and background schedule (`Policy`), force updates and
 * stale-while-revalidate refreshes. Every fetch, whoever asks for it, goes through one coalesced
 * round trip, is written to the cache and handed to the Broadcaster.
 */
import { Cause, Clock, Data, DateTime, Deferred, Duration, Effect, FiberSet, Option, Schedule, Stream } from "effect"
import { CacheManager, cacheKey } from "../cache/CacheManager.js"
import { Cluster } from "../cluster/Cluster.js"
import { AppConfig } from "../Config.js"
import { SummarySnapshot } from "../market/DashboardSummary.js"
import * as Metrics from "../metrics/Metrics.js"
import { MarketData, type UpstreamError } from "../market/MarketData.js"
import { Broadcaster } from "../realtime/Broadcaster.js"
import type { UpdateSource } from "../realtime/Protocol.js"
import { Attempt, type Decision, updatePolicy } from "./Policy.js"

/** The latest snapshot, kept long enough to survive restarts and outages (its age is shown). */
export const SummaryKey = cacheKey("dashboard:summary", SummarySnapshot, "7 days")

/** A force update asked for sooner than `MIN_FETCH_GAP` after the last upstream call. */
export class RefreshTooSoon extends Data.TaggedError("RefreshTooSoon")<{ readonly retryAfter: Duration.Duration }> {
  override get message(): string {
    return `upstream was called less than MIN_FETCH_GAP ago; retry after ${Duration.format(this.retryAfter)}`
  }
}

export class Updater extends Effect.Service<Updater>()("dashcast/Updater", {
  scoped: Effect.gen(function*() {
    const config = yield* AppConfig
    const market = yield* MarketData
    const cache = yield* CacheManager
    const broadcaster = yield* Broadcaster
    const cluster = yield* Cluster
    const minGapMillis = Duration.toMillis(config.minFetchGap)
    const freshnessMillis = Duration.toMillis(config.freshness)

    yield* Effect.logInfo(`update schedule: every ${Duration.format(config.updateInterval)}`).pipe(
      Effect.annotateLogs({ update_interval_ms: Duration.toMillis(config.updateInterval), demo: config.demo })
    )

    // A warm start: the last snapshot from the cache is served at once, marked with its age.
    const cached = yield* cache.get(SummaryKey)
    if (Option.isSome(cached)) {
      yield* broadcaster.seed(cached.value)
      yield* Effect.logInfo("serving the cached summary until the first fetch").pipe(
        Effect.annotateLogs({ seq: cached.value.seq, fetched_at: DateTime.formatIso(cached.value.fetched_at) })
      )
    }

    const background = yield* FiberSet.make()
    let inFlight: Option.Option<Deferred.Deferred<SummarySnapshot, UpstreamError | RefreshTooSoon>> = Option.none()
    let lastFetchStartedAt = Number.NEGATIVE_INFINITY

    const fetchOnce = (source: UpdateSource) =>
      Effect.gen(function*() {
        // Cluster-wide gap: a scheduled call always takes it; a force update or refresh must win it.
        const wait = yield* cluster.claimFetch(config.minFetchGap, source === "scheduled_update")
        if (Option.isSome(wait)) return yield* new RefreshTooSoon({ retryAfter: wait.value })
        const previous = yield* broadcaster.latest
        const fetched = yield* market.fetch(Option.map(previous, (p) => p.summary)).pipe(
          Effect.tapError(() => Metrics.updateOutcome("failure"))
        )
        const snapshot = SummarySnapshot.make({
          summary: fetched.summary,
          seq: yield* cluster.nextSeq(Option.match(previous, { onNone: () => 0, onSome: (p) => p.seq })),
          fetched_at: yield* DateTime.now,
          stale_fields: fetched.staleFields
        })
        // Clients first: a slow or failing L2 write must not delay the broadcast.
        yield* broadcaster.publishUpdate(snapshot, source)
        yield* cache.set(SummaryKey, snapshot)
        yield* Metrics.updateOutcome(Option.isSome(fetched.partialFailure) ? "partial" : "success")
        // A partial result is published, but the attempt still counts as a failure for the schedule.
        return yield* Option.match(fetched.partialFailure, {
          onNone: () => Effect.succeed(snapshot),
          onSome: Effect.fail
        })
      }).pipe(Effect.withSpan("Updater.fetch", { attributes: { source } }))

    /**
     * Claims the upstream for one fetch and returns the effect that performs it. Claiming is
     * synchronous, so callers that check and claim in one step never start two round trips.
     */
    const claimFetch = (source: UpdateSource) =>
      Effect.gen(function*() {
        const deferred = yield* Deferred.make<SummarySnapshot, UpstreamError | RefreshTooSoon>()
        inFlight = Option.some(deferred)
        lastFetchStartedAt = yield* Clock.currentTimeMillis
        return Effect.uninterruptibleMask((restore) =>
          Effect.gen(function*() {
            const exit = yield* Effect.exit(restore(fetchOnce(source)))
            inFlight = Option.none()
            yield* Deferred.done(deferred, exit)
            return yield* exit
          })
        )
      })

    /** One upstream round trip shared by every concurrent caller (schedule, force, refresh). */
    const fetchCoalesced = (source: UpdateSource): Effect.Effect<SummarySnapshot, UpstreamError | RefreshTooSoon> =>
      Effect.suspend(() =>
        Option.match(inFlight, {
          onSome: Deferred.await,
          onNone: () => Effect.flatten(claimFetch(source))
        })
      )

    const attempt = fetchCoalesced("scheduled_update").pipe(
      // A scheduled attempt that joined a refresh the cluster refused makes its own call.
      Effect.catchTag("RefreshTooSoon", () => fetchCoalesced("scheduled_update")),
      Effect.as(Attempt.Success()),
      Effect.catchTag("RefreshTooSoon", () => Effect.succeed(Attempt.Success())),
      Effect.catchTag("UpstreamError", (error) =>
        broadcaster.status.pipe(
          Effect.flatMap((status) => broadcaster.setStatus({ ...status, lastError: Option.some(error.message) })),
          Effect.as(Attempt.Failure({ retryAfter: error.retryAfter }))
        ))
    )

    /** After each attempt: record when the next is due; after a failure, tell clients and log one line. */
    const announce = (decision: Decision) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const nextAttemptAt = Option.some(now + Duration.toMillis(decision.delay))
        const status = yield* broadcaster.status
        yield* Metrics.consecutiveFailures(decision.failures)
        if (Attempt.$is("Success")(decision.last)) {
          return yield* broadcaster.setStatus({ nextAttemptAt, lastError: Option.none() })
        }
        yield* broadcaster.setStatus({ ...status, nextAttemptAt })
        if (decision.failures === config.maxConsecutiveFailures + 1) yield* Metrics.backoffEntered
        const retryAfter = Math.ceil(Duration.toMillis(decision.delay) / 1000)
        const reason = Option.getOrElse(status.lastError, () => "unknown error")
        yield* broadcaster.publishError(`Failed to fetch market data: ${reason}`, retryAfter)
        yield* Effect.logWarning(`upstream fetch failed: ${reason}; next attempt in ${retryAfter} s`).pipe(
          Effect.annotateLogs({ consecutive_failures: decision.failures })
        )
      })

    const policy = updatePolicy({
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
      const latest = yield* broadcaster.latest
      return Option.match(latest, {
        onNone: () => Duration.zero,
        onSome: (l) =>
          Duration.millis(Math.max(0, DateTime.toEpochMillis(l.fetched_at) + Duration.toMillis(config.updateInterval) - now))
      })
    })
    const runSchedule = Effect.flatMap(takeoverDelay, Effect.sleep).pipe(Effect.zipRight(Effect.repeat(attempt, policy)))

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

    return {
      /** A fetch on demand (`POST /api/dashboard/refresh`), refused within `MIN_FETCH_GAP`. */
      forceUpdate: Effect.fn("Updater.forceUpdate")(function*() {
        if (Option.isSome(inFlight)) return yield* Deferred.await(inFlight.value)
        const wait = yield* gapRemaining
        if (Option.isSome(wait)) return yield* new RefreshTooSoon({ retryAfter: wait.value })
        return yield* fetchCoalesced("force_update")
      }),
      /**
       * Stale-while-revalidate: called when a client connects. When the summary is older than
       * `FRESHNESS`, starts one background refresh, unless one runs or the gap forbids it.
       */
      refreshIfStale: Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const latest = yield* broadcaster.latest
        const fresh = Option.exists(latest, (l) => now - DateTime.toEpochMillis(l.fetched_at) < freshnessMillis)
        if (fresh || Option.isNone(latest) || Option.isSome(inFlight) || Option.isSome(yield* gapRemaining)) return false
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
    }
  }),
  dependencies: [Broadcaster.Default, CacheManager.Default]
}) {}
