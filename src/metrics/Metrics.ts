/**
 * Every metric dashcast exports at `GET /metrics`, as Effect `Metric` constants in the global registry,
 * with the typed helpers callers use: plain functions for Bun socket callbacks (no fiber per event)
 * and Effects where a fiber already runs. `MetricsExporter` renders them in Prometheus text format.
 */
import { Cause, Clock, Effect, Exit, Metric, MetricBoundaries, MetricLabel, Option } from "effect"
import { type Condition, CONDITIONS } from "../alerts/AlertRule.js"
import type { Endpoint, UpstreamError, UpstreamReason } from "../market/MarketData.js"
import type { UpdateSource } from "../state/MarketState.js"

// ---------------------------------------------------------------------------------------------
// Label values, checked complete against the domain types: a new endpoint, reason or source fails
// to compile here instead of exporting a series nobody pre-registered.

/** Every member of the union `T`, listed literally; leaving one out is a type error. */
const everyValue = <T extends string>() =>
<const L extends ReadonlyArray<T>>(
  ...values: L & ([Exclude<T, L[number]>] extends [never] ? unknown : never)
): ReadonlyArray<T> => values

/** Why a WebSocket closed, from its close code (see `closeReason`). */
export type CloseReason = "normal" | "going_away" | "policy_violation" | "message_too_big" | "error" | "other"
const CLOSE_REASONS = everyValue<CloseReason>()(
  "normal",
  "going_away",
  "policy_violation",
  "message_too_big",
  "error",
  "other"
)

/** How a client is connected: a WebSocket (`/ws`) or a Server-Sent Events stream (`/api/stream`). */
export type Transport = "websocket" | "sse"
const TRANSPORTS = everyValue<Transport>()("websocket", "sse")

export type BroadcastOutcome = "delivered" | "no_subscribers"
const BROADCAST_OUTCOMES = everyValue<BroadcastOutcome>()("delivered", "no_subscribers")

const UPDATE_SOURCES = everyValue<UpdateSource>()("scheduled_update", "force_update", "request_update", "refresh")

/** `partial`: published, but some fields kept their previous value (the schedule still backs off). */
export type UpdateOutcome = "success" | "partial" | "failure"
const UPDATE_OUTCOMES = everyValue<UpdateOutcome>()("success", "partial", "failure")

const ENDPOINTS = everyValue<Endpoint>()("coins_markets", "global", "market_chart", "fear_greed")

export type UpstreamReasonTag = UpstreamReason["_tag"]
const UPSTREAM_REASON_LABELS: Record<UpstreamReasonTag, string> = {
  Timeout: "timeout",
  HttpStatus: "http_status",
  RateLimited: "rate_limited",
  Blocked: "blocked",
  TooLarge: "too_large",
  Decode: "decode",
  Network: "network"
}

/** A refusal because someone asked too often: upstream to us, a client to us, or an admin to us. */
export type RateLimitKind = "upstream_429" | "client_message" | "request_update" | "force_update"
const RATE_LIMIT_KINDS = everyValue<RateLimitKind>()("upstream_429", "client_message", "request_update", "force_update")

export type CacheTier = "l1" | "l2"
const CACHE_TIERS = everyValue<CacheTier>()("l1", "l2")

/** How one webhook attempt ended (`Webhooks.AttemptResult`). */
export type WebhookAttemptOutcome = "delivered" | "http_status" | "timeout" | "network" | "refused"
const WEBHOOK_ATTEMPT_OUTCOMES = everyValue<WebhookAttemptOutcome>()("delivered", "http_status", "timeout", "network", "refused")

/** How a firing's delivery ended: delivered, given up after the last retry, or cancelled with its rule. */
export type WebhookDeliveryOutcome = "delivered" | "gave_up" | "cancelled"
const WEBHOOK_DELIVERY_OUTCOMES = everyValue<WebhookDeliveryOutcome>()("delivered", "gave_up", "cancelled")

const label = MetricLabel.make

