/**
 * The HTTP API's implementation: the handlers of `DashcastApi`'s endpoints over the market state
 * and the updater (the alerts group's are in `AlertHandlers.ts`), the admin token check, `GET /api/openapi.json`, and `GET /metrics` beside them.
 * `ApiHandlers.app` is the one Effect `HttpApp` the Server mounts on `Bun.serve`.
 */
import {
  HttpApiBuilder,
  HttpApp,
  HttpMiddleware,
  type HttpRouter,
  HttpServer,
  HttpServerError,
  HttpServerRequest,
  HttpServerResponse
} from "@effect/platform"
import { DateTime, Duration, Effect, Layer, Option, Redacted, type Schema } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"
import { CacheManager } from "../cache/CacheManager.js"
import { AppConfig } from "../Config.js"
import { History } from "../history/History.js"
import { HISTORY_RANGES } from "../history/HistoryPoint.js"
import type { HistoryStoreError } from "../history/HistoryStore.js"
import { currencyView, type MarketSnapshot } from "../market/Watchlist.js"
import * as Metrics from "../metrics/Metrics.js"
import { MetricsExporter } from "../metrics/MetricsExporter.js"
import { encodeViewMembers } from "../realtime/Protocol.js"
import { MarketState } from "../state/MarketState.js"
import { Updater } from "../updater/Updater.js"
import { AlertsLive } from "./AlertHandlers.js"
import {
  AdminAuth,
  BadRequest,
  DashboardResponse,
  DashcastApi,
  NotFound,
  RefreshResponse,
  TooManyRequests,
  Unauthorized,
  Unavailable,
  UpstreamFailed
} from "./DashcastApi.js"

/** Compares two secrets in constant time (hashing first, so lengths leak nothing either). */
const sameSecret = (given: string, expected: string): boolean =>
  timingSafeEqual(createHash("sha256").update(given).digest(), createHash("sha256").update(expected).digest())

/** Sets a header on the response this request ends with, error responses included. */
const withResponseHeader = (name: string, value: string) =>
  HttpApp.appendPreResponseHandler((_request, response) => Effect.succeed(HttpServerResponse.setHeader(response, name, value)))

/** The members of one currency's frames, already encoded as the frames carry them (`encodeViewMembers`). */
const viewOf = (snapshot: MarketSnapshot, currency: string) => encodeViewMembers(currencyView(snapshot, currency))

/**
 * The answer of an endpoint whose body is built in its encoded form: typed by the endpoint's
 * declared Schema, not run through it again (the view's 50 assets were checked when they were made).
 * test/http/OpenApi.test.ts checks real answers against the declared Schemas.
 */
const encodedAnswer = <S extends Schema.Schema.Any>(_schema: S, body: Schema.Schema.Encoded<S>) => HttpServerResponse.unsafeJson(body)

const AdminAuthLive = Layer.effect(
  AdminAuth,
  Effect.gen(function*() {
    const config = yield* AppConfig
    return {
      // The platform takes whatever follows 7 characters; the scheme is checked here as well.
      adminToken: () =>
        Effect.gen(function*() {
          if (Option.isNone(config.adminToken)) return yield* new NotFound({ error: "not found" })
          const request = yield* HttpServerRequest.HttpServerRequest
          const given = /^Bearer\s+(.+)$/i.exec(request.headers["authorization"] ?? "")?.[1] ?? ""
          if (!sameSecret(given, Redacted.value(config.adminToken.value))) {
            yield* withResponseHeader("www-authenticate", "Bearer")
            return yield* new Unauthorized({ error: "missing or wrong bearer token" })
          }
        })
    }
  })
)

const HealthLive = HttpApiBuilder.group(DashcastApi, "health", (handlers) =>
  Effect.gen(function*() {
    const state = yield* MarketState
    return handlers
      .handle("healthz", () => HttpMiddleware.withLoggerDisabled(Effect.succeed({ status: "ok" as const })))
      .handle("readyz", () =>
        HttpMiddleware.withLoggerDisabled(
          Effect.flatMap(state.latest, (latest) =>
            Option.isSome(latest)
              ? Effect.succeed({ status: "ready" as const })
              : Effect.fail(new Unavailable({ error: "not ready: no market data yet" })))
        ))
  }))

