/**
 * RSI-14 for the whole watchlist without a chart call per asset per round
 * (src/market/Upstream/Charts.ts): which assets' closes a round fetches, how many, when they are
 * due again, and the RSI with the live price as today's close.
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc, Option } from "effect"
import { wilderRsi } from "../../src/market/Rsi.js"
import { CHART_REFRESH_MS, ChartEntry, chartsPerRound, liveRsi, nextDueAfter, planCharts } from "../../src/market/Upstream/Charts.js"

const HOUR = 3_600_000
const DAY = 86_400_000
const NOW = Date.parse("2025-07-25T14:54:00Z")

const entry = (nextDueAt: number, closes: ReadonlyArray<readonly [number, number]> = []) =>
  ChartEntry.make({ closes, fetched_at: nextDueAt - HOUR, next_due_at: nextDueAt })

/** Daily closes at 00:00 UTC ending today (`now`'s day), then an intraday point at `now`. */
const chartOf = (closes: ReadonlyArray<number>, intraday: number, now = NOW) => {
  const today = Math.floor(now / DAY) * DAY
  const daily = closes.map((c, i) => [today - (closes.length - 1 - i) * DAY, c] as const)
  return ChartEntry.make({ closes: [...daily, [now, intraday]], fetched_at: now, next_due_at: now + HOUR })
}

const CLOSES = Array.from({ length: 60 }, (_, i) => Math.round((100 + 8 * Math.sin(i / 3) + i / 5) * 100) / 100)

describe("planCharts", () => {
  const ids = ["a", "b", "c", "d", "e", "f"]

  it("takes the never-fetched first in watchlist order, then the due ones most overdue first, up to the limit", () => {
    const entries = new Map([
      ["a", entry(NOW - 10)],
      ["b", entry(NOW + 1)], // not due
      ["d", entry(NOW - 500)],
      ["f", entry(NOW)] // due exactly now
    ])
    expect(planCharts(ids, entries, NOW, 10)).toEqual(["c", "e", "d", "a", "f"])
    expect(planCharts(ids, entries, NOW, 3)).toEqual(["c", "e", "d"])
    expect(planCharts(ids, entries, NOW, 1)).toEqual(["c"])
    expect(planCharts(ids, entries, NOW, 0)).toEqual([])
    expect(planCharts(ids, entries, NOW, -2)).toEqual([])
  })

  it("plans nothing when every asset has closes that are not due", () => {
    const entries = new Map(ids.map((id, i) => [id, entry(NOW + 1 + i)]))
    expect(planCharts(ids, entries, NOW, 100)).toEqual([])
  })

  const plans = fc.record({
    assets: fc.uniqueArray(fc.string({ minLength: 1, maxLength: 6 }), { maxLength: 40 }),
    dues: fc.array(fc.option(fc.integer({ min: -2 * HOUR, max: 2 * HOUR }), { nil: undefined }), { minLength: 40, maxLength: 40 }),
    limit: fc.integer({ min: -1, max: 50 })
  })

  it.prop("plans at most `limit` distinct watched assets, each cold or due, cold ones first, and misses none it had room for", [plans], ([p]) => {
    const entries = new Map(p.assets.flatMap((id, i) => (p.dues[i] === undefined ? [] : [[id, entry(NOW + p.dues[i])] as const])))
    const plan = planCharts(p.assets, entries, NOW, p.limit)
    const cold = p.assets.filter((id) => !entries.has(id))
    const due = p.assets.filter((id) => (entries.get(id)?.next_due_at ?? Number.POSITIVE_INFINITY) <= NOW)
    expect(plan.length).toBeLessThanOrEqual(Math.max(0, p.limit))
    expect(new Set(plan).size).toBe(plan.length)
    for (const id of plan) expect(cold.includes(id) || due.includes(id)).toBe(true)
    const firstDue = plan.findIndex((id) => entries.has(id))
    if (firstDue >= 0) expect(plan.slice(firstDue).every((id) => entries.has(id))).toBe(true)
    expect(plan.length).toBe(Math.min(Math.max(0, p.limit), cold.length + due.length))
    // The due ones in the plan are the most overdue.
    const dueTimes = plan.filter((id) => entries.has(id)).map((id) => entries.get(id)?.next_due_at ?? 0)
    expect(dueTimes).toEqual([...dueTimes].sort((x, y) => x - y))
    const left = due.filter((id) => !plan.includes(id)).map((id) => entries.get(id)?.next_due_at ?? 0)
    if (dueTimes.length > 0 && left.length > 0) expect(Math.min(...left)).toBeGreaterThanOrEqual(Math.max(...dueTimes))
  })
})

