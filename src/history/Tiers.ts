/**
 * How the price history is downsampled as it ages (docs/ARCHITECTURE.md, "Price history"): every
 * point goes to three tiers, each keeping at most one point per bucket of its step (the newest
 * wins) for as long as its retention. A range is read from the finest tier that covers it, and a
 * coarser tier fills only the buckets that finer points leave empty. Pure, so the stores and the
 * size measurement share exactly these numbers.
 */
import type { HistoryRange } from "./HistoryPoint.js"

const MINUTE = 60_000
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR

export type TierName = "minute" | "hour" | "day"

export interface Tier {
  readonly name: TierName
  /** A number that identifies the tier in storage (a column in SQLite, a key suffix in Redis). */
  readonly id: 0 | 1 | 2
  /** At most one point per `step` milliseconds: the newest of its bucket. */
  readonly step: number
  /** Points older than this (from now) are dropped. */
  readonly keep: number
}

/**
 * Every update for a day (the newest of each minute, when updates come faster), hourly for a
 * month, daily for a year. At most 1,500 + 744 + 366 = 2,610 points per series.
 */
export const TIERS: readonly [Tier, Tier, Tier] = [
  { name: "minute", id: 0, step: MINUTE, keep: 25 * HOUR },
  { name: "hour", id: 1, step: HOUR, keep: 31 * DAY },
  { name: "day", id: 2, step: DAY, keep: 366 * DAY }
]
export const [MINUTE_TIER, HOUR_TIER, DAY_TIER] = TIERS

/** The most points one series can hold: each tier's retention over its step, plus its current bucket. */
export const MAX_POINTS_PER_SERIES = TIERS.reduce((sum, tier) => sum + tier.keep / tier.step, 0)

/** How far back each range reaches and which tiers it reads, finest first. */
export const RANGES: Readonly<Record<HistoryRange, { readonly span: number; readonly tiers: ReadonlyArray<Tier> }>> = {
  "24h": { span: DAY, tiers: TIERS },
  // A week at minute resolution would be 10,000 points for a chart a few hundred pixels wide.
  "7d": { span: 7 * DAY, tiers: [HOUR_TIER, DAY_TIER] },
  "30d": { span: 30 * DAY, tiers: [HOUR_TIER, DAY_TIER] }
}

/** `[epoch ms, price]`, as stored and served. */
export type Point = readonly [number, number]

/** The bucket of time `t` in a tier: the same bucket holds one point. */
export const bucketOf = (tier: Tier, t: number): number => Math.floor(t / tier.step)

/** The oldest time a tier still keeps at `now`. */
export const keepFrom = (tier: Tier, now: number): number => now - tier.keep

/**
 * One series over a range, from its tiers' points (finest first, each list oldest first): every
 * point of the finest tier, then each coarser tier's points whose bucket holds no point already
 * taken, oldest first. So a month-old chart is hourly, today's part of it is as fine as it was
 * recorded, and a gap (the server was down) is filled by whatever coarser point covers it.
 */
export const mergeTiers = (tiers: ReadonlyArray<Tier>, pointsByTier: ReadonlyArray<ReadonlyArray<Point>>): ReadonlyArray<Point> => {
  const taken: Array<Point> = []
  tiers.forEach((tier, i) => {
    const points = pointsByTier[i] ?? []
    if (taken.length === 0) {
      taken.push(...points)
      return
    }
    const covered = new Set(taken.map(([t]) => bucketOf(tier, t)))
    for (const point of points) if (!covered.has(bucketOf(tier, point[0]))) taken.push(point)
  })
  return taken.sort((a, b) => a[0] - b[0])
}
