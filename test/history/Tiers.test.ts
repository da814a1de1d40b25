/**
 * The downsampling rule of the price history (src/history/Tiers.ts): buckets per tier, the bound
 * per series, and how a range is put together from its tiers.
 */
import { describe, expect, it } from "vitest"
import { bucketOf, DAY_TIER, HOUR_TIER, MAX_POINTS_PER_SERIES, mergeTiers, MINUTE_TIER, type Point, RANGES, TIERS } from "../../src/history/Tiers.js"

const H = 3_600_000
const M = 60_000
const T0 = Date.parse("2026-11-20T00:00:00Z")

describe("history tiers", () => {
  it("keep every update for a day (a minute apart at most), hourly for a month, daily for a year: bounded", () => {
    expect(TIERS.map((t) => [t.name, t.step, t.keep])).toEqual([
      ["minute", M, 25 * H],
      ["hour", H, 31 * 24 * H],
      ["day", 24 * H, 366 * 24 * H]
    ])
    expect(MAX_POINTS_PER_SERIES).toBe(1_500 + 744 + 366)
    // 10 minute updates (the default) are each their own point in the finest tier.
    expect(new Set([0, 10, 20].map((m) => bucketOf(MINUTE_TIER, T0 + m * M))).size).toBe(3)
    // Updates every 5 s fall 12 to a minute: one point each.
    expect(new Set(Array.from({ length: 12 }, (_, i) => bucketOf(MINUTE_TIER, T0 + i * 5_000))).size).toBe(1)
  })

  it("reads 24h from every tier, 7d and 30d from the hourly and daily tiers", () => {
    expect(RANGES["24h"]).toEqual({ span: 24 * H, tiers: [MINUTE_TIER, HOUR_TIER, DAY_TIER] })
    expect(RANGES["7d"]).toEqual({ span: 7 * 24 * H, tiers: [HOUR_TIER, DAY_TIER] })
    expect(RANGES["30d"]).toEqual({ span: 30 * 24 * H, tiers: [HOUR_TIER, DAY_TIER] })
  })

  it("takes every point of the finest tier and a coarser point only where no finer point covers its bucket", () => {
    // Minute points from 10:30 to 10:50; hourly points at 08:00, 09:00 and 10:15 (covered), 11:00.
    const minute: Array<Point> = [[T0 + 10 * H + 30 * M, 100], [T0 + 10 * H + 40 * M, 101], [T0 + 10 * H + 50 * M, 102]]
    const hour: Array<Point> = [[T0 + 8 * H, 90], [T0 + 9 * H, 95], [T0 + 10 * H + 15 * M, 99], [T0 + 11 * H, 103]]
    const day: Array<Point> = [[T0 - 2 * 24 * H, 80], [T0 + 5 * H, 88]]
    expect(mergeTiers([MINUTE_TIER, HOUR_TIER, DAY_TIER], [minute, hour, day])).toEqual([
      [T0 - 2 * 24 * H, 80],
      [T0 + 8 * H, 90],
      [T0 + 9 * H, 95],
      [T0 + 10 * H + 30 * M, 100],
      [T0 + 10 * H + 40 * M, 101],
      [T0 + 10 * H + 50 * M, 102],
      [T0 + 11 * H, 103]
    ])
  })

  it("fills a gap (the server was down) from a coarser tier, and a coarser tier alone is the whole series", () => {
    const minute: Array<Point> = [[T0 + 1 * H, 10], [T0 + 5 * H, 11]]
    const hour: Array<Point> = [[T0 + 1 * H + 20 * M, 12], [T0 + 2 * H, 13], [T0 + 3 * H, 14], [T0 + 4 * H, 15], [T0 + 5 * H + 5 * M, 16]]
    expect(mergeTiers([MINUTE_TIER, HOUR_TIER], [minute, hour]).map(([, p]) => p)).toEqual([10, 13, 14, 15, 11])
    expect(mergeTiers([HOUR_TIER, DAY_TIER], [[], hour])).toEqual(hour)
    expect(mergeTiers([HOUR_TIER, DAY_TIER], [[], []])).toEqual([])
  })
})
