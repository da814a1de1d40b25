/**
 * How the pages write numbers, times and the two indicators' zones. Pure functions, shared by the
 * watchlist, the embedded card and their tests. English words and digits throughout; money follows
 * its currency: its symbol (€, £, ¥, CHF), its usual decimals (none for yen), and enough significant
 * digits for coins worth a fraction of a unit.
 */

const MINUS = "\u2212"
const LOCALE = "en-US"

const percent = new Intl.NumberFormat(LOCALE, { minimumFractionDigits: 2, maximumFractionDigits: 2 })
const oneDecimal = new Intl.NumberFormat(LOCALE, { minimumFractionDigits: 1, maximumFractionDigits: 1 })

type MoneyStyle = "whole" | "compact" | "small" | `fixed${number}`

const formats = new Map<string, Intl.NumberFormat | undefined>()

/**
 * The number format of a style in `currency` (a CoinGecko vs-currency such as `usd`, `jpy`, `btc`).
 * Undefined for a code `Intl` does not take as a currency (`sats`, `bits`): those are written as a
 * number and the code.
 */
const moneyFormat = (currency: string, style: MoneyStyle): Intl.NumberFormat | undefined => {
  const key = `${currency}/${style}`
  if (formats.has(key)) return formats.get(key)
  let format: Intl.NumberFormat | undefined
  try {
    format = new Intl.NumberFormat(LOCALE, { style: "currency", currency: currency.toUpperCase(), ...optionsOf(style) })
  } catch {
    format = undefined
  }
  formats.set(key, format)
  return format
}

const optionsOf = (style: MoneyStyle): Intl.NumberFormatOptions => {
  if (style === "compact") return { notation: "compact", minimumSignificantDigits: 3, maximumSignificantDigits: 3 }
  if (style === "whole") return { minimumFractionDigits: 0, maximumFractionDigits: 0 }
  if (style === "small") return { minimumSignificantDigits: 2, maximumSignificantDigits: 4 }
  const digits = Number(style.slice("fixed".length))
  return { minimumFractionDigits: digits, maximumFractionDigits: digits }
}

const plainFormats = new Map<MoneyStyle, Intl.NumberFormat>()
const plainFormat = (style: MoneyStyle) => {
  let format = plainFormats.get(style)
  if (format === undefined) {
    format = new Intl.NumberFormat(LOCALE, optionsOf(style))
    plainFormats.set(style, format)
  }
  return format
}

const money = (value: number, currency: string, style: MoneyStyle): string => {
  const format = moneyFormat(currency, style)
  return format === undefined ? `${plainFormat(style).format(value)} ${currency.toUpperCase()}` : format.format(value)
}

/** The currency's usual decimals: 2 for the dollar and the euro, 0 for the yen (2 for codes Intl does not know). */
const usualDecimals = (currency: string): number => {
  try {
    return new Intl.NumberFormat(LOCALE, { style: "currency", currency: currency.toUpperCase() }).resolvedOptions().maximumFractionDigits ?? 2
  } catch {
    return 2
  }
}

/**
 * A price as a ticker shows it: `$64,123.45`, `€3,231.12`, `¥9,638,740` (the yen's usual 0
 * decimals), `¥18.5` (at least three significant digits), `$0.5512`, `$0.00001823` (under one unit:
 * four significant digits).
 */
export const formatPrice = (value: number, currency = "usd"): string => {
  const magnitude = Math.abs(value)
  if (magnitude < 1) return money(value, currency, "small")
  const needed = Math.max(0, 2 - Math.floor(Math.log10(magnitude)))
  return money(value, currency, `fixed${Math.max(usualDecimals(currency), needed)}`)
}

/** `$64,123`, `€0.5512`: an axis label, whole units from 100 up. */
export const formatPriceShort = (value: number, currency = "usd"): string =>
  Math.abs(value) >= 100 ? money(value, currency, "whole") : formatPrice(value, currency)

/** `$2.35T`, `€85.0B`, `¥408T`: three significant digits. */
export const formatCompactMoney = (value: number, currency = "usd"): string => money(value, currency, "compact")

/** `$2.35T`: the US dollar case of `formatCompactMoney`. */
export const formatCompactUsd = (value: number): string => formatCompactMoney(value, "usd")

/** The currency's code as people read it: `USD`, `EUR`, `BTC`. */
export const currencyCode = (currency: string): string => currency.toUpperCase()

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

/** `Mon 14` (7 days) or `14 Nov` (30 days) in the viewer's time zone: a day on a chart's axis. */
export const formatDay = (epochMillis: number, withWeekday: boolean): string =>
  withWeekday
    ? new Date(epochMillis).toLocaleDateString("en-GB", { weekday: "short", day: "numeric" })
    : new Date(epochMillis).toLocaleDateString("en-GB", { day: "numeric", month: "short" })

/** `14:05` in the viewer's time zone, 24-hour clock. */
export const formatClock = (epochMillis: number, withSeconds = false): string =>
  new Date(epochMillis).toLocaleTimeString("en-GB", {
    hour: "2-digit",
    minute: "2-digit",
    ...(withSeconds ? { second: "2-digit" } : {})
  })
