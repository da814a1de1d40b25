import { describe, expect, it } from "@effect/vitest"
import { FastCheck, Option } from "effect"
import { wilderRsi, wilderRsiSeries } from "../../src/market/Rsi.js"

/**
 * StockCharts ChartSchool, "Relative Strength Index (RSI)", worked example (spreadsheet cs-rsi.xls).
 * The table displays closes rounded to 2 decimals (44.34, 44.09, ...) but computes from these
 * 4-decimal closes; with them every published RSI value is reproduced to 2 decimals.
 */
const STOCKCHARTS_CLOSES = [
  44.3389, 44.0902, 44.1497, 43.6124, 44.3278, 44.8264, 45.0955, 45.4245, 45.8433, 46.0826, 45.8931,
  46.0328, 45.6140, 46.2820, 46.2820, 46.0028, 46.0328, 46.4116, 46.2222, 45.6439, 46.2122, 46.2521,
  45.7137, 46.4515, 45.7835, 45.3548, 44.0288, 44.1783, 44.2181, 44.5672, 43.4205, 42.6628, 43.1314
]
/** The published RSI-14 column, from index 14 (the 15th close) on. */
const STOCKCHARTS_RSI = [
  70.53, 66.32, 66.55, 69.41, 66.36, 57.97, 62.93, 63.26, 56.06, 62.38, 54.71, 50.42, 39.99, 41.46,
  41.87, 45.46, 37.30, 33.08, 37.77
]

const close = FastCheck.double({ min: 0.01, max: 1e6, noNaN: true, noDefaultInfinity: true })
const series = FastCheck.array(close, { minLength: 15, maxLength: 120 })
/** Prices in cents, so that scaling cannot turn a tiny change into none (or a loss into a gain). */
const centSeries = FastCheck.array(FastCheck.integer({ min: 1, max: 10_000_000 }).map((n) => n / 100), { minLength: 15, maxLength: 120 })

describe("Rsi", () => {
  describe("StockCharts worked example", () => {
    it("gives the published RSI-14 at every index from 14 on, to 2 decimals", () => {
      const rsi = wilderRsiSeries(STOCKCHARTS_CLOSES)
      expect(rsi).toHaveLength(STOCKCHARTS_CLOSES.length - 14)
      expect(rsi.map((v) => v.toFixed(2))).toEqual(STOCKCHARTS_RSI.map((v) => v.toFixed(2)))
    })

    it("gives the hand-computed first value from the displayed (rounded) closes", () => {
      // Gains over the first 14 changes of the rounded closes sum to 3.34, losses to 1.40.
      const rounded = STOCKCHARTS_CLOSES.slice(0, 15).map((c) => Math.round(c * 100) / 100)
      expect(rounded.slice(0, 5)).toEqual([44.34, 44.09, 44.15, 43.61, 44.33])
      const expected = 100 - 100 / (1 + (3.34 / 14) / (1.40 / 14))
      expect(Option.getOrThrow(wilderRsi(rounded))).toBeCloseTo(expected, 10)
      expect(expected.toFixed(2)).toBe("70.46")
    })

    it("wilderRsi is the last value of the series", () => {
      expect(wilderRsi(STOCKCHARTS_CLOSES).pipe(Option.map((v) => v.toFixed(2)))).toEqual(Option.some("37.77"))
    })
  })

  describe("edges", () => {
    it("needs period + 1 closes", () => {
      expect(wilderRsi(STOCKCHARTS_CLOSES.slice(0, 14))).toEqual(Option.none())
      expect(wilderRsiSeries([])).toEqual([])
      expect(Option.isSome(wilderRsi(STOCKCHARTS_CLOSES.slice(0, 15)))).toBe(true)
    })

    it("is 0 when prices only fall and 100 when they never fall (flat included)", () => {
      const falling = Array.from({ length: 20 }, (_, i) => 100 - i)
      expect(wilderRsi(falling)).toEqual(Option.some(0))
      expect(wilderRsi(Array.from({ length: 20 }, () => 42))).toEqual(Option.some(100))
    })
  })

  describe("properties", () => {
    it.prop("is within 0..100 at every index", [series], ([closes]) => {
      for (const v of wilderRsiSeries(closes)) {
        expect(v).toBeGreaterThanOrEqual(0)
        expect(v).toBeLessThanOrEqual(100)
      }
    })

    it.prop("is 100 when no close is below the one before", [series], ([closes]) => {
      const rising = [...closes].sort((a, b) => a - b)
      for (const v of wilderRsiSeries(rising)) expect(v).toBe(100)
    })

    it.prop(
      "does not change when every close is scaled by the same positive factor",
      [centSeries, FastCheck.double({ min: 1e-3, max: 1e3, noNaN: true, noDefaultInfinity: true })],
      ([closes, factor]) => {
        const scaled = wilderRsiSeries(closes.map((c) => c * factor))
        wilderRsiSeries(closes).forEach((v, i) => expect(scaled[i]).toBeCloseTo(v, 6))
      }
    )

    it.prop("has one value per close from index 14 on", [series], ([closes]) => {
      expect(wilderRsiSeries(closes)).toHaveLength(closes.length - 14)
    })
  })
})