/** One label set per known value, built once: the socket callbacks run per frame. */
const labelsFor = <K extends string>(key: string, values: ReadonlyArray<K>) => {
  const byValue = new Map(values.map((value) => [value, [label(key, value)]] as const))
  return (value: K): ReadonlyArray<MetricLabel.MetricLabel> => byValue.get(value) ?? [label(key, value)]
}

// ---------------------------------------------------------------------------------------------
// The metrics. Counters are `incremental` so that the OpenTelemetry bridge exports them as
// Prometheus counters (a non-incremental Effect counter becomes an up-down counter, a gauge).

export const connectionsActive = Metric.gauge("dashcast_connections_active", {
  description: "Client connections open now, by transport (websocket, sse)"
})

export const connectionsOpened = Metric.counter("dashcast_connections_opened_total", {
  description: "Client connections accepted since start, by transport",
  incremental: true
})

export const connectionsClosed = Metric.counter("dashcast_connections_closed_total", {
  description: "Client connections closed since start, by transport and reason (a WebSocket's from its close code)",
  incremental: true
})

export const connectionDuration = Metric.histogram(
  "dashcast_connection_duration_seconds",
  MetricBoundaries.fromIterable([1, 10, 60, 300, 900, 1800, 3600, 7200, 21600, 86400]),
  "Lifetime of closed client connections in seconds, by transport"
)

export const broadcasts = Metric.counter("dashcast_broadcasts_total", {
  description: "Summary updates published on the dashboard topic, by source and outcome",
  incremental: true
})

export const broadcastRecipients = Metric.histogram(
  "dashcast_broadcast_recipients",
  MetricBoundaries.fromIterable([0, 1, 5, 10, 50, 100, 500, 1000, 5000, 10000, 50000]),
  "Sockets subscribed to the dashboard topic when an update was published"
)

export const publishDuration = Metric.histogram(
  "dashcast_broadcast_publish_duration_seconds",
  MetricBoundaries.fromIterable([0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5]),
  "Time to encode and publish one update to every local subscriber, in seconds"
)

export const pingRoundTrip = Metric.histogram(
  "dashcast_ping_rtt_seconds",
  MetricBoundaries.fromIterable([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]),
  "WebSocket ping to pong round-trip time in seconds"
)

export const updates = Metric.counter("dashcast_updates_total", {
  description: "Upstream update attempts, by outcome (partial: some fields kept their previous value)",
  incremental: true
})

export const upstreamFetchDuration = Metric.histogram(
  "dashcast_upstream_fetch_duration_seconds",
  MetricBoundaries.fromIterable([0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]),
  "Duration of one upstream call (success or failure) in seconds, by endpoint"
)

export const upstreamErrors = Metric.counter("dashcast_upstream_errors_total", {
  description: "Failed upstream calls, by endpoint and reason",
  incremental: true
})

export const rateLimited = Metric.counter("dashcast_rate_limited_total", {
  description: "Rate-limit refusals, by kind: upstream 429/418 received, client frames and request_update refused, force updates answered 429",
  incremental: true
})

export const cacheHits = Metric.counter("dashcast_cache_hits_total", {
  description: "Cache lookups answered by the tier",
  incremental: true
})

export const cacheMisses = Metric.counter("dashcast_cache_misses_total", {
  description: "Cache lookups the tier could not answer",
  incremental: true
})

export const cacheErrors = Metric.counter("dashcast_cache_errors_total", {
  description: "Cache values that did not decode and, for L2, store operations that failed",
  incremental: true
})

export const cacheL2Degraded = Metric.gauge("dashcast_cache_l2_degraded", {
  description: "1 while the L2 store is failing and the cache runs on L1 alone, else 0"
})

export const consecutiveFailureCount = Metric.gauge("dashcast_consecutive_failures", {
  description: "Consecutive failed update attempts; 0 after a success"
})

export const backoffs = Metric.counter("dashcast_backoffs_total", {
  description: "Times the schedule entered backoff (failures went past MAX_CONSECUTIVE_FAILURES)",
  incremental: true
})

export const summaryAge = Metric.gauge("dashcast_summary_age_seconds", {
  description: "Age of the current summary in seconds at scrape time; NaN before the first summary"
})

