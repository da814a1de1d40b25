/**
 * Wilder's RSI over a series of closes (docs/ARCHITECTURE.md, "Upstream calls"): simple means of the first
 * `period` changes, then `avg = (prev * (period - 1) + current) / period`.
 */
import { Option } from "effect"

/** Every RSI value of the series, the first at index `period` (aligned with the closes). */
export const wilderRsiSeries = (closes: ReadonlyArray<number>, period = 14): ReadonlyArray<number> => {
  if (closes.length <= period) return []
  let gain = 0
  let loss = 0
  for (let i = 1; i <= period; i++) {
    const change = closes[i]! - closes[i - 1]!
    if (change > 0) gain += change
    else loss -= change
  }
  let avgGain = gain / period
  let avgLoss = loss / period
  const out = [rsiOf(avgGain, avgLoss)]
  for (let i = period + 1; i < closes.length; i++) {
    const change = closes[i]! - closes[i - 1]!
    avgGain = (avgGain * (period - 1) + Math.max(change, 0)) / period
    avgLoss = (avgLoss * (period - 1) + Math.max(-change, 0)) / period
    out.push(rsiOf(avgGain, avgLoss))
  }
  return out
}

const rsiOf = (avgGain: number, avgLoss: number): number =>
  avgLoss === 0 ? 100 : 100 - 100 / (1 + avgGain / avgLoss)

/** The RSI at the last close, or none when the series is shorter than `period + 1` closes. */
export const wilderRsi = (closes: ReadonlyArray<number>, period = 14): Option.Option<number> => {
  const series = wilderRsiSeries(closes, period)
  return series.length === 0 ? Option.none() : Option.some(series[series.length - 1]!)
}