const MarketLive = HttpApiBuilder.group(DashcastApi, "market", (handlers) =>
  Effect.gen(function*() {
    const config = yield* AppConfig
    const state = yield* MarketState
    const history = yield* History
    const currencies = new Set(config.currencies)
    const assets = new Set(config.assets)
    const [defaultCurrency] = config.currencies
    const [defaultAsset] = config.assets
    const noStore = withResponseHeader("cache-control", "no-store")

    const checkCurrency = (given: string | undefined) => {
      const currency = given ?? defaultCurrency
      return currencies.has(currency)
        ? Effect.succeed(currency)
        : Effect.fail(new BadRequest({ error: `unknown currency ${JSON.stringify(currency)}; this server has ${config.currencies.join(", ")}` }))
    }
    const checkAsset = (given: string | undefined) => {
      const asset = given ?? defaultAsset
      return assets.has(asset)
        ? Effect.succeed(asset)
        : Effect.fail(new BadRequest({ error: `unknown asset ${JSON.stringify(asset)}; this server watches ${config.assets.join(", ")}` }))
    }
    const checkRange = (given: string | undefined) => {
      const range = HISTORY_RANGES.find((r) => r === (given ?? "24h"))
      return range !== undefined
        ? Effect.succeed(range)
        : Effect.fail(new BadRequest({ error: `unknown range ${JSON.stringify(given)}; one of ${HISTORY_RANGES.join(", ")}` }))
    }
    /** The history store cannot be reached: the client may try again soon. */
    const historyUnavailable = (error: HistoryStoreError) =>
      Effect.zipRight(
        withResponseHeader("retry-after", "5"),
        Effect.fail(new Unavailable({ error: `price history unavailable: ${error.message}`, retry_after: 5 }))
      )

    return handlers
      .handleRaw("dashboard", ({ urlParams }) =>
        Effect.gen(function*() {
          const currency = yield* checkCurrency(urlParams.currency)
          const view = yield* state.view
          const status = yield* state.status
          if (Option.isNone(view)) {
            yield* withResponseHeader("retry-after", "5")
            return yield* new Unavailable({
              error: Option.getOrElse(status.lastError, () => "no market data yet: the first fetch is in progress"),
              retry_after: 5
            })
          }
          yield* noStore
          const { ageSeconds, old, snapshot } = view.value
          const members = viewOf(snapshot, currency)
          return encodedAnswer(DashboardResponse, {
            ...members,
            seq: snapshot.seq,
            age_seconds: ageSeconds,
            stale: old || members.stale_paths !== undefined,
            next_update_at: Option.match(status.nextAttemptAt, { onNone: () => null, onSome: (at) => new Date(at).toISOString() })
          })
        }))
      .handle("assets", () =>
        Effect.gen(function*() {
          yield* noStore
          const view = Option.map(yield* state.latest, (s) => s.view)
          return {
            currencies: config.currencies,
            assets: config.assets.map((id) => {
              const info = Option.flatMap(view, (v) => Option.fromNullable(v.assets.find((a) => a.id === id)))
              const fetched = Option.match(view, {
                onNone: () => [],
                onSome: (v) => config.currencies.flatMap((c) => Option.toArray(Option.fromNullable(v.quotes[c]?.[id]?.fetched_at)))
              })
              return {
                id,
                symbol: Option.match(info, { onNone: () => null, onSome: (i) => i.symbol }),
                name: Option.match(info, { onNone: () => null, onSome: (i) => i.name }),
                missing: Option.exists(view, (v) => v.missing.includes(id)),
                last_good_at: fetched.length === 0 ? null : fetched.reduce(DateTime.max)
              }
            })
          }
        }))
      .handle("history", ({ urlParams }) =>
        Effect.gen(function*() {
          const asset = yield* checkAsset(urlParams.asset)
          const currency = yield* checkCurrency(urlParams.currency)
          const range = yield* checkRange(urlParams.range)
          const points = yield* history.series(asset, currency, range).pipe(Effect.catchTag("HistoryStoreError", historyUnavailable))
          yield* noStore
          return { asset, currency, range, points }
        }))
      .handle("sparklines", ({ urlParams }) =>
        Effect.gen(function*() {
          const currency = yield* checkCurrency(urlParams.currency)
          const series = yield* history.sparklines(config.assets, currency).pipe(Effect.catchTag("HistoryStoreError", historyUnavailable))
          yield* noStore
          return { currency, range: "24h" as const, series }
        }))
  }))

