/**
 * How long a provider asks not to be called after a 429: the standard `Retry-After` (RFC 9110
 * 10.2.3), and `x-ratelimit-reset`, which CoinGecko sends as a date such as
 * `2025-07-25 14:54:00 +0000`. Both are read relative to `nowMillis`; the longer wait wins.
 */
import { Duration, Option } from "effect"

/**
 * `Retry-After` as a delay: delay-seconds or an HTTP-date, relative to `nowMillis`. Anything else,
 * or no header, is none: the schedule then uses its own delay.
 */
export const parseRetryAfter = (header: string | undefined, nowMillis: number): Option.Option<Duration.Duration> => {
  if (header === undefined) return Option.none()
  const value = header.trim()
  if (/^\d+$/.test(value)) return Option.some(Duration.seconds(Number(value)))
  // All three HTTP-date forms start with a day name; without this check `Date.parse` takes "1.5".
  if (!/^[A-Za-z]{3,9},? /.test(value)) return Option.none()
  // asctime (`Sun Nov  6 08:49:37 1994`) names no zone, and `Date.parse` would read it in the
  // process's local time zone; HTTP dates are always GMT (RFC 9110 5.6.7).
  const asctime = /^[A-Za-z]{3} [A-Za-z]{3} +\d{1,2} \d\d:\d\d:\d\d \d{4}$/.test(value)
  const at = Date.parse(asctime ? `${value} GMT` : value)
  return Number.isNaN(at) ? Option.none() : Option.some(Duration.millis(Math.max(0, at - nowMillis)))
}

/**
 * `x-ratelimit-reset` as a delay. CoinGecko writes `YYYY-MM-DD HH:MM:SS +HHMM`; an ISO-8601 time
 * and epoch seconds (as other APIs send it) are read too. Anything else is none.
 */
export const parseRateLimitReset = (header: string | undefined, nowMillis: number): Option.Option<Duration.Duration> => {
  if (header === undefined) return Option.none()
  const value = header.trim()
  const at = ((): number => {
    const coingecko = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d) ([+-])(\d\d):?(\d\d)$/.exec(value)
    if (coingecko !== null) return Date.parse(`${coingecko[1]}T${coingecko[2]}${coingecko[3]}${coingecko[4]}:${coingecko[5]}`)
    if (/^\d{4}-\d\d-\d\dT/.test(value)) return Date.parse(value)
    // Epoch seconds; a small number would be a delay in seconds, which this header is not.
    if (/^\d{10}$/.test(value)) return Number(value) * 1000
    return Number.NaN
  })()
  return Number.isNaN(at) ? Option.none() : Option.some(Duration.millis(Math.max(0, at - nowMillis)))
}

/** The wait a 429 asks for: the longer of the two headers, or none. */
export const waitAskedFor = (
  headers: Readonly<Record<string, string | undefined>>,
  nowMillis: number
): Option.Option<Duration.Duration> => {
  const asked = [parseRetryAfter(headers["retry-after"], nowMillis), parseRateLimitReset(headers["x-ratelimit-reset"], nowMillis)]
    .flatMap(Option.toArray)
  return asked.length === 0 ? Option.none() : Option.some(asked.reduce(Duration.max))
}