describe("chartsPerRound", () => {
  it("is enough to refresh every asset once an hour at the interval", () => {
    expect(chartsPerRound({ assets: 12, cold: 0, intervalMs: 5 * 60_000, otherCalls: 2, perMinuteBudget: 10 })).toBe(1)
    expect(chartsPerRound({ assets: 12, cold: 0, intervalMs: 10 * 60_000, otherCalls: 2, perMinuteBudget: 10 })).toBe(2)
    expect(chartsPerRound({ assets: 250, cold: 0, intervalMs: 10 * 60_000, otherCalls: 11, perMinuteBudget: 10 })).toBe(42)
    expect(chartsPerRound({ assets: 50, cold: 0, intervalMs: 2 * HOUR, otherCalls: 4, perMinuteBudget: 10 })).toBe(100)
    // Never none: a round always has room for one.
    expect(chartsPerRound({ assets: 1, cold: 0, intervalMs: 1_000, otherCalls: 2, perMinuteBudget: 10 })).toBe(1)
  })

  it("while some assets have no closes, is what is left of a minute's budget after the round's other calls", () => {
    expect(chartsPerRound({ assets: 50, cold: 50, intervalMs: 60_000, otherCalls: 4, perMinuteBudget: 10 })).toBe(6)
    expect(chartsPerRound({ assets: 50, cold: 1, intervalMs: 60_000, otherCalls: 4, perMinuteBudget: 30 })).toBe(26)
    // Eleven other calls leave nothing of ten: still one, or a cold start would never end.
    expect(chartsPerRound({ assets: 50, cold: 50, intervalMs: 60_000, otherCalls: 11, perMinuteBudget: 10 })).toBe(1)
    // The hourly need wins when it is larger.
    expect(chartsPerRound({ assets: 250, cold: 3, intervalMs: 10 * 60_000, otherCalls: 2, perMinuteBudget: 10 })).toBe(42)
  })

  const settings = fc.record({
    assets: fc.integer({ min: 0, max: 250 }),
    coldShare: fc.double({ min: 0, max: 1, noNaN: true }),
    intervalMs: fc.integer({ min: 1_000, max: 6 * HOUR }),
    otherCalls: fc.integer({ min: 2, max: 11 }),
    perMinuteBudget: fc.constantFrom(10, 30)
  })

  it.prop("keeps up with an hourly refresh of every asset, and asks no more than that when nothing is cold", [settings], ([s]) => {
    const cold = Math.floor(s.assets * s.coldShare)
    const perRound = chartsPerRound({ ...s, cold })
    const roundsPerHour = CHART_REFRESH_MS / s.intervalMs
    expect(perRound).toBeGreaterThanOrEqual(1)
    expect(Number.isInteger(perRound)).toBe(true)
    expect(perRound * Math.max(1, roundsPerHour)).toBeGreaterThanOrEqual(s.assets)
    if (cold === 0) expect(perRound).toBeLessThanOrEqual(Math.max(1, (s.assets * s.intervalMs) / CHART_REFRESH_MS + 1))
    else expect(perRound).toBeGreaterThanOrEqual(Math.max(1, s.perMinuteBudget - s.otherCalls))
  })
})