const AdminLive = HttpApiBuilder.group(DashcastApi, "admin", (handlers) =>
  Effect.gen(function*() {
    const updater = yield* Updater
    const config = yield* AppConfig
    const [defaultCurrency] = config.currencies
    return handlers.handleRaw("refresh", () =>
      updater.forceUpdate().pipe(
        // Published is published: a partial round answers 200 with what went stale and why.
        Effect.map(({ problems, snapshot }) =>
          encodedAnswer(RefreshResponse, {
            ...viewOf(snapshot, defaultCurrency),
            seq: snapshot.seq,
            fetched_at: DateTime.formatIso(snapshot.fetched_at),
            ...(problems.length > 0 ? { error: `some upstream calls failed: ${problems.map((e) => e.message).join("; ")}` } : {})
          })
        ),
        Effect.catchTags({
          RefreshTooSoon: (e) => {
            const seconds = Math.max(1, Math.ceil(Duration.toSeconds(e.retryAfter)))
            return Metrics.rateLimit("force_update").pipe(
              Effect.zipRight(withResponseHeader("retry-after", String(seconds))),
              Effect.zipRight(Effect.fail(new TooManyRequests({ error: e.message, retry_after: seconds })))
            )
          },
          UpstreamError: (e) => Effect.fail(new UpstreamFailed({ error: `upstream failed: ${e.message}` }))
        })
      ))
  })).pipe(Layer.provide(AdminAuthLive))

export class ApiHandlers extends Effect.Service<ApiHandlers>()("dashcast/ApiHandlers", {
  scoped: Effect.gen(function*() {
    const state = yield* MarketState
    const cache = yield* CacheManager
    const exporter = yield* MetricsExporter
    const metrics = exporter.handler({
      cacheStats: cache.stats,
      summaryAgeSeconds: Effect.map(state.view, Option.map((v) => v.ageSeconds))
    })
    const api = HttpApiBuilder.api(DashcastApi).pipe(
      Layer.provide([HealthLive, MarketLive, AdminLive, AlertsLive.pipe(Layer.provide(AdminAuthLive))])
    )
    // Beside the declared API: the Prometheus text (not JSON, not for clients) and the API's own description.
    const extras = Layer.mergeAll(
      HttpApiBuilder.Router.use((router) => router.get("/metrics", HttpMiddleware.withLoggerDisabled(metrics))),
      HttpApiBuilder.middlewareOpenApi({ path: "/api/openapi.json" })
    )
    const context = yield* Layer.build(
      extras.pipe(
        Layer.provideMerge(api),
        Layer.provideMerge(Layer.mergeAll(HttpApiBuilder.Router.Live, HttpApiBuilder.Middleware.layer, HttpServer.layerContext))
      )
    )
    // The router fails with RouteNotFound for a path it does not have (its type does not say so).
    const app = (yield* HttpApiBuilder.httpApp.pipe(Effect.provide(context))) as HttpApp.Default<
      HttpServerError.RouteNotFound,
      HttpRouter.HttpRouter.DefaultServices
    >
    return {
      /** Every HTTP request but `/ws` and the page: the declared API, `/metrics`, `/api/openapi.json`. */
      app: app.pipe(
        Effect.catchTag("RouteNotFound", () => HttpServerResponse.json({ _tag: "NotFound", error: "not found" }, { status: 404 })),
        // A JSON body that does not parse is a defect of the platform's payload decoding (`orDie`),
        // which it answers with an empty 400: this one defect is answered in JSON, like every 400.
        Effect.catchAllDefect((defect) =>
          HttpServerError.isServerError(defect) && defect._tag === "RequestError" && defect.reason === "Decode"
            ? HttpServerResponse.json({ _tag: "BadRequest", error: "the request body is not valid JSON" }, { status: 400 })
            : Effect.die(defect)
        ),
        Effect.provide(context)
      )
    } as const
  }),
  dependencies: []
}) {}
