/**
 * How long a provider asks not to be called after a 429 (src/market/Upstream/RateLimit.ts): the
 * standard `Retry-After` and CoinGecko's `x-ratelimit-reset`, both relative to the clock.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, FastCheck as fc, Option } from "effect"
import { parseRateLimitReset, parseRetryAfter, waitAskedFor } from "../../src/market/Upstream/RateLimit.js"

const now = Date.parse("Wed, 21 Oct 2015 07:28:00 GMT")

/** A time in CoinGecko's `x-ratelimit-reset` format, in UTC. */
const coingeckoFormat = (at: number) => new Date(at).toISOString().replace("T", " ").replace(/\.\d+Z$/, " +0000")

describe("Retry-After", () => {
  it("reads delay-seconds", () => {
    expect(parseRetryAfter("0", now)).toEqual(Option.some(Duration.seconds(0)))
    expect(parseRetryAfter(" 45 ", now)).toEqual(Option.some(Duration.seconds(45)))
    expect(parseRetryAfter("3600", now)).toEqual(Option.some(Duration.hours(1)))
  })

  it("reads the three HTTP-date forms relative to now, never negative", () => {
    expect(parseRetryAfter("Wed, 21 Oct 2015 07:29:00 GMT", now)).toEqual(Option.some(Duration.seconds(60)))
    expect(parseRetryAfter("Wed, 21 Oct 2015 07:00:00 GMT", now)).toEqual(Option.some(Duration.zero))
    expect(parseRetryAfter("Wednesday, 21-Oct-15 07:30:00 GMT", now)).toEqual(Option.some(Duration.seconds(120)))
    expect(parseRetryAfter("Wed Oct 21 07:28:30 2015", now)).toEqual(Option.some(Duration.seconds(30)))
  })

  it("reads asctime, which names no zone, as GMT whatever the process's time zone", () => {
    const zone = process.env["TZ"]
    try {
      for (const tz of ["UTC", "America/New_York", "Asia/Kolkata"]) {
        process.env["TZ"] = tz
        expect(parseRetryAfter("Wed Oct 21 07:28:30 2015", now), tz).toEqual(Option.some(Duration.seconds(30)))
        expect(parseRetryAfter("Wed Oct  1 07:28:30 2015", now), tz).toEqual(Option.some(Duration.zero))
      }
    } finally {
      if (zone === undefined) delete process.env["TZ"]
      else process.env["TZ"] = zone
    }
  })

  it("is none when absent or unparsable", () => {
    for (const header of [undefined, "", "soon", "-5", "1.5", "12abc", "Someday, never", "2015-10-21 07:29:00 +0000"]) {
      expect(parseRetryAfter(header, now), String(header)).toEqual(Option.none())
    }
  })

  it.prop("delay-seconds are read as they are", [fc.integer({ min: 0, max: 10_000_000 })], ([seconds]) => {
    expect(parseRetryAfter(String(seconds), now)).toEqual(Option.some(Duration.seconds(seconds)))
  })
})

describe("x-ratelimit-reset", () => {
  it("reads CoinGecko's format relative to now", () => {
    expect(parseRateLimitReset("2015-10-21 07:29:00 +0000", now)).toEqual(Option.some(Duration.seconds(60)))
    expect(parseRateLimitReset(" 2015-10-21 08:28:00 +0000 ", now)).toEqual(Option.some(Duration.hours(1)))
  })

  it("honours the offset, with or without a colon", () => {
    // 09:29 at +02:00 is 07:29 UTC; 01:59 at -05:30 is 07:29 UTC.
    expect(parseRateLimitReset("2015-10-21 09:29:00 +0200", now)).toEqual(Option.some(Duration.seconds(60)))
    expect(parseRateLimitReset("2015-10-21 09:29:00 +02:00", now)).toEqual(Option.some(Duration.seconds(60)))
    expect(parseRateLimitReset("2015-10-21 01:59:00 -0530", now)).toEqual(Option.some(Duration.seconds(60)))
  })

  it("reads an ISO-8601 time and epoch seconds, as other APIs send them", () => {
    expect(parseRateLimitReset("2015-10-21T07:30:00Z", now)).toEqual(Option.some(Duration.seconds(120)))
    expect(parseRateLimitReset("2015-10-21T09:30:00+02:00", now)).toEqual(Option.some(Duration.seconds(120)))
    expect(parseRateLimitReset(String(now / 1000 + 90), now)).toEqual(Option.some(Duration.seconds(90)))
  })

  it("is zero for a time already past", () => {
    expect(parseRateLimitReset("2015-10-21 07:00:00 +0000", now)).toEqual(Option.some(Duration.zero))
  })

  it("is none when absent or unparsable; a small number is not taken for a delay", () => {
    for (
      const header of [
        undefined,
        "",
        "soon",
        "120",
        "2015-10-21",
        "2015-10-21 07:29 +0000",
        "2015-10-21 07:29:00",
        "2015-10-21 07:29:00 UTC",
        "21/10/2015 07:29:00 +0000",
        "2015-13-45 07:29:00 +0000"
      ]
    ) {
      expect(parseRateLimitReset(header, now), String(header)).toEqual(Option.none())
    }
  })

  it.prop(
    "a reset k seconds ahead is a wait of k seconds, and one in the past is none to wait",
    [fc.integer({ min: -86_400, max: 86_400 })],
    ([k]) => {
      const at = now + k * 1000
      expect(parseRateLimitReset(coingeckoFormat(at), now)).toEqual(Option.some(Duration.seconds(Math.max(0, k))))
    }
  )
})

describe("the wait a 429 asks for", () => {
  it("is the longer of the two headers", () => {
    expect(waitAskedFor({ "retry-after": "30", "x-ratelimit-reset": "2015-10-21 07:29:00 +0000" }, now)).toEqual(
      Option.some(Duration.seconds(60))
    )
    expect(waitAskedFor({ "retry-after": "300", "x-ratelimit-reset": "2015-10-21 07:29:00 +0000" }, now)).toEqual(
      Option.some(Duration.seconds(300))
    )
  })

  it("is either header alone, an unparsable one ignored, and none without either", () => {
    expect(waitAskedFor({ "retry-after": "30" }, now)).toEqual(Option.some(Duration.seconds(30)))
    expect(waitAskedFor({ "x-ratelimit-reset": "2015-10-21 07:29:00 +0000" }, now)).toEqual(Option.some(Duration.seconds(60)))
    expect(waitAskedFor({ "retry-after": "soon", "x-ratelimit-reset": "2015-10-21 07:29:00 +0000" }, now)).toEqual(
      Option.some(Duration.seconds(60))
    )
    expect(waitAskedFor({ "retry-after": "soon", "x-ratelimit-reset": "later" }, now)).toEqual(Option.none())
    expect(waitAskedFor({}, now)).toEqual(Option.none())
  })
})
