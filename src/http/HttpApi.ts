/**
 * The HTTP API next to the WebSocket: health, readiness, the watchlist in a currency, the assets,
 * the chart history and the force update. An Effect `HttpRouter`, mounted on `Bun.serve` by the
 * Server through `HttpApp.toWebHandlerRuntime`.
 */
import { HttpMiddleware, HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { DateTime, Duration, Effect, Option, Redacted } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"
import { CacheManager } from "../cache/CacheManager.js"
import { AppConfig } from "../Config.js"
import { History } from "../history/History.js"
import { type Currency, currencyView, type MarketSnapshot } from "../market/Watchlist.js"
import * as Metrics from "../metrics/Metrics.js"
import { MetricsExporter } from "../metrics/MetricsExporter.js"
import { encodeView } from "../realtime/Protocol.js"
import { MarketState } from "../state/MarketState.js"
import { Updater } from "../updater/Updater.js"

const jsonError = (status: number, error: string, headers: Record<string, string> = {}) =>
  HttpServerResponse.unsafeJson({ error }, { status, headers })

/** Compares two secrets in constant time (hashing first, so lengths leak nothing either). */
const sameSecret = (given: string, expected: string): boolean =>
  timingSafeEqual(createHash("sha256").update(given).digest(), createHash("sha256").update(expected).digest())

export class HttpApi extends Effect.Service<HttpApi>()("dashcast/HttpApi", {
  effect: Effect.gen(function*() {
    const config = yield* AppConfig
    const state = yield* MarketState
    const updater = yield* Updater
    const history = yield* History
    const cache = yield* CacheManager
    const exporter = yield* MetricsExporter
    const metrics = exporter.handler({
      cacheStats: cache.stats,
      summaryAgeSeconds: Effect.map(state.view, Option.map((v) => v.ageSeconds))
    })
    const currencies = new Set(config.currencies)
    const [defaultCurrency] = config.currencies

    /** The `currency` query parameter as given; a repeated one counts by its first value, as on `/ws`. */
    const givenCurrency = Effect.map(HttpServerRequest.ParsedSearchParams, (params) => {
      const given = params["currency"]
      return typeof given === "string" ? given : given?.[0]
    })
    /** The `currency` query parameter: one of `CURRENCIES`, the first by default; else a 400. */
    const currencyParam = Effect.map(givenCurrency, (given) => {
      const currency = given ?? defaultCurrency
      return currencies.has(currency) ? Option.some(currency) : Option.none()
    })
    const unknownCurrency = Effect.map(givenCurrency, (given) =>
      jsonError(400, `unknown currency ${JSON.stringify(given)}; this server has ${config.currencies.join(", ")}`))

    /** One currency's view of a snapshot as a JSON object: the same members as a WebSocket frame. */
    const viewJson = (snapshot: MarketSnapshot, currency: Currency): Record<string, unknown> =>
      JSON.parse(`{${encodeView(currencyView(snapshot, currency), snapshot.seq).members}}`)

    const dashboard = Effect.gen(function*() {
      const currency = yield* currencyParam
      if (Option.isNone(currency)) return yield* unknownCurrency
      const view = yield* state.view
      const status = yield* state.status
      if (Option.isNone(view)) {
        return jsonError(503, Option.getOrElse(status.lastError, () => "no market data yet: the first fetch is in progress"), {
          "retry-after": "5"
        })
      }
      const { ageSeconds, old, snapshot } = view.value
      const members = viewJson(snapshot, currency.value)
      return HttpServerResponse.unsafeJson({
        ...members,
        seq: snapshot.seq,
        age_seconds: ageSeconds,
        stale: old || "stale_paths" in members,
        next_update_at: Option.match(status.nextAttemptAt, {
          onNone: () => null,
          onSome: (at) => new Date(at).toISOString()
        })
      }, { headers: { "cache-control": "no-store" } })
    })

    /** The watchlist and what is known of each asset. */
    const assetList = Effect.gen(function*() {
      const latest = yield* state.latest
      const view = Option.map(latest, (s) => s.view)
      return HttpServerResponse.unsafeJson({
        currencies: config.currencies,
        assets: config.assets.map((id) => {
          const info = Option.flatMap(view, (v) => Option.fromNullable(v.assets.find((a) => a.id === id)))
          const fetched = Option.getOrElse(
            Option.map(view, (v) =>
              config.currencies.flatMap((c) => {
                const quote = v.quotes[c]?.[id]
                return quote === undefined ? [] : [DateTime.toEpochMillis(quote.fetched_at)]
              })),
            () => []
          )
          return {
            id,
            symbol: Option.match(info, { onNone: () => null, onSome: (i) => i.symbol }),
            name: Option.match(info, { onNone: () => null, onSome: (i) => i.name }),
            missing: Option.exists(view, (v) => v.missing.includes(id)),
            last_good_at: fetched.length === 0 ? null : new Date(Math.max(...fetched)).toISOString()
          }
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
        Effect.map(({ problems, snapshot }) =>
          HttpServerResponse.unsafeJson({
            ...viewJson(snapshot, defaultCurrency),
            seq: snapshot.seq,
            fetched_at: DateTime.formatIso(snapshot.fetched_at),
            ...(problems.length > 0 ? { error: `some upstream calls failed: ${problems.map((e) => e.message).join("; ")}` } : {})
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
        Effect.map(state.latest, (latest) =>
          Option.isSome(latest)
            ? HttpServerResponse.unsafeJson({ status: "ready" })
            : jsonError(503, "not ready: no market data yet")).pipe(HttpMiddleware.withLoggerDisabled)
      ),
      HttpRouter.get("/api/dashboard", dashboard),
      HttpRouter.get("/api/assets", assetList),
      HttpRouter.get("/api/history", history.handler),
      HttpRouter.post("/api/dashboard/refresh", refresh),
      HttpRouter.get("/metrics", HttpMiddleware.withLoggerDisabled(metrics)),
      Effect.catchTag("RouteNotFound", () => Effect.succeed(jsonError(404, "not found")))
    )
    return { app } as const
  })
}) {}
