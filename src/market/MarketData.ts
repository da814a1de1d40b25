/**
 * The market data port: one round of upstream calls for the whole watchlist, from upstream or from
 * the simulated feed (`DEMO`). Failures are one typed `UpstreamError` whose `reason` says what went
 * wrong and whose `target` says which currency or asset the call was for.
 */
import { Context, Data, Duration, Effect, Option } from "effect"
import type { AssetId, Currency, MarketView } from "./Watchlist.js"

/** The upstream calls (docs/ARCHITECTURE.md, "Upstream calls"), named in errors, logs and metrics. */
export type Endpoint = "coins_markets" | "global" | "market_chart" | "fear_greed"

/** Who answers each call: a provider's `Retry-After` holds for every call to it. */
export type Provider = "coingecko" | "alternative_me"
export const providerOf: Record<Endpoint, Provider> = {
  coins_markets: "coingecko",
  global: "coingecko",
  market_chart: "coingecko",
  fear_greed: "alternative_me"
}

/**
 * - `Blocked`: not sent, because the provider's `Retry-After` (from an earlier 429) has not expired;
 *   `retryAfter` is what is left of it.
 * - `TooLarge`: the body passed the size cap and was not read further.
 */
export type UpstreamReason = Data.TaggedEnum<{
  Timeout: { readonly after: Duration.Duration }
  HttpStatus: { readonly status: number }
  RateLimited: { readonly status: number; readonly retryAfter: Option.Option<Duration.Duration> }
  Blocked: { readonly retryAfter: Duration.Duration }
  TooLarge: { readonly limit: number }
  Decode: { readonly detail: string }
  Network: { readonly detail: string }
}>
export const UpstreamReason = Data.taggedEnum<UpstreamReason>()

export class UpstreamError extends Data.TaggedError("UpstreamError")<{
  readonly endpoint: Endpoint
  /** The currency (`coins_markets`) or asset (`market_chart`) the call was for. */
  readonly target?: string
  readonly reason: UpstreamReason
  readonly cause?: unknown
}> {
  override get message(): string {
    return `${this.endpoint}${this.target === undefined ? "" : `(${this.target})`}: ${describeReason(this.reason)}`
  }

  /** The delay the provider asked for (or what is left of it), which lengthens the schedule's next delay. */
  get retryAfter(): Option.Option<Duration.Duration> {
    return this.reason._tag === "RateLimited"
      ? this.reason.retryAfter
      : this.reason._tag === "Blocked"
      ? Option.some(this.reason.retryAfter)
      : Option.none()
  }
}

const describeReason = UpstreamReason.$match({
  Timeout: ({ after }) => `timed out after ${Duration.format(after)}`,
  HttpStatus: ({ status }) => `HTTP ${status}`,
  RateLimited: ({ status, retryAfter }) =>
    `rate limited (HTTP ${status}${Option.match(retryAfter, { onNone: () => "", onSome: (d) => `, retry after ${Duration.format(d)}` })})`,
  Blocked: ({ retryAfter }) => `not sent: the provider asked to wait ${Duration.format(retryAfter)} more`,
  TooLarge: ({ limit }) => `body larger than ${limit} bytes`,
  Decode: ({ detail }) => `unexpected response: ${detail}`,
  Network: ({ detail }) => `network error: ${detail}`
})

/**
 * Prices the provider already had before this round, handed to the price history so that its
 * charts are full from the first round (docs/ARCHITECTURE.md, "Price history"): `[epoch ms, price]`,
 * oldest first. `sparkline` is CoinGecko's 7-day hourly sparkline of one asset in one currency;
 * `closes` are an asset's daily closes, which are fetched in the first currency only.
 */
export interface PriceSeed {
  readonly kind: "sparkline" | "closes"
  readonly asset: AssetId
  readonly currency: Currency
  readonly points: ReadonlyArray<readonly [number, number]>
}

/**
 * One round. The view is merged with the previous one: what a failed call feeds keeps its last
 * good value and is named in `view.stale`; what never had a good value is absent. `failure` is the
 * most telling failed call, set when the schedule must count the round as failed. A call not sent
 * because its provider asked to wait (`Blocked`) makes its values stale but is no failure: the
 * wait binds that provider only. `problems` lists every failed or held call, for logs and answers.
 */
export interface MarketFetch {
  readonly view: MarketView
  readonly failure: Option.Option<UpstreamError>
  readonly problems: ReadonlyArray<UpstreamError>
  /**
   * Seeds for the price history: each series' sparkline on the first round that brings it, each
   * asset's closes when they are new to this process. Absent when there are none.
   */
  readonly seeds?: ReadonlyArray<PriceSeed>
}

export class MarketData extends Context.Tag("dashcast/MarketData")<MarketData, {
  /** One round for every watched asset and currency; `previous` supplies the last good values. */
  readonly fetch: (previous: Option.Option<MarketView>) => Effect.Effect<MarketFetch, UpstreamError>
  /**
   * How long the provider of prices still asks not to be called (its last `Retry-After`), if it
   * does: no round is worth starting before, and no force update is sent.
   */
  readonly blockedFor: Effect.Effect<Option.Option<Duration.Duration>>
}>() {}
