/**
 * Turns summaries and upstream failures into protocol frames and publishes them on the Bun topic
 * `dashboard`; when clustered, every frame travels through the cluster channel first and each
 * instance relays it to its own topic once. It also holds the latest snapshot in memory, so a
 * connecting socket gets its welcome synchronously, without a cache read or a fiber per connection.
 */
import { Clock, DateTime, Duration, Effect, Option, Schema } from "effect"
import { Cluster } from "../cluster/Cluster.js"
import { AppConfig } from "../Config.js"
import { DashboardSummary, SummarySnapshot } from "../market/DashboardSummary.js"
import * as Metrics from "../metrics/Metrics.js"
import { History } from "../updater/History.js"
import { encodeServerMessage, UpdateSource, WELCOME_TEXT } from "./Protocol.js"

export const DASHBOARD_TOPIC = "dashboard"

/** What the Broadcaster needs from the server: Bun's native pub/sub, nothing per socket. */
export interface TopicPublisher {
  readonly publish: (topic: string, frame: string) => number
  readonly subscriberCount: (topic: string) => number
}

/** When the updater will try upstream next, and why the last attempt failed, if it did. */
export interface UpdaterStatus {
  readonly nextAttemptAt: Option.Option<number>
  readonly lastError: Option.Option<string>
}

const encodeSummary = Schema.encodeSync(DashboardSummary)

/** What travels on the cluster channel: the frame as clients get it, and what a relay must know. */
const ClusterEnvelope = Schema.parseJson(Schema.Union(
  Schema.Struct({ kind: Schema.Literal("update"), source: UpdateSource, snapshot: SummarySnapshot, frame: Schema.String }),
  Schema.Struct({ kind: Schema.Literal("error"), error: Schema.String, nextAttemptAt: Schema.NullOr(Schema.Number), frame: Schema.String })
))
const encodeEnvelope = Schema.encodeSync(ClusterEnvelope)
const decodeEnvelope = Schema.decodeUnknownEither(ClusterEnvelope)

interface Latest {
  readonly snapshot: SummarySnapshot
  /** The last update frame published, re-sent as is to a socket that drained after missing it. */
  readonly frame: Option.Option<string>
  /** The summary in wire form, encoded once per snapshot and reused by every welcome. */
  readonly data: typeof DashboardSummary.Encoded
  readonly fetchedAtMillis: number
}