export const websocketSentBytes = Metric.counter("dashcast_websocket_sent_bytes_total", {
  description: "Bytes of WebSocket frames handed to the kernel (direct sends and topic publishes)",
  incremental: true
})

export const alertsFired = Metric.counter("dashcast_alerts_fired_total", {
  description: "Alert rules that fired (a webhook and an alert frame each), by condition",
  incremental: true
})

export const webhookAttempts = Metric.counter("dashcast_webhook_attempts_total", {
  description: "Alert webhook attempts, by outcome: delivered (2xx), http_status (another status), timeout, network, refused (the target resolves to a private address)",
  incremental: true
})

export const webhookDeliveries = Metric.counter("dashcast_webhook_deliveries_total", {
  description: "Alert firings whose delivery ended, by outcome: delivered, gave_up (every retry failed), cancelled (the rule was deleted)",
  incremental: true
})

export const sseSentBytes = Metric.counter("dashcast_sse_sent_bytes_total", {
  description: "Bytes of Server-Sent Events handed to event streams (events and heartbeats)",
  incremental: true
})

export const sseSkippedFrames = Metric.counter("dashcast_sse_frames_skipped_total", {
  description: "Frames an event stream never got because it was still sending earlier ones and a newer frame of the same type replaced them (latest wins)",
  incremental: true
})

// ---------------------------------------------------------------------------------------------
// Label sets.

const noLabels: ReadonlyArray<MetricLabel.MetricLabel> = []
const transportLabels = labelsFor("transport", TRANSPORTS)
/** `transport` and `reason` of a closed connection, one array per combination, built once. */
const closeLabels = (() => {
  const byKey = new Map(
    TRANSPORTS.flatMap((transport) => CLOSE_REASONS.map((reason) => [`${transport}:${reason}`, [label("transport", transport), label("reason", reason)]] as const))
  )
  return (transport: Transport, reason: CloseReason): ReadonlyArray<MetricLabel.MetricLabel> =>
    byKey.get(`${transport}:${reason}`) ?? [label("transport", transport), label("reason", reason)]
})()
const kindLabels = labelsFor("kind", RATE_LIMIT_KINDS)
const outcomeLabels = labelsFor("outcome", UPDATE_OUTCOMES)
const endpointLabels = labelsFor("endpoint", ENDPOINTS)
const conditionLabels = labelsFor("condition", CONDITIONS)
const attemptLabels = labelsFor("outcome", WEBHOOK_ATTEMPT_OUTCOMES)
const deliveryLabels = labelsFor("outcome", WEBHOOK_DELIVERY_OUTCOMES)
/** The `tier` label of the cache counters, which `MetricsExporter` fills at scrape time. */
export const tierLabels = labelsFor("tier", CACHE_TIERS)
const broadcastLabels = (source: UpdateSource, outcome: BroadcastOutcome) => [label("source", source), label("outcome", outcome)]
const errorLabels = (endpoint: Endpoint, reasonLabel: string) => [label("endpoint", endpoint), label("reason", reasonLabel)]

/**
 * Makes every family and every known label combination visible from the first scrape: the
 * registry only knows a series once it has been touched. Reading a value registers it unchanged.
 */
export const preregister = (): void => {
  const unlabelled = [
    broadcastRecipients,
    publishDuration,
    pingRoundTrip,
    consecutiveFailureCount,
    backoffs,
    summaryAge,
    websocketSentBytes,
    sseSentBytes,
    sseSkippedFrames,
    cacheL2Degraded
  ]
  for (const metric of unlabelled) metric.unsafeValue(noLabels)
  for (const transport of TRANSPORTS) {
    for (const metric of [connectionsActive, connectionsOpened, connectionDuration]) metric.unsafeValue(transportLabels(transport))
    for (const reason of CLOSE_REASONS) connectionsClosed.unsafeValue(closeLabels(transport, reason))
  }
  for (const source of UPDATE_SOURCES) {
    for (const outcome of BROADCAST_OUTCOMES) broadcasts.unsafeValue(broadcastLabels(source, outcome))
  }
  for (const outcome of UPDATE_OUTCOMES) updates.unsafeValue(outcomeLabels(outcome))
  for (const endpoint of ENDPOINTS) {
    upstreamFetchDuration.unsafeValue(endpointLabels(endpoint))
    for (const reason of Object.values(UPSTREAM_REASON_LABELS)) upstreamErrors.unsafeValue(errorLabels(endpoint, reason))
  }
  for (const kind of RATE_LIMIT_KINDS) rateLimited.unsafeValue(kindLabels(kind))
  for (const tier of CACHE_TIERS) {
    for (const metric of [cacheHits, cacheMisses, cacheErrors]) metric.unsafeValue(tierLabels(tier))
  }
  for (const condition of CONDITIONS) alertsFired.unsafeValue(conditionLabels(condition))
  for (const outcome of WEBHOOK_ATTEMPT_OUTCOMES) webhookAttempts.unsafeValue(attemptLabels(outcome))
  for (const outcome of WEBHOOK_DELIVERY_OUTCOMES) webhookDeliveries.unsafeValue(deliveryLabels(outcome))
}

