/**
 * How the dashboard writes numbers and zones, and the chart's geometry: pure functions, checked
 * on the values people would read off the screen.
 */
import { describe, expect, it } from "vitest"
import { extendSeries, layoutChart, niceStep, sparklinePath } from "../../src/web/Chart.js"
import {
  direction,
  FEAR_GREED_BANDS,
  fearGreedBand,
  formatAge,
  formatChange,
  formatCompactMoney,
  formatCompactUsd,
  formatCountdown,
  formatDay,
  formatPrice,
  formatPriceShort,
  formatRsi,
  rsiZone
} from "../../src/web/Format.js"

describe("Format", () => {
  it("writes prices as USD with cents, and market sizes compact with three digits", () => {
    expect(formatPrice(64_123.45)).toBe("$64,123.45")
    expect(formatPrice(97_000)).toBe("$97,000.00")
    expect(formatCompactUsd(2_347_000_000_000)).toBe("$2.35T")
    expect(formatCompactUsd(85_000_000_000)).toBe("$85.0B")
    expect(formatCompactUsd(128_400_000_000)).toBe("$128B")
    expect(formatCompactUsd(999_900_000_000)).toBe("$1.00T")
  })

  it("writes money in its own currency: its symbol, its usual decimals, enough digits for small prices", () => {
    expect(formatPrice(3_231.12, "eur")).toBe("€3,231.12")
    expect(formatPrice(54_012.5, "gbp")).toBe("£54,012.50")
    // The yen has no decimals, unless a price needs them for three significant digits.
    expect(formatPrice(10_094_897.84, "jpy")).toBe("¥10,094,898")
    expect(formatPrice(18.54, "jpy")).toBe("¥18.5")
    expect(formatPrice(88_000, "chf")).toBe("CHF\u00a088,000.00")
    expect(formatPrice(64_000, "cad")).toBe("CA$64,000.00")
    // Under one unit, four significant digits: a meme coin is not "$0.00".
    expect(formatPrice(0.1234, "usd")).toBe("$0.1234")
    expect(formatPrice(0.00001823, "usd")).toBe("$0.00001823")
    expect(formatPrice(0.04831, "btc")).toBe("BTC\u00a00.04831")
    // A vs-currency Intl does not know as a currency is written with its code.
    expect(formatPrice(1_234.5, "sats")).toBe("1,234.50 SATS")
    expect(formatPriceShort(64_123.45, "eur")).toBe("€64,123")
    expect(formatPriceShort(0.5512, "usd")).toBe("$0.5512")
    expect(formatCompactMoney(2_503_528_702_710, "eur")).toBe("€2.50T")
    expect(formatCompactMoney(408_000_000_000_000, "jpy")).toBe("¥408T")
  })

  it("writes a day on an axis with the weekday over a week and the month over a month", () => {
    const t = Date.parse("2026-11-16T12:00:00Z")
    expect(formatDay(t, true)).toMatch(/^Mon 16$/)
    expect(formatDay(t, false)).toBe("16 Nov")
  })

  it("writes the 24h change signed, with a true minus, and knows its direction", () => {
    expect(formatChange(2.345)).toBe("+2.35%")
    expect(formatChange(-1.234)).toBe("\u22121.23%")
    expect(formatChange(0.004)).toBe("0.00%")
    expect(formatChange(-0.004)).toBe("0.00%")
    expect([direction(1), direction(-1), direction(0.001)]).toEqual(["up", "down", "flat"])
    expect(formatRsi(55.26)).toBe("55.3")
  })

  it("classifies Fear & Greed by alternative.me's published bands", () => {
    const at = (v: number) => fearGreedBand(v).label
    expect([0, 25].map(at)).toEqual(["Extreme Fear", "Extreme Fear"])
    expect([26, 46].map(at)).toEqual(["Fear", "Fear"])
    expect([47, 54].map(at)).toEqual(["Neutral", "Neutral"])
    expect([55, 75].map(at)).toEqual(["Greed", "Greed"])
    expect([76, 100].map(at)).toEqual(["Extreme Greed", "Extreme Greed"])
    // The bands cover 0..100 without gaps or overlaps.
    FEAR_GREED_BANDS.forEach((band, i) => expect(band.from).toBe(i === 0 ? 0 : (FEAR_GREED_BANDS[i - 1]?.to ?? -2) + 1))
    expect(FEAR_GREED_BANDS.at(-1)?.to).toBe(100)
  })

  it("puts RSI-14 at or beyond 30 and 70 in the oversold and overbought zones", () => {
    expect([0, 30, 30.1, 69.9, 70, 100].map(rsiZone)).toEqual(["oversold", "oversold", "neutral", "neutral", "overbought", "overbought"])
  })

  it("writes ages and countdowns as people say them", () => {
    expect(formatAge(500)).toBe("just now")
    expect(formatAge(12_400)).toBe("12 s ago")
    expect(formatAge(5 * 60_000 + 10_000)).toBe("5 min ago")
    expect(formatAge(2 * 3_600_000)).toBe("2 h ago")
    expect(formatAge(2 * 3_600_000 + 5 * 60_000)).toBe("2 h 5 min ago")
    expect(formatAge(3 * 86_400_000)).toBe("3 d ago")
    expect(formatCountdown(9_001)).toBe("0:10")
    expect(formatCountdown(272_000)).toBe("4:32")
    expect(formatCountdown(3_723_000)).toBe("1:02:03")
    expect(formatCountdown(-5_000)).toBe("0:00")
  })
})

