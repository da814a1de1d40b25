/**
 * RSI-14 for every watched asset without a chart call per asset per round (docs/ARCHITECTURE.md,
 * "RSI-14"): each asset's daily closes are fetched at most once an hour, the fetches spread over
 * the hour, and between them the live price stands in as today's close, so RSI stays live.
 */
import { Option, Schema } from "effect"
import { Price } from "../Bounds.js"
import { wilderRsi } from "../Rsi.js"
import type { AssetId } from "../Watchlist.js"

export const RSI_PERIOD = 14
export const CHART_REFRESH_MS = 60 * 60 * 1000
const DAY_MS = 24 * 60 * 60 * 1000

/** One asset's daily closes, as kept in memory and in the L2 cache (`market:closes:<asset>`). */
export class ChartEntry extends Schema.Class<ChartEntry>("ChartEntry")({
  /** `[epoch ms, price]` in the first currency, oldest first, as the provider sent them. */
  closes: Schema.Array(Schema.Tuple(Schema.Number, Price)),
  fetched_at: Schema.Number,
  /** When this asset's closes are due again. */
  next_due_at: Schema.Number
}) {}

/**
 * The assets whose closes to fetch in a round at `now`: those never fetched first (in watchlist
 * order), then those due, most overdue first; at most `limit`.
 */
export const planCharts = (
  assets: ReadonlyArray<AssetId>,
  entries: ReadonlyMap<AssetId, { readonly next_due_at: number }>,
  now: number,
  limit: number
): ReadonlyArray<AssetId> => {
  const cold = assets.filter((asset) => !entries.has(asset))
  const due = assets
    .flatMap((asset) => {
      const entry = entries.get(asset)
      return entry !== undefined && entry.next_due_at <= now ? [[asset, entry.next_due_at] as const] : []
    })
    .sort((a, b) => a[1] - b[1])
    .map(([asset]) => asset)
  return [...cold, ...due].slice(0, Math.max(0, limit))
}

/**
 * How many chart calls one round may make: enough to refresh every asset once an hour at this
 * interval and, while some assets have no closes yet, what is left of one minute's call budget
 * after the round's other calls, so a cold start fills RSI quickly without a burst past it.
 */
export const chartsPerRound = (options: {
  readonly assets: number
  readonly cold: number
  readonly intervalMs: number
  readonly otherCalls: number
  readonly perMinuteBudget: number
}): number => {
  const steady = Math.max(1, Math.ceil((options.assets * options.intervalMs) / CHART_REFRESH_MS))
  const fill = options.cold > 0 ? Math.max(1, options.perMinuteBudget - options.otherCalls) : 0
  return Math.max(steady, fill)
}

/**
 * When closes fetched at `now` are due again: an hour later. A first fetch (cold start) is pushed
 * further by the asset's place in the watchlist, so that the next refreshes fall evenly over the
 * hour instead of all in the same round.
 */
export const nextDueAfter = (now: number, index: number, count: number, first: boolean): number =>
  now + CHART_REFRESH_MS + (first && count > 0 ? Math.floor((index / count) * CHART_REFRESH_MS) : 0)

/**
 * RSI-14 with the live price as today's close: the provider's daily points up to today's 00:00 UTC
 * (a point after it is an intraday price, replaced by the live one), then `livePrice`.
 */
export const liveRsi = (entry: ChartEntry, livePrice: number, now: number): Option.Option<number> => {
  const startOfToday = Math.floor(now / DAY_MS) * DAY_MS
  const closes = entry.closes.filter(([t]) => t <= startOfToday).map(([, price]) => price)
  return wilderRsi([...closes, livePrice], RSI_PERIOD)
}