// ---------------------------------------------------------------------------------------------
// Synchronous helpers, for Bun's socket callbacks.

/** The `reason` label of a WebSocket close code (RFC 6455 section 7.4.1). */
export const closeReason = (code: number): CloseReason => {
  switch (code) {
    case 1000:
    case 1005: // closed without a status code: a clean close all the same
      return "normal"
    case 1001:
      return "going_away"
    case 1008:
      return "policy_violation"
    case 1009:
      return "message_too_big"
    case 1002: // protocol error
    case 1003: // unsupported data
    case 1006: // abnormal: no close frame (dropped peer, idle timeout)
    case 1007: // invalid payload
    case 1011: // server error
    case 1015: // TLS handshake
      return "error"
    default:
      return "other"
  }
}

/** A client connection was accepted: a socket (`websocket.open`, the default) or an event stream. */
export const connectionOpened = (transport: Transport = "websocket"): void => {
  connectionsOpened.unsafeUpdate(1, transportLabels(transport))
  connectionsActive.unsafeModify(1, transportLabels(transport))
}

/** A socket closed (`websocket.close`) with `code` after `durationSeconds`. */
export const connectionClosed = (code: number, durationSeconds: number): void =>
  transportClosed("websocket", closeReason(code), durationSeconds)

/**
 * A connection of `transport` closed for `reason` after `durationSeconds`. An event stream has no
 * close code: the client leaving is `normal`, a server shutdown `going_away`.
 */
export const transportClosed = (transport: Transport, reason: CloseReason, durationSeconds: number): void => {
  const labels = transportLabels(transport)
  connectionsClosed.unsafeUpdate(1, closeLabels(transport, reason))
  connectionsActive.unsafeModify(-1, labels)
  connectionDuration.unsafeUpdate(durationSeconds, labels)
}

/** A pong answered a server ping sent `seconds` ago. */
export const pingRtt = (seconds: number): void => pingRoundTrip.unsafeUpdate(seconds, noLabels)

/** `n` bytes went out on WebSocket(s); negative and zero results of `send`/`publish` are ignored. */
export const bytesSent = (n: number): void => {
  if (n > 0) websocketSentBytes.unsafeUpdate(n, noLabels)
}

/**
 * A text frame went to `copies` sockets, given Bun's send status (`ws.sendText`, `server.publish`):
 * 0 = dropped, -1 = queued behind backpressure (still sent later), else bytes written. Counts the
 * frame's UTF-8 size per copy unless it was dropped.
 */
export const frameSent = (status: number, frame: string, copies = 1): void => {
  if (status !== 0 && copies > 0) bytesSent(Buffer.byteLength(frame, "utf8") * copies)
}

/** `bytes` of events went to `copies` event streams. */
export const sseBytesSent = (bytes: number, copies = 1): void => {
  if (bytes > 0 && copies > 0) sseSentBytes.unsafeUpdate(bytes * copies, noLabels)
}

/** An event stream missed a frame: a newer one of its type replaced it while the stream was blocked. */
export const sseFrameSkipped = (): void => sseSkippedFrames.unsafeUpdate(1, noLabels)

