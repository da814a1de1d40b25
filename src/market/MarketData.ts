/**
 * The market data port: one fetch of every field of the summary, from upstream or from the
 * simulated feed (`DEMO`). Failures are one typed `UpstreamError` whose `reason` says what went wrong.
 */
import { Context, Data, Duration, Effect, Option } from "effect"
import type { DashboardSummary, SummaryField } from "./DashboardSummary.js"

/** The four upstream calls (DESIGN.md, "Upstream calls"), named in errors, logs and metrics. */
export type Endpoint = "simple_price" | "global" | "market_chart" | "fear_greed"

export type UpstreamReason = Data.TaggedEnum<{
  Timeout: { readonly after: Duration.Duration }
  HttpStatus: { readonly status: number }
  RateLimited: { readonly status: number; readonly retryAfter: Option.Option<Duration.Duration> }
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

  /** The delay the provider asked for, which lengthens the schedule's next delay. */
  get retryAfter(): Option.Option<Duration.Duration> {
    return this.reason._tag === "RateLimited" ? this.reason.retryAfter : Option.none()
  }
}

const describeReason = UpstreamReason.$match({
  Timeout: ({ after }) => `timed out after ${Duration.format(after)}`,
  HttpStatus: ({ status }) => `HTTP ${status}`,
  RateLimited: ({ status, retryAfter }) =>
    `rate limited (HTTP ${status}${Option.match(retryAfter, { onNone: () => "", onSome: (d) => `, retry after ${Duration.format(d)}` })})`,
  Decode: ({ detail }) => `unexpected response: ${detail}`,
  Network: ({ detail }) => `network error: ${detail}`
})

/**
 * One fetch. When some calls failed but every failed field has a previous value, the summary keeps
 * those values, names them in `staleFields`, and carries the failure so the schedule still backs off.
 */
export interface MarketFetch {
  readonly summary: DashboardSummary
  readonly staleFields: ReadonlyArray<SummaryField>
  readonly partialFailure: Option.Option<UpstreamError>
}

export class MarketData extends Context.Tag("dashcast/MarketData")<MarketData, {
  /** Fetches every field; `previous` supplies last good values for fields whose call failed. */
  readonly fetch: (previous: Option.Option<DashboardSummary>) => Effect.Effect<MarketFetch, UpstreamError>
}>() {}