describe("Chart", () => {
  const box = { width: 500, height: 200, padding: { top: 10, right: 60, bottom: 20, left: 0 } }

  it("needs two points to draw a line", () => {
    expect(layoutChart([], box)).toBeUndefined()
    expect(layoutChart([{ t: 0, price: 1 }], box)).toBeUndefined()
  })

  it("maps time to x and price to y inside the padding, oldest first whatever the input order", () => {
    const g = layoutChart([{ t: 60_000, price: 110 }, { t: 0, price: 100 }, { t: 30_000, price: 90 }], box)
    expect(g).toBeDefined()
    if (g === undefined) return
    const coords = [...g.line.matchAll(/[ML]([\d.]+),([\d.]+)/g)].map((m) => [Number(m[1]), Number(m[2])])
    expect(coords.map(([x]) => x)).toEqual([0, 220, 440])
    for (const [, y] of coords) {
      expect(y).toBeGreaterThanOrEqual(10)
      expect(y).toBeLessThanOrEqual(180)
    }
    // Higher prices are higher up; the last point is where the "now" dot goes.
    expect(coords[2]?.[1]).toBeLessThan(coords[0]?.[1] ?? 0)
    expect(coords[1]?.[1]).toBeGreaterThan(coords[0]?.[1] ?? 0)
    expect(g.last).toEqual({ x: 440, y: coords[2]?.[1] })
    expect(g.area.startsWith(g.line)).toBe(true)
    expect(g.area.endsWith("Z")).toBe(true)
    expect([g.low, g.high]).toEqual([90, 110])
  })

  it("puts axis ticks on round values and round times", () => {
    expect([niceStep(1_000, 4), niceStep(20, 4), niceStep(23, 4), niceStep(0.9, 3), niceStep(0, 4)]).toEqual([250, 5, 10, 0.5, 1])
    const g = layoutChart([{ t: 0, price: 59_000 }, { t: 3_600_000, price: 60_300 }], box, { yTickCount: 4, xTickCount: 4 })
    expect(g?.yTicks.map((t) => t.value)).toEqual([59_000, 59_500, 60_000])
    expect(g?.xTicks.map((t) => t.value)).toEqual([0, 900_000, 1_800_000, 2_700_000, 3_600_000])
    expect(g?.xStep).toBe(900_000)
  })

  it("keeps a flat line in the middle", () => {
    const g = layoutChart([{ t: 0, price: 100 }, { t: 1_000, price: 100 }], box)
    expect(g?.last.y).toBe(95)
  })
})

describe("small charts and live series", () => {
  it("stretches a sparkline over its box, the low at the bottom and the high at the top", () => {
    const d = sparklinePath([{ t: 0, price: 10 }, { t: 50, price: 20 }, { t: 100, price: 15 }], 64, 28, 2)
    expect(d).toBe("M0,26L32,2L64,14")
    expect(sparklinePath([{ t: 0, price: 10 }], 64, 28)).toBe("")
  })

  it("extends a series as the server does: same bucket replaces, later adds, older is ignored, too old drops", () => {
    const H = 3_600_000
    const points: ReadonlyArray<readonly [number, number]> = [[0, 1], [H, 2], [2 * H + 60_000, 3]]
    expect(extendSeries(points, [2 * H + 120_000, 4], H, 24 * H)).toEqual([[0, 1], [H, 2], [2 * H + 120_000, 4]])
    expect(extendSeries(points, [3 * H, 5], H, 24 * H)).toEqual([...points, [3 * H, 5]])
    expect(extendSeries(points, [H + 1, 9], H, 24 * H)).toBe(points)
    expect(extendSeries(points, [24 * H + 30 * 60_000, 6], H, 24 * H)).toEqual([[H, 2], [2 * H + 60_000, 3], [24 * H + 30 * 60_000, 6]])
  })
})