export class Broadcaster extends Effect.Service<Broadcaster>()("dashcast/Broadcaster", {
  effect: Effect.gen(function*() {
    const config = yield* AppConfig
    const cluster = yield* Cluster
    const history = yield* History
    const freshnessMillis = Duration.toMillis(config.freshness)
    let publisher: Option.Option<TopicPublisher> = Option.none()
    let latest: Option.Option<Latest> = Option.none()
    let status: UpdaterStatus = { nextAttemptAt: Option.none(), lastError: Option.none() }

    const publishFrame = (frame: string): number =>
      Option.match(publisher, { onNone: () => 0, onSome: (p) => p.publish(DASHBOARD_TOPIC, frame) })

    const subscriberCount = (): number =>
      Option.match(publisher, { onNone: () => 0, onSome: (p) => p.subscriberCount(DASHBOARD_TOPIC) })

    const remember = (snapshot: SummarySnapshot, frame: Option.Option<string>) => {
      latest = Option.some({
        snapshot,
        frame,
        data: encodeSummary(snapshot.summary),
        fetchedAtMillis: DateTime.toEpochMillis(snapshot.fetched_at)
      })
    }

    /**
     * Publishes an update on this instance's topic, once: a summary not newer than the latest one
     * (a duplicate from the channel, or one overtaken) is not sent again.
     */
    const deliverUpdate = (snapshot: SummarySnapshot, source: UpdateSource, frame: string) => {
      if (Option.exists(latest, (l) => Option.isSome(l.frame) && l.snapshot.seq >= snapshot.seq)) return
      const started = performance.now()
      remember(snapshot, Option.some(frame))
      // Every instance records what it delivers, so each one can serve the chart's history.
      Effect.runSync(history.append(snapshot))
      // `publish` returns bytes, not sockets: the topic's subscribers are the recipients.
      const recipients = subscriberCount()
      Metrics.frameSent(publishFrame(frame), frame, recipients)
      Effect.runSync(Metrics.broadcast(source, recipients, (performance.now() - started) / 1000))
    }

    const deliverError = (error: string, nextAttemptAt: Option.Option<number>, frame: string) => {
      status = { nextAttemptAt: Option.orElse(nextAttemptAt, () => status.nextAttemptAt), lastError: Option.some(error) }
      Metrics.frameSent(publishFrame(frame), frame, subscriberCount())
    }

    yield* cluster.onMessage((message) => {
      const envelope = decodeEnvelope(message)
      if (envelope._tag === "Left") return
      const m = envelope.right
      if (m.kind === "update") deliverUpdate(m.snapshot, m.source, m.frame)
      else deliverError(m.error, Option.fromNullable(m.nextAttemptAt), m.frame)
    })

    /** Age and staleness of the latest snapshot at `now`, for welcomes and `GET /api/dashboard`. */
    const view = (now: number) =>
      Option.map(latest, (l) => {
        const ageMillis = Math.max(0, now - l.fetchedAtMillis)
        return {
          snapshot: l.snapshot,
          data: l.data,
          ageSeconds: Math.round(ageMillis / 100) / 10,
          stale: ageMillis >= freshnessMillis || l.snapshot.stale_fields.length > 0
        }
      })

    return {
      /** Connects the running server; until then publishing only updates the latest snapshot. */
      attach: (p: TopicPublisher) =>
        Effect.sync(() => {
          publisher = Option.some(p)
        }),
      detach: Effect.sync(() => {
        publisher = Option.none()
      }),
      /** Sets the latest snapshot without telling anyone (a warm start from the cache). */
      seed: (snapshot: SummarySnapshot) =>
        Effect.sync(() => remember(snapshot, Option.none())).pipe(Effect.zipRight(history.append(snapshot))),
      latest: Effect.sync(() => Option.map(latest, (l) => l.snapshot)),
      view: Effect.map(Clock.currentTimeMillis, view),
      status: Effect.sync(() => status),
      setStatus: (next: UpdaterStatus) =>
        Effect.sync(() => {
          status = next
        }),
      /** Publishes a new summary to every subscriber; returns how many sockets it was handed to. */
      publishUpdate: Effect.fn("Broadcaster.publishUpdate")(function*(snapshot: SummarySnapshot, source: UpdateSource) {
        const timestamp = DateTime.formatIso(yield* DateTime.now)
        const frame = updateFrame(snapshot, source, timestamp)
        const relayed = yield* cluster.broadcast(encodeEnvelope({ kind: "update", source, snapshot, frame }))
        if (!relayed) deliverUpdate(snapshot, source, frame)
        yield* Effect.logDebug("update published").pipe(Effect.annotateLogs({ seq: snapshot.seq, source, relayed }))
      }),
      publishError: Effect.fn("Broadcaster.publishError")(function*(error: string, retryAfterSeconds: number) {
        const now = yield* Clock.currentTimeMillis
        const frame = encodeServerMessage({ type: "error", error, timestamp: new Date(now).toISOString(), retry_after: retryAfterSeconds })
        const nextAttemptAt = now + retryAfterSeconds * 1000
        const relayed = yield* cluster.broadcast(encodeEnvelope({ kind: "error", error, nextAttemptAt, frame }))
        if (!relayed) deliverError(error, Option.some(nextAttemptAt), frame)
      }),
      /**
       * The frames a socket gets when it connects or drains, built synchronously on the socket's
       * callback: the welcome when a summary exists, else an error saying when data is expected.
       */
      welcomeFrame: (now: number): string => {
        const current = view(now)
        const timestamp = new Date(now).toISOString()
        if (Option.isNone(current)) {
          const retryAfter = Option.match(status.nextAttemptAt, {
            onNone: () => 1,
            onSome: (at) => Math.max(1, Math.ceil((at - now) / 1000))
          })
          return encodeServerMessage({
            type: "error",
            error: Option.getOrElse(status.lastError, () => "No market data yet: the first fetch is in progress"),
            timestamp,
            retry_after: retryAfter
          })
        }
        const { ageSeconds, data, snapshot, stale } = current.value
        // The summary is already in wire form; this builds the Welcome schema's encoded shape.
        return JSON.stringify({
          type: "welcome",
          data,
          timestamp,
          message: WELCOME_TEXT,
          seq: snapshot.seq,
          age_seconds: ageSeconds,
          stale,
          ...(snapshot.stale_fields.length > 0 ? { stale_fields: snapshot.stale_fields } : {})
        })
      },
      /** The latest summary as an update to one socket (answer to `request_update`, or after a drain). */
      latestUpdateFrame: (now: number, source: UpdateSource): Option.Option<string> =>
        Option.map(latest, (l) => updateFrame(l.snapshot, source, new Date(now).toISOString())),
      /** The frame last published, for a socket that may have missed it. */
      lastPublishedFrame: (): Option.Option<string> => Option.flatMap(latest, (l) => l.frame),
      /** Whether a connecting client should trigger a background refresh (no summary is not stale). */
      isStale: (now: number): boolean => Option.exists(latest, (l) => now - l.fetchedAtMillis >= freshnessMillis),
      subscriberCount
    }
  }),
  dependencies: [AppConfig.Default, History.Default]
}) {}

const updateFrame = (snapshot: SummarySnapshot, source: UpdateSource, timestamp: string): string =>
  encodeServerMessage({
    type: "dashboard_update",
    data: snapshot.summary,
    timestamp,
    source,
    seq: snapshot.seq,
    ...(snapshot.stale_fields.length > 0 ? { stale_fields: snapshot.stale_fields } : {})
  })
