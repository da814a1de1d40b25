/**
 * The HTTP API, declared (docs/ARCHITECTURE.md, "HTTP"): every endpoint with its request and
 * response Schemas and its errors with their HTTP status. The server implements it
 * (`ApiHandlers.ts`), `GET /api/openapi.json` describes it, and the client SDK calls it through
 * `HttpApiClient` with these same declarations. A leaf module (Schemas only), so the browser
 * bundle can import it.
 */
import { HttpApi, HttpApiEndpoint, HttpApiGroup, HttpApiMiddleware, HttpApiSchema, HttpApiSecurity, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { Condition, DeliveryAttempt } from "../alerts/AlertRule.js"
import { HISTORY_RANGES, HistoryResponse, SparklinesResponse } from "../history/HistoryPoint.js"
import { ViewFields } from "../realtime/Protocol.js"

// ---------------------------------------------------------------------------------------------
// Errors: one JSON body each, `{"_tag":…,"error":"…"}`, with their status.

export class BadRequest extends Schema.TaggedError<BadRequest>()("BadRequest", {
  error: Schema.String,
  /** The request member at fault (`threshold`, `webhook_url`, …), when it is one. */
  field: Schema.optional(Schema.String)
}, HttpApiSchema.annotations({
  status: 400,
  description: "A parameter the server does not know, such as a currency outside CURRENCIES, or a value it cannot use (named by `field`)"
})) {}

export class Unauthorized extends Schema.TaggedError<Unauthorized>()("Unauthorized", { error: Schema.String }, HttpApiSchema.annotations({
  status: 401,
  description: "No bearer token, or not ADMIN_TOKEN"
})) {}

export class NotFound extends Schema.TaggedError<NotFound>()("NotFound", { error: Schema.String }, HttpApiSchema.annotations({
  status: 404,
  description: "Not found; for the admin endpoints: no ADMIN_TOKEN is configured, so they do not exist"
})) {}

export class TooManyRequests extends Schema.TaggedError<TooManyRequests>()("TooManyRequests", {
  error: Schema.String,
  /** Seconds, as the `Retry-After` header says. */
  retry_after: Schema.Int.pipe(Schema.positive())
}, HttpApiSchema.annotations({
  status: 429,
  description: "Within MIN_FETCH_GAP of the last upstream call, or while the provider's own Retry-After holds; see Retry-After"
})) {}

export class UpstreamFailed extends Schema.TaggedError<UpstreamFailed>()("UpstreamFailed", { error: Schema.String }, HttpApiSchema.annotations({
  status: 502,
  description: "Every upstream call of the round failed: nothing was published"
})) {}

export class Unavailable extends Schema.TaggedError<Unavailable>()("Unavailable", {
  error: Schema.String,
  retry_after: Schema.optional(Schema.Int.pipe(Schema.positive()))
}, HttpApiSchema.annotations({
  status: 503,
  description: "No market data yet (the first round is in progress or failing); for the history: its store (L2) cannot be reached"
})) {}

export class StoreUnavailable extends Schema.TaggedError<StoreUnavailable>()("StoreUnavailable", { error: Schema.String }, HttpApiSchema.annotations({
  status: 503,
  description: "The alert store (the L2: SQLite file or Redis) did not answer; nothing was changed"
})) {}

// ---------------------------------------------------------------------------------------------
// Bodies

/** A query parameter given once; repeated, the first counts (as `?currency=` on `/ws`). */
const FirstParam = Schema.transform(Schema.Union(Schema.String, Schema.NonEmptyArray(Schema.String)), Schema.String, {
  strict: true,
  decode: (given) => (typeof given === "string" ? given : given[0]),
  encode: (value) => value
})

/** `?currency=`: one of the server's CURRENCIES. */
const CurrencyParam = FirstParam.annotations({ description: "One of the server's CURRENCIES; the first by default", examples: ["usd"] })

/** `?asset=`: one of the server's ASSETS. Checked by the handler, so an unknown one is a `BadRequest` like a currency. */
const AssetParam = FirstParam.annotations({ description: "One of the server's ASSETS (a CoinGecko coin id); the first by default", examples: ["ethereum"] })

/** `?range=`: checked by the handler, so an unknown one is a `BadRequest` naming the ranges there are. */
const RangeParam = FirstParam.annotations({ description: `One of ${HISTORY_RANGES.join(", ")}; 24h by default`, examples: ["7d"] })

export const DashboardResponse = Schema.Struct({
  ...ViewFields,
  seq: Schema.Int.pipe(Schema.positive()),
  age_seconds: Schema.Number.pipe(Schema.nonNegative()),
  /** Older than FRESHNESS, or some values of this currency kept an old value. */
  stale: Schema.Boolean,
  /** When the updater tries upstream next (ISO-8601), if it knows. */
  next_update_at: Schema.NullOr(Schema.String)
}).annotations({ identifier: "Dashboard" })
export type DashboardResponse = typeof DashboardResponse.Type

export const RefreshResponse = Schema.Struct({
  ...ViewFields,
  seq: Schema.Int.pipe(Schema.positive()),
  fetched_at: Schema.DateTimeUtc,
  /** Set when some calls failed: what failed; their values are named in `stale_paths`. */
  error: Schema.optional(Schema.String)
}).annotations({ identifier: "Refresh" })
export type RefreshResponse = typeof RefreshResponse.Type

export const AssetStatus = Schema.Struct({
  id: Schema.String,
  symbol: Schema.NullOr(Schema.String),
  name: Schema.NullOr(Schema.String),
  /** The provider does not know this id: it is never quoted. */
  missing: Schema.Boolean,
  /** When a fresh price of it last arrived, in any currency. */
  last_good_at: Schema.NullOr(Schema.DateTimeUtc)
}).annotations({ identifier: "AssetStatus" })

export const AssetsResponse = Schema.Struct({
  currencies: Schema.Array(Schema.String),
  assets: Schema.Array(AssetStatus)
}).annotations({ identifier: "Assets" })
export type AssetsResponse = typeof AssetsResponse.Type

/** A new alert rule (docs/ARCHITECTURE.md, "Alerts"). */
export const AlertRequest = Schema.Struct({
  /** One of ASSETS; not needed by the Fear & Greed conditions. */
  asset: Schema.optional(Schema.String),
  /** One of CURRENCIES: the currency of the price, and the topic its firings are published on. */
  currency: Schema.String,
  condition: Condition,
  /** A finite number; 0 to 100 for RSI and Fear & Greed. */
  threshold: Schema.Number,
  /** An http(s) URL that resolves to public addresses (unless WEBHOOK_ALLOW_PRIVATE=true). */
  webhook_url: Schema.String,
  /** The least time between two firings, such as "15 minutes"; none by default. */
  cooldown: Schema.optional(Schema.String)
}).annotations({ identifier: "AlertRequest" })

const AlertFields = {
  id: Schema.String,
  asset: Schema.NullOr(Schema.String),
  currency: Schema.String,
  condition: Condition,
  threshold: Schema.Number,
  webhook_url: Schema.String,
  cooldown: Schema.String,
  created_at: Schema.String,
  /** The next time the condition holds, the rule fires (it is new, or its condition was false since its last firing). */
  armed: Schema.Boolean,
  last_fired_at: Schema.NullOr(Schema.String)
}

/** A rule as every GET shows it: never with its secret. */
export const AlertResponse = Schema.Struct(AlertFields).annotations({ identifier: "Alert" })
export type AlertResponse = typeof AlertResponse.Type

/** The answer to a new rule: the only time its signing secret is shown. */
export const AlertCreatedResponse = Schema.Struct({
  ...AlertFields,
  /** `whsec_…`: the Standard Webhooks signing secret of this rule's deliveries. */
  secret: Schema.String
}).annotations({ identifier: "AlertCreated" })

export const AlertsResponse = Schema.Struct({ alerts: Schema.Array(AlertResponse) }).annotations({ identifier: "Alerts" })

export const DeliveriesResponse = Schema.Struct({ deliveries: Schema.Array(DeliveryAttempt) }).annotations({ identifier: "Deliveries" })

const AlertPath = Schema.Struct({ id: Schema.String })

export const Health = Schema.Struct({ status: Schema.Literal("ok") }).annotations({ identifier: "Health" })
export const Readiness = Schema.Struct({ status: Schema.Literal("ready") }).annotations({ identifier: "Readiness" })

// ---------------------------------------------------------------------------------------------
// The admin token

/**
 * `Authorization: Bearer $ADMIN_TOKEN`, compared in constant time. Without a configured token the
 * admin endpoints answer 404, as if they did not exist.
 */
export class AdminAuth extends HttpApiMiddleware.Tag<AdminAuth>()("dashcast/AdminAuth", {
  failure: Schema.Union(Unauthorized, NotFound),
  security: { adminToken: HttpApiSecurity.bearer.pipe(HttpApiSecurity.annotate(OpenApi.Description, "ADMIN_TOKEN")) }
}) {}

// ---------------------------------------------------------------------------------------------
// The API

export const HealthGroup = HttpApiGroup.make("health", { topLevel: true })
  .add(HttpApiEndpoint.get("healthz", "/healthz").addSuccess(Health)
    .annotate(OpenApi.Summary, "200 while the process runs"))
  .add(HttpApiEndpoint.get("readyz", "/readyz").addSuccess(Readiness).addError(Unavailable)
    .annotate(OpenApi.Summary, "200 once a snapshot is held (fetched, or restored from the cache)"))

export const MarketGroup = HttpApiGroup.make("market", { topLevel: true })
  .add(
    HttpApiEndpoint.get("dashboard", "/api/dashboard")
      .setUrlParams(Schema.Struct({ currency: Schema.optional(CurrencyParam) }))
      .addSuccess(DashboardResponse)
      .addError(BadRequest)
      .addError(Unavailable)
      .annotate(OpenApi.Summary, "The watchlist in one currency: the members of a WebSocket frame, with its age")
  )
  .add(
    HttpApiEndpoint.get("assets", "/api/assets")
      .addSuccess(AssetsResponse)
      .annotate(OpenApi.Summary, "The watchlist and what is known of each asset")
  )
  .add(
    HttpApiEndpoint.get("history", "/api/history")
      .setUrlParams(Schema.Struct({
        asset: Schema.optional(AssetParam),
        currency: Schema.optional(CurrencyParam),
        range: Schema.optional(RangeParam)
      }))
      .addSuccess(HistoryResponse)
      .addError(BadRequest)
      .addError(Unavailable)
      .annotate(
        OpenApi.Summary,
        "One asset's price history in one currency, oldest first: full from the first round (seeded from the provider), kept across restarts"
      )
  )
  .add(
    HttpApiEndpoint.get("sparklines", "/api/sparklines")
      .setUrlParams(Schema.Struct({ currency: Schema.optional(CurrencyParam) }))
      .addSuccess(SparklinesResponse)
      .addError(BadRequest)
      .addError(Unavailable)
      .annotate(OpenApi.Summary, "Every watched asset's last 24 hours in one currency, hourly: the watchlist's small charts in one request")
  )

// Not top-level: the client's type of a union of top-level groups with different errors is empty.
export const AdminGroup = HttpApiGroup.make("admin")
  .add(
    HttpApiEndpoint.post("refresh", "/api/dashboard/refresh")
      .addSuccess(RefreshResponse)
      .addError(TooManyRequests)
      .addError(UpstreamFailed)
      .annotate(OpenApi.Summary, "A force update: one upstream round now, broadcast to every client as force_update")
  )
  .middleware(AdminAuth)

/** Alert rules, behind the same admin token as the force update. */
export const AlertsGroup = HttpApiGroup.make("alerts")
  .add(
    HttpApiEndpoint.post("create", "/api/alerts")
      .setPayload(AlertRequest)
      .addSuccess(AlertCreatedResponse, { status: 201 })
      .addError(BadRequest)
      .addError(StoreUnavailable)
      .annotate(OpenApi.Summary, "A new alert rule; the answer carries its webhook signing secret, shown this once")
  )
  .add(
    HttpApiEndpoint.get("list", "/api/alerts")
      .addSuccess(AlertsResponse)
      .addError(StoreUnavailable)
      .annotate(OpenApi.Summary, "Every alert rule, oldest first, without secrets")
  )
  .add(
    HttpApiEndpoint.get("get", "/api/alerts/:id")
      .setPath(AlertPath)
      .addSuccess(AlertResponse)
      .addError(NotFound)
      .addError(StoreUnavailable)
      .annotate(OpenApi.Summary, "One alert rule, without its secret")
  )
  .add(
    HttpApiEndpoint.del("delete", "/api/alerts/:id")
      .setPath(AlertPath)
      .addSuccess(HttpApiSchema.NoContent)
      .addError(NotFound)
      .addError(StoreUnavailable)
      .annotate(OpenApi.Summary, "Deletes an alert rule, its delivery records and its webhooks not yet delivered")
  )
  .add(
    HttpApiEndpoint.get("deliveries", "/api/alerts/:id/deliveries")
      .setPath(AlertPath)
      .addSuccess(DeliveriesResponse)
      .addError(NotFound)
      .addError(StoreUnavailable)
      .annotate(OpenApi.Summary, "The rule's webhook delivery attempts, newest last (the last 100)")
  )
  .middleware(AdminAuth)

export class DashcastApi extends HttpApi.make("dashcast")
  .add(HealthGroup)
  .add(MarketGroup)
  .add(AdminGroup)
  .add(AlertsGroup)
  .annotate(OpenApi.Title, "dashcast")
  .annotate(OpenApi.Description, "A real-time market dashboard server: the HTTP API next to its WebSocket (/ws)")
{}
