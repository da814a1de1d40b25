/**
 * The HTTP API next to the WebSocket: health, readiness, the current summary and the force update.
 * An Effect `HttpRouter`, mounted on `Bun.serve` by the Server through `HttpApp.toWebHandlerRuntime`.
 */
import { HttpMiddleware, HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { DateTime, Duration, Effect, Option, Redacted, Schema } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"
import { CacheManager } from "../cache/CacheManager.js"
import { AppConfig } from "../Config.js"
import { DashboardSummary } from "../market/DashboardSummary.js"
import * as Metrics from "../metrics/Metrics.js"
import { MetricsExporter } from "../metrics/MetricsExporter.js"
import { Broadcaster } from "../realtime/Broadcaster.js"
import { History } from "../updater/History.js"
import { Updater } from "../updater/Updater.js"

const encodeSummary = Schema.encodeSync(DashboardSummary)

const jsonError = (status: number, error: string, headers: Record<string, string> = {}) =>
  HttpServerResponse.unsafeJson({ error }, { status, headers })

/** Compares two secrets in constant time (hashing first, so lengths leak nothing either). */
const sameSecret = (given: string, expected: string): boolean =>
  timingSafeEqual(createHash("sha256").update(given).digest(), createHash("sha256").update(expected).digest())

export class HttpApi extends Effect.Service<HttpApi>()("dashcast/HttpApi", {
  effect: Effect.gen(function*() {
    const config = yield* AppConfig
    const broadcaster = yield* Broadcaster
    const updater = yield* Updater
    const history = yield* History
    const cache = yield* CacheManager
    const exporter = yield* MetricsExporter
    const metrics = exporter.handler({
      cacheStats: cache.stats,
      summaryAgeSeconds: Effect.map(broadcaster.view, Option.map((v) => v.ageSeconds))
    })

    const dashboard = Effect.gen(function*() {
      const view = yield* broadcaster.view
      if (Option.isNone(view)) {
        const status = yield* broadcaster.status
        return jsonError(503, Option.getOrElse(status.lastError, () => "no market data yet: the first fetch is in progress"), {
          "retry-after": "5"
        })
      }
      const status = yield* broadcaster.status
      const { ageSeconds, snapshot, stale } = view.value
      return HttpServerResponse.unsafeJson({
        data: encodeSummary(snapshot.summary),
        seq: snapshot.seq,
        age_seconds: ageSeconds,
        stale,
        ...(snapshot.stale_fields.length > 0 ? { stale_fields: snapshot.stale_fields } : {}),
        next_update_at: Option.match(status.nextAttemptAt, {
          onNone: () => null,
          onSome: (at) => new Date(at).toISOString()
        })
      }, { headers: { "cache-control": "no-store" } })
    })

    const refresh = Effect.gen(function*() {
      if (Option.isNone(config.adminToken)) return jsonError(404, "not found")
      const request = yield* HttpServerRequest.HttpServerRequest
      const given = /^Bearer\s+(.+)$/i.exec(request.headers["authorization"] ?? "")?.[1] ?? ""
      if (!sameSecret(given, Redacted.value(config.adminToken.value))) {
        return jsonError(401, "missing or wrong bearer token", { "www-authenticate": "Bearer" })
      }
      return yield* updater.forceUpdate().pipe(
        // Published is published: a partial round answers 200 with what went stale and why.
        Effect.map(({ failure, snapshot }) =>
          HttpServerResponse.unsafeJson({
            data: encodeSummary(snapshot.summary),
            seq: snapshot.seq,
            fetched_at: DateTime.formatIso(snapshot.fetched_at),
            ...(snapshot.stale_fields.length > 0 ? { stale_fields: snapshot.stale_fields } : {}),
            ...(Option.isSome(failure) ? { error: `some upstream calls failed: ${failure.value.message}` } : {})
          })
        ),
        Effect.catchTags({
          RefreshTooSoon: (e) => {
            const seconds = Math.max(1, Math.ceil(Duration.toSeconds(e.retryAfter)))
            return Metrics.rateLimit("force_update").pipe(
              Effect.as(jsonError(429, e.message, { "retry-after": String(seconds) }))
            )
          },
          UpstreamError: (e) => Effect.succeed(jsonError(502, `upstream failed: ${e.message}`))
        })
      )
    })

    const app = HttpRouter.empty.pipe(
      HttpRouter.get("/healthz", HttpMiddleware.withLoggerDisabled(Effect.succeed(HttpServerResponse.unsafeJson({ status: "ok" })))),
      HttpRouter.get(
        "/readyz",
        Effect.map(broadcaster.latest, (latest) =>
          Option.isSome(latest)
            ? HttpServerResponse.unsafeJson({ status: "ready" })
            : jsonError(503, "not ready: no market data yet")).pipe(HttpMiddleware.withLoggerDisabled)
      ),
      HttpRouter.get("/api/dashboard", dashboard),
      HttpRouter.get("/api/history", history.handler),
      HttpRouter.post("/api/dashboard/refresh", refresh),
      HttpRouter.get("/metrics", HttpMiddleware.withLoggerDisabled(metrics)),
      Effect.catchTag("RouteNotFound", () => Effect.succeed(jsonError(404, "not found")))
    )
    return { app } as const
  })
}) {}
