/**
 * How the dashboard writes numbers, times and the two indicators' zones. Pure functions, shared by
 * the page and its tests; US English and US dollars throughout, as the data is USD.
 */

const MINUS = "\u2212"

const usd = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 2 })
const usdWhole = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 0 })
const usdCompact = new Intl.NumberFormat("en-US", {
  style: "currency",
  currency: "USD",
  notation: "compact",
  minimumSignificantDigits: 3,
  maximumSignificantDigits: 3
})
const percent = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })
const oneDecimal = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 })

/** `$64,123.45` */
export const formatPrice = (value: number): string => usd.format(value)

/** `$64,123`, for axis labels. */
export const formatPriceShort = (value: number): string => usdWhole.format(value)

/** `$2.35T`, `$85.0B`, `$128B`: three significant digits. */
export const formatCompactUsd = (value: number): string => usdCompact.format(value)

export type Direction = "up" | "down" | "flat"

/** The direction of a change, flat when it rounds to 0.00 %. */
export const direction = (change: number): Direction => {
  const rounded = Math.round(change * 100) / 100
  return rounded > 0 ? "up" : rounded < 0 ? "down" : "flat"
}

/** `+2.34%`, `−1.25%` (a true minus sign), `0.00%`. */
export const formatChange = (change: number): string => {
  const d = direction(change)
  const magnitude = percent.format(Math.abs(change))
  return d === "up" ? `+${magnitude}%` : d === "down" ? `${MINUS}${magnitude}%` : `${percent.format(0)}%`
}

/** `55.3` */
export const formatRsi = (value: number): string => oneDecimal.format(value)

/**
 * alternative.me's classification of its Fear & Greed index. The bands are the ones its published
 * values carry (46 is "Fear", 55 is "Greed", 25 is "Extreme Fear"), which differ from the 0-24 /
 * 25-44 / 45-55 / 56-75 / 76-100 table that circulates elsewhere.
 */
export const FEAR_GREED_BANDS = [
  { key: "extreme-fear", label: "Extreme Fear", from: 0, to: 25 },
  { key: "fear", label: "Fear", from: 26, to: 46 },
  { key: "neutral", label: "Neutral", from: 47, to: 54 },
  { key: "greed", label: "Greed", from: 55, to: 75 },
  { key: "extreme-greed", label: "Extreme Greed", from: 76, to: 100 }
] as const

export type FearGreedBand = (typeof FEAR_GREED_BANDS)[number]

export const fearGreedBand = (value: number): FearGreedBand => {
  const index = Math.round(Math.min(100, Math.max(0, value)))
  return FEAR_GREED_BANDS.find((band) => index <= band.to) ?? FEAR_GREED_BANDS[4]
}

export const RSI_OVERSOLD = 30
export const RSI_OVERBOUGHT = 70

export type RsiZone = "oversold" | "neutral" | "overbought"

/** RSI-14 at or above 70 is overbought, at or below 30 oversold. */
export const rsiZone = (value: number): RsiZone =>
  value >= RSI_OVERBOUGHT ? "overbought" : value <= RSI_OVERSOLD ? "oversold" : "neutral"

export const RSI_ZONE_LABEL: Record<RsiZone, string> = { oversold: "Oversold", neutral: "Neutral", overbought: "Overbought" }

/** `just now`, `12 s ago`, `5 min ago`, `2 h 5 min ago`, `3 d ago`. */
export const formatAge = (millis: number): string => {
  const seconds = Math.max(0, Math.floor(millis / 1000))
  if (seconds < 2) return "just now"
  if (seconds < 60) return `${seconds} s ago`
  const minutes = Math.floor(seconds / 60)
  if (minutes < 60) return `${minutes} min ago`
  const hours = Math.floor(minutes / 60)
  if (hours < 48) return minutes % 60 === 0 ? `${hours} h ago` : `${hours} h ${minutes % 60} min ago`
  return `${Math.floor(hours / 24)} d ago`
}

/** `0:09`, `4:32`, `1:02:03`: a countdown, never below zero. */
export const formatCountdown = (millis: number): string => {
  const total = Math.max(0, Math.ceil(millis / 1000))
  const h = Math.floor(total / 3600)
  const m = Math.floor((total % 3600) / 60)
  const s = total % 60
  const ss = String(s).padStart(2, "0")
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`
}

/** `14:05` in the viewer's time zone, 24-hour clock. */
export const formatClock = (epochMillis: number, withSeconds = false): string =>
  new Date(epochMillis).toLocaleTimeString("en-GB", {
    hour: "2-digit",
    minute: "2-digit",
    ...(withSeconds ? { second: "2-digit" } : {})
  })