describe("nextDueAfter", () => {
  it("is an hour after a refresh", () => {
    expect(nextDueAfter(NOW, 7, 12, false)).toBe(NOW + HOUR)
    expect(nextDueAfter(NOW, 0, 0, false)).toBe(NOW + HOUR)
  })

  it("pushes a first fetch further by the asset's place, so that refreshes fall evenly over the hour", () => {
    expect([0, 1, 2, 3].map((i) => nextDueAfter(NOW, i, 4, true) - NOW)).toEqual([HOUR, 1.25 * HOUR, 1.5 * HOUR, 1.75 * HOUR])
    expect(nextDueAfter(NOW, 0, 0, true)).toBe(NOW + HOUR)
  })

  it.prop("first fetches of a watchlist fall within the second hour, in order, a 1/count of an hour apart", [fc.integer({ min: 1, max: 250 })], ([count]) => {
    const due = Array.from({ length: count }, (_, i) => nextDueAfter(NOW, i, count, true))
    for (const d of due) {
      expect(d).toBeGreaterThanOrEqual(NOW + HOUR)
      expect(d).toBeLessThan(NOW + 2 * HOUR)
    }
    due.slice(1).forEach((d, i) => {
      expect(Math.abs(d - due[i]! - HOUR / count)).toBeLessThanOrEqual(1)
    })
  })
})

describe("liveRsi", () => {
  it("is Wilder's RSI of the daily closes up to today's 00:00 UTC and the live price, not the intraday point", () => {
    const chart = chartOf(CLOSES, 55)
    expect(liveRsi(chart, 112.5, NOW)).toEqual(wilderRsi([...CLOSES, 112.5]))
    expect(liveRsi(chart, 112.5, NOW)).not.toEqual(wilderRsi([...CLOSES, 55, 112.5]))
  })

  it("counts the points up to 00:00 UTC of the day of `now`: the close dated 00:00 today is in, a later point only from the next day on", () => {
    const chart = chartOf(CLOSES, 55)
    const midnight = Math.floor(NOW / DAY) * DAY
    expect(liveRsi(chart, 99, midnight)).toEqual(wilderRsi([...CLOSES, 99]))
    // A day later the intraday point of yesterday is a past point, and counts as a close.
    expect(liveRsi(chart, 99, NOW + DAY)).toEqual(wilderRsi([...CLOSES, 55, 99]))
    // Earlier than midnight the last daily point is still in the future.
    expect(liveRsi(chart, 99, midnight - 1)).toEqual(wilderRsi([...CLOSES.slice(0, -1), 99]))
  })

  it("is none with fewer than 14 daily closes", () => {
    expect(liveRsi(chartOf(CLOSES.slice(0, 13), 1), 100, NOW)).toEqual(Option.none())
    expect(Option.isSome(liveRsi(chartOf(CLOSES.slice(0, 14), 1), 100, NOW))).toBe(true)
  })

  const price = fc.integer({ min: 1, max: 100_000_000 }).map((n) => n / 100)
  const series = fc.array(price, { minLength: 14, maxLength: 70 })

  it.prop("is between 0 and 100 and equals Wilder's RSI of the closes and the live price", [series, price, price], ([closes, intraday, live]) => {
    const rsi = Option.getOrThrow(liveRsi(chartOf(closes, intraday), live, NOW))
    expect(rsi).toBeGreaterThanOrEqual(0)
    expect(rsi).toBeLessThanOrEqual(100)
    expect(rsi).toBe(Option.getOrThrow(wilderRsi([...closes, live])))
  })

  it.prop("does not fall when the live price rises", [series, price, price], ([closes, a, b]) => {
    const chart = chartOf(closes, 1)
    const [low, high] = a <= b ? [a, b] : [b, a]
    expect(Option.getOrThrow(liveRsi(chart, high, NOW))).toBeGreaterThanOrEqual(Option.getOrThrow(liveRsi(chart, low, NOW)) - 1e-9)
  })
})
