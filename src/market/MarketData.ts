/**
 * The market data port: one fetch of every field of the summary, from upstream or from the
 * simulated feed (`DEMO`). Failures are one typed `UpstreamError` whose `reason` says what went wrong.
 */
import { Context, Data, Duration, Effect, Option } from "effect"
import type { DashboardSummary, SummaryField } from "./DashboardSummary.js"

/** The four upstream calls (DESIGN.md, "Upstream calls"), named in errors, logs and metrics. */
export type Endpoint = "simple_price" | "global" | "market_chart" | "fear_greed"

/** Who answers each call: a provider's `Retry-After` holds for every call to it. */
export type Provider = "coingecko" | "alternative_me"
export const providerOf: Record<Endpoint, Provider> = {
  simple_price: "coingecko",
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
  readonly reason: UpstreamReason
  readonly cause?: unknown
}> {
  override get message(): string {
    return `${this.endpoint}: ${describeReason(this.reason)}`
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
 * One fetch. When some calls failed but every failed field has a previous value, the summary keeps
 * those values, names them in `staleFields`, and carries the failure so the schedule still backs off.
 * A call not sent because its provider asked to wait (`Blocked`) makes its fields stale but is no
 * failure: the provider's wait binds that provider only, not the whole schedule.
 */
export interface MarketFetch {
  readonly summary: DashboardSummary
  readonly staleFields: ReadonlyArray<SummaryField>
  readonly partialFailure: Option.Option<UpstreamError>
}

export class MarketData extends Context.Tag("dashcast/MarketData")<MarketData, {
  /** Fetches every field; `previous` supplies last good values for fields whose call failed. */
  readonly fetch: (previous: Option.Option<DashboardSummary>) => Effect.Effect<MarketFetch, UpstreamError>
  /**
   * How long the provider of prices still asks not to be called (its last `Retry-After`), if it
   * does: no round is worth starting before, and no force update is sent.
   */
  readonly blockedFor: Effect.Effect<Option.Option<Duration.Duration>>
}>() {}