/** A client frame or `request_update` was refused by its token bucket. */
export const messageRateLimited = (kind: "client_message" | "request_update"): void =>
  rateLimited.unsafeUpdate(1, kindLabels(kind))

// ---------------------------------------------------------------------------------------------
// Effect helpers, for code that already runs in a fiber. They update the same series as the sync
// helpers (explicit labels only, no fiber `tagMetrics`), so every series is one we pre-registered.

/** An update was published to `recipients` local sockets in `seconds`. */
export const broadcast = (source: UpdateSource, recipients: number, seconds: number): Effect.Effect<void> =>
  Effect.sync(() => {
    broadcasts.unsafeUpdate(1, broadcastLabels(source, recipients > 0 ? "delivered" : "no_subscribers"))
    broadcastRecipients.unsafeUpdate(recipients, noLabels)
    publishDuration.unsafeUpdate(seconds, noLabels)
  })

/** The outcome of one upstream update (any source). */
export const updateOutcome = (outcome: UpdateOutcome): Effect.Effect<void> =>
  Effect.sync(() => updates.unsafeUpdate(1, outcomeLabels(outcome)))

/** One upstream call to `endpoint` took `seconds`. */
export const upstreamFetch = (endpoint: Endpoint, seconds: number): Effect.Effect<void> =>
  Effect.sync(() => upstreamFetchDuration.unsafeUpdate(seconds, endpointLabels(endpoint)))

/** One upstream call failed; a `RateLimited` reason also counts as an `upstream_429` refusal. */
export const upstreamError = (endpoint: Endpoint, reason: UpstreamReasonTag): Effect.Effect<void> =>
  Effect.sync(() => {
    upstreamErrors.unsafeUpdate(1, errorLabels(endpoint, UPSTREAM_REASON_LABELS[reason]))
    if (reason === "RateLimited") rateLimited.unsafeUpdate(1, kindLabels("upstream_429"))
  })

/**
 * Times one upstream call and counts its failure, whatever the exit; measured with `Clock`, so a
 * `TestClock` drives it in tests. Apply it inside any coalescing, so a shared call counts once.
 */
export const trackUpstream = (endpoint: Endpoint) =>
<A, R>(self: Effect.Effect<A, UpstreamError, R>): Effect.Effect<A, UpstreamError, R> =>
  Effect.flatMap(Clock.currentTimeNanos, (start) =>
    Effect.onExit(self, (exit) =>
      Effect.flatMap(Clock.currentTimeNanos, (end) =>
        Effect.zipRight(
          upstreamFetch(endpoint, Number(end - start) / 1e9),
          Exit.isFailure(exit)
            ? Option.match(Cause.failureOption(exit.cause), {
              onNone: () => Effect.void,
              onSome: (error) => upstreamError(error.endpoint, error.reason._tag)
            })
            : Effect.void
        ))))

/** A refusal from a fiber (`force_update` answered 429). */
export const rateLimit = (kind: RateLimitKind): Effect.Effect<void> =>
  Effect.sync(() => rateLimited.unsafeUpdate(1, kindLabels(kind)))

/** Consecutive failures after the attempt that just ended. */
export const consecutiveFailures = (n: number): Effect.Effect<void> =>
  Effect.sync(() => consecutiveFailureCount.unsafeUpdate(n, noLabels))

/** The schedule just went past `MAX_CONSECUTIVE_FAILURES` into backoff. */
export const backoffEntered: Effect.Effect<void> = Effect.sync(() => backoffs.unsafeUpdate(1, noLabels))

/** An alert rule fired. */
export const alertFired = (condition: Condition): Effect.Effect<void> =>
  Effect.sync(() => alertsFired.unsafeUpdate(1, conditionLabels(condition)))

/** One webhook attempt ended. */
export const webhookAttempt = (outcome: WebhookAttemptOutcome): Effect.Effect<void> =>
  Effect.sync(() => webhookAttempts.unsafeUpdate(1, attemptLabels(outcome)))

/** A firing's delivery ended. */
export const webhookDelivery = (outcome: WebhookDeliveryOutcome): Effect.Effect<void> =>
  Effect.sync(() => webhookDeliveries.unsafeUpdate(1, deliveryLabels(outcome)))
