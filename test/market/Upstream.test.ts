import { FetchHttpClient } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import {
  Cause,
  ConfigProvider,
  type Context,
  DateTime,
  Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  Logger,
  LogLevel,
  Option,
  TestClock,
  Tracer
} from "effect"
import { VERSION } from "../../src/Version.js"
import { AppConfig } from "../../src/Config.js"
import { DashboardSummary } from "../../src/market/DashboardSummary.js"
import { type Endpoint, MarketData, type UpstreamError, type UpstreamReason } from "../../src/market/MarketData.js"
import { wilderRsi } from "../../src/market/Rsi.js"
import { parseRetryAfter, UpstreamMarketDataLive } from "../../src/market/Upstream.js"
import { Fault, type FakeUpstream, FakeUpstream as FakeUpstreamResource } from "../support/FakeUpstream.js"

const ENDPOINTS: ReadonlyArray<Endpoint> = ["simple_price", "global", "market_chart", "fear_greed"]
const API_KEY = "CG-test-key-5f2b9c1d"

const marketLayer = (fake: FakeUpstream, env: Record<string, string>) =>
  UpstreamMarketDataLive.pipe(
    Layer.provide(FetchHttpClient.layer),
    Layer.provide(AppConfig.Default),
    Layer.provide(
      Layer.setConfigProvider(
        ConfigProvider.fromMap(new Map(Object.entries({ ...fake.env, UPSTREAM_TIMEOUT: "200 millis", ...env })))
      )
    )
  )

/** Runs `body` against a fresh fake and a fresh live MarketData pointed at it. */
const withMarket = <A, E>(
  body: (fake: FakeUpstream, market: Context.Tag.Service<MarketData>) => Effect.Effect<A, E>,
  env: Record<string, string> = {}
) =>
  Effect.scoped(
    Effect.gen(function*() {
      const fake = yield* FakeUpstreamResource
      return yield* Effect.flatMap(MarketData, (market) => body(fake, market)).pipe(Effect.provide(marketLayer(fake, env)))
    })
  )

const failureOf = <A>(exit: Exit.Exit<A, UpstreamError>): UpstreamError => {
  if (Exit.isSuccess(exit)) throw new Error(`expected a failure, got ${JSON.stringify(exit.value)}`)
  return Option.getOrThrowWith(Cause.failureOption(exit.cause), () => new Error(Cause.pretty(exit.cause)))
}

const previousSummary = (): DashboardSummary =>
  DashboardSummary.make({
    btc_price: 50_000,
    btc_change_24h: -1.25,
    market_cap: 2e12,
    volume_24h: 5e10,
    fear_greed_index: 20,
    rsi_14: 41.5,
    last_updated: DateTime.unsafeMake(0)
  })

describe("Upstream", () => {
  describe("decoding", () => {
    it.effect("returns exactly the values in the fake's response shapes", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const result = yield* market.fetch(Option.none())
          const v = fake.values()
          expect(result.summary.btc_price).toBe(v.btcPrice)
          expect(result.summary.btc_change_24h).toBe(v.btcChange24h)
          expect(result.summary.market_cap).toBe(v.totalMarketCap)
          expect(result.summary.volume_24h).toBe(v.totalVolume)
          expect(result.summary.fear_greed_index).toBe(v.fearGreed)
          expect(result.summary.rsi_14).toBe(Option.getOrThrow(wilderRsi(v.closes)))
          expect(result.staleFields).toEqual([])
          expect(result.partialFailure).toEqual(Option.none())
        })
      ))

    it.effect("makes exactly the four calls of DESIGN.md, once each, with a User-Agent", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          yield* market.fetch(Option.none())
          expect(fake.requests().map((r) => `${r.method} ${r.path}`).sort()).toEqual([
            "GET /api/v3/coins/bitcoin/market_chart",
            "GET /api/v3/global",
            "GET /api/v3/simple/price",
            "GET /fng/"
          ])
          expect(fake.requestsTo("simple_price")[0]?.query).toEqual({
            ids: "bitcoin",
            vs_currencies: "usd",
            include_market_cap: "true",
            include_24hr_vol: "true",
            include_24hr_change: "true",
            include_last_updated_at: "true"
          })
          expect(fake.requestsTo("global")[0]?.query).toEqual({})
          expect(fake.requestsTo("market_chart")[0]?.query).toEqual({ vs_currency: "usd", days: "60", interval: "daily" })
          expect(fake.requestsTo("fear_greed")[0]?.query).toEqual({ limit: "1" })
          for (const request of fake.requests()) {
            expect(request.headers["user-agent"]).toBe(`dashcast/${VERSION}`)
            expect(request.headers["accept"]).toBe("application/json")
          }
        })
      ))

    it.effect("computes RSI-14 over every point, the intraday one included", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const closes = [...fake.values().closes.slice(0, -1), fake.values().closes.at(-1)! * 1.05]
          fake.setValues({ closes })
          const { summary } = yield* market.fetch(Option.none())
          expect(summary.rsi_14).toBe(Option.getOrThrow(wilderRsi(closes)))
          expect(summary.rsi_14).not.toBe(Option.getOrThrow(wilderRsi(closes.slice(0, -1))))
        })
      ))

    it.effect("accepts exactly 15 points and fails with Decode on 14", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          fake.setValues({ closes: fake.values().closes.slice(0, 15) })
          yield* market.fetch(Option.none())
          fake.setValues({ closes: fake.values().closes.slice(0, 14) })
          const error = failureOf(yield* Effect.exit(market.fetch(Option.none())))
          expect(error.endpoint).toBe("market_chart")
          expect(error.reason).toMatchObject({ _tag: "Decode", detail: expect.stringContaining("fewer than 15 price points") })
        })
      ))

    it.effect("fails with Decode when usd_24h_change is null instead of reading 0", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          fake.setValues({ btcChange24h: null })
          const error = failureOf(yield* Effect.exit(market.fetch(Option.none())))
          expect(error.endpoint).toBe("simple_price")
          expect(error.reason).toMatchObject({ _tag: "Decode", detail: expect.stringContaining("bitcoin.usd_24h_change") })
        })
      ))

    for (const fearGreed of [101, 54.5, -1]) {
      it.effect(`fails with Decode on a fear & greed value of "${fearGreed}"`, () =>
        withMarket((fake, market) =>
          Effect.gen(function*() {
            fake.setValues({ fearGreed })
            const error = failureOf(yield* Effect.exit(market.fetch(Option.none())))
            expect(error.endpoint).toBe("fear_greed")
            expect(error.reason._tag).toBe("Decode")
          })
        ))
    }

    it.effect("reads fear & greed bounds 0 and 100", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          fake.setValues({ fearGreed: 0 })
          expect((yield* market.fetch(Option.none())).summary.fear_greed_index).toBe(0)
          fake.setValues({ fearGreed: 100 })
          expect((yield* market.fetch(Option.none())).summary.fear_greed_index).toBe(100)
        })
      ))
  })

  describe("faults", () => {
    const HTTP_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
    const cases: ReadonlyArray<{ readonly name: string; readonly fault: Fault; readonly reason: Partial<UpstreamReason> }> = [
      { name: "HTTP 500", fault: Fault.ServerError({}), reason: { _tag: "HttpStatus", status: 500 } },
      { name: "HTTP 503", fault: Fault.ServerError({ status: 503 }), reason: { _tag: "HttpStatus", status: 503 } },
      { name: "HTML challenge (403)", fault: Fault.HtmlChallenge({}), reason: { _tag: "HttpStatus", status: 403 } },
      {
        name: "429 without Retry-After",
        fault: Fault.RateLimited({}),
        reason: { _tag: "RateLimited", status: 429, retryAfter: Option.none() }
      },
      {
        name: "429 with Retry-After seconds",
        fault: Fault.RateLimited({ retryAfter: "120" }),
        reason: { _tag: "RateLimited", status: 429, retryAfter: Option.some(Duration.seconds(120)) }
      },
      {
        name: "429 with Retry-After HTTP-date",
        fault: Fault.RateLimited({ retryAfter: HTTP_DATE }),
        reason: { _tag: "RateLimited", status: 429, retryAfter: Option.some(Duration.seconds(90)) }
      },
      {
        name: "429 with an unparsable Retry-After",
        fault: Fault.RateLimited({ retryAfter: "soon" }),
        reason: { _tag: "RateLimited", status: 429, retryAfter: Option.none() }
      },
      {
        name: "429 with plain-text Throttled",
        fault: Fault.RateLimited({ body: "text", retryAfter: "60" }),
        reason: { _tag: "RateLimited", status: 429, retryAfter: Option.some(Duration.seconds(60)) }
      },
      {
        name: "418 with Retry-After",
        fault: Fault.RateLimited({ status: 418, retryAfter: "30" }),
        reason: { _tag: "RateLimited", status: 418, retryAfter: Option.some(Duration.seconds(30)) }
      },
      { name: "200 plain-text Throttled", fault: Fault.Throttled(), reason: { _tag: "Decode", detail: "not JSON: \"Throttled\"" } },
      { name: "200 HTML challenge", fault: Fault.HtmlChallenge({ status: 200 }), reason: { _tag: "Decode" } },
      { name: "200 {}", fault: Fault.EmptyObject(), reason: { _tag: "Decode" } },
      { name: "200 malformed JSON", fault: Fault.MalformedJson(), reason: { _tag: "Decode" } },
      { name: "200 empty body", fault: Fault.Raw({ status: 200, body: "" }), reason: { _tag: "Decode", detail: "empty body" } },
      { name: "200 wrong types", fault: Fault.WrongTypes(), reason: { _tag: "Decode" } },
      { name: "200 non-numeric strings", fault: Fault.NonNumeric(), reason: { _tag: "Decode" } },
      { name: "200 null numbers", fault: Fault.NullValues(), reason: { _tag: "Decode" } },
      { name: "200 provider error body", fault: Fault.ProviderError({}), reason: { _tag: "Decode" } },
      { name: "dropped connection", fault: Fault.Drop(), reason: { _tag: "Network" } },
      { name: "connection dropped mid-body", fault: Fault.DropMidBody(), reason: { _tag: "Network" } }
    ]

    for (const endpoint of ENDPOINTS) {
      describe(endpoint, () => {
        for (const { fault, name, reason } of cases) {
          it.effect(`${name} -> ${reason._tag}`, () =>
            withMarket((fake, market) =>
              Effect.gen(function*() {
                // HTTP-dates are read against the clock: 90 seconds before the date sent.
                yield* TestClock.setTime(Date.parse(HTTP_DATE) - 90_000)
                fake.fail(endpoint, fault)
                const error = failureOf(yield* Effect.exit(market.fetch(Option.none())))
                expect(error._tag).toBe("UpstreamError")
                expect(error.endpoint).toBe(endpoint)
                expect(error.reason).toMatchObject(reason)
                expect(error.retryAfter).toEqual(reason._tag === "RateLimited" ? reason.retryAfter : Option.none())
                // No retries inside a fetch: the schedule decides when to call again. (Bun's fetch itself
                // resends a GET once if a reused keep-alive connection is reset: Drop may be seen twice.)
                for (const e of ENDPOINTS) {
                  expect(fake.requestsTo(e).length).toBeLessThanOrEqual(e === endpoint && fault._tag === "Drop" ? 2 : 1)
                  expect(fake.requestsTo(e).length).toBeGreaterThanOrEqual(1)
                }
              })
            ))
        }

        it.effect("a hang past UPSTREAM_TIMEOUT -> Timeout", () =>
          withMarket((fake, market) =>
            Effect.gen(function*() {
              fake.fail(endpoint, Fault.Hang())
              const fiber = yield* Effect.fork(Effect.exit(market.fetch(Option.none())))
              yield* Effect.promise(() => fake.waitForRequests(1, endpoint))
              yield* TestClock.adjust("200 millis")
              const error = failureOf(yield* Fiber.join(fiber))
              expect(error.endpoint).toBe(endpoint)
              expect(error.reason).toEqual({ _tag: "Timeout", after: Duration.millis(200) })
            })
          ))
      })
    }

    it.live("a hang ends with Timeout on the real clock too", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          fake.fail("market_chart", Fault.Hang())
          const error = failureOf(yield* Effect.exit(market.fetch(Option.none())))
          expect(error.reason._tag).toBe("Timeout")
        })
      ))

    it.effect("a transport error (nothing listening) -> Network", () =>
      Effect.gen(function*() {
        const closed = yield* Effect.scoped(Effect.map(FakeUpstreamResource, (fake) => fake))
        // The fake is stopped now: its port refuses connections.
        const error = yield* Effect.flatMap(MarketData, (market) => Effect.flip(market.fetch(Option.none()))).pipe(
          Effect.provide(marketLayer(closed, {}))
        )
        expect(error.reason._tag).toBe("Network")
      }))
  })

  describe("Retry-After", () => {
    const now = Date.parse("Wed, 21 Oct 2015 07:28:00 GMT")
    it("reads delay-seconds", () => {
      expect(parseRetryAfter("0", now)).toEqual(Option.some(Duration.seconds(0)))
      expect(parseRetryAfter(" 45 ", now)).toEqual(Option.some(Duration.seconds(45)))
    })
    it("reads the three HTTP-date forms relative to now, never negative", () => {
      expect(parseRetryAfter("Wed, 21 Oct 2015 07:29:00 GMT", now)).toEqual(Option.some(Duration.seconds(60)))
      expect(parseRetryAfter("Wed, 21 Oct 2015 07:00:00 GMT", now)).toEqual(Option.some(Duration.zero))
      expect(parseRetryAfter("Wednesday, 21-Oct-15 07:30:00 GMT", now)).toEqual(Option.some(Duration.seconds(120)))
    })
    it("is none when absent or unparsable", () => {
      for (const header of [undefined, "", "soon", "-5", "1.5", "12abc", "Someday, never"]) {
        expect(parseRetryAfter(header, now)).toEqual(Option.none())
      }
    })
  })

  describe("API key", () => {
    it.effect("is sent as x-cg-demo-api-key to CoinGecko only, when configured", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          yield* market.fetch(Option.none())
          for (const e of ["simple_price", "global", "market_chart"] as const) {
            expect(fake.requestsTo(e)[0]?.headers["x-cg-demo-api-key"]).toBe(API_KEY)
          }
          expect(fake.requestsTo("fear_greed")[0]?.headers["x-cg-demo-api-key"]).toBeUndefined()
        }), { COINGECKO_API_KEY: API_KEY }))

    for (const env of [{}, { COINGECKO_API_KEY: "" }]) {
      it.effect(`is not sent when ${"COINGECKO_API_KEY" in env ? "empty" : "unset"}`, () =>
        withMarket((fake, market) =>
          Effect.gen(function*() {
            yield* market.fetch(Option.none())
            for (const r of fake.requests()) expect(r.headers["x-cg-demo-api-key"]).toBeUndefined()
          }), env))
    }

    it.effect("never appears in logs, errors or span attributes", () => {
      const lines: Array<string> = []
      const attributes: Array<string> = []
      const capture = Logger.replace(Logger.defaultLogger, Logger.make((options) => lines.push(Logger.logfmtLogger.log(options))))
      return withMarket((fake, market) =>
        Effect.gen(function*() {
          const base = yield* Effect.tracer
          const tracer = Tracer.make({
            span: (name, parent, context, links, startTime, kind, options) => {
              const span = base.span(name, parent, context, links, startTime, kind, options)
              const attribute = span.attribute.bind(span)
              span.attribute = (key, value) => {
                attributes.push(`${key}=${String(value)}`)
                attribute(key, value)
              }
              return span
            },
            context: (f, fiber) => base.context(f, fiber)
          })
          const exercise = Effect.gen(function*() {
            const previous = (yield* market.fetch(Option.none())).summary
            const errors: Array<UpstreamError> = []
            for (const endpoint of ENDPOINTS) {
              fake.fail(endpoint, Fault.RateLimited({}), { times: 1 })
              const partial = yield* market.fetch(Option.some(previous))
              errors.push(...Option.toArray(partial.partialFailure))
            }
            // Every request, not once: Bun's fetch retries a GET whose reused connection was reset.
            for (const endpoint of ENDPOINTS) fake.fail(endpoint, Fault.Drop())
            errors.push(yield* Effect.flip(market.fetch(Option.some(previous))))
            fake.clearFaults()
            fake.fail("simple_price", Fault.NonNumeric(), { times: 1 })
            errors.push(yield* Effect.flip(market.fetch(Option.none())))
            return errors
          })
          const errors = yield* Effect.withTracer(exercise, tracer)
          expect(errors).toHaveLength(6)
          expect(lines.length).toBeGreaterThan(0)
          expect(attributes).toContain("http.request.header.x-cg-demo-api-key=<redacted>")
          const seen = [
            ...lines,
            ...attributes,
            ...errors.flatMap((e) => [e.message, String(e), JSON.stringify(e), Cause.pretty(Cause.fail(e))])
          ]
          for (const text of seen) expect(text).not.toContain(API_KEY)
        }), { COINGECKO_API_KEY: API_KEY }).pipe(
          Effect.provide(capture),
          Logger.withMinimumLogLevel(LogLevel.All)
        )
    })
  })

  describe("a provider's Retry-After", () => {
    it.effect("holds every call to that provider until it expires, and no other provider's", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const previous = previousSummary()
          fake.fail("global", Fault.RateLimited({ retryAfter: "30" }), { times: 1 })
          const limited = yield* market.fetch(Option.some(previous))
          expect(Option.map(limited.partialFailure, (e) => e.reason._tag)).toEqual(Option.some("RateLimited"))
          expect(yield* market.blockedFor).toEqual(Option.some(Duration.seconds(30)))

          yield* TestClock.adjust("29 seconds")
          const sent = fake.requests().length
          // Inside the wait: CoinGecko is not called at all; alternative.me still is.
          const held = yield* market.fetch(Option.some(previous))
          expect(held.staleFields).toEqual(["btc_price", "btc_change_24h", "market_cap", "volume_24h", "rsi_14"])
          expect(fake.requests().slice(sent).map((r) => r.endpoint)).toEqual(["fear_greed"])
          // With nothing to fall back on, the held calls are the fetch's failure.
          const error = failureOf(yield* Effect.exit(market.fetch(Option.none())))
          expect(error.reason).toMatchObject({ _tag: "Blocked" })
          expect(error.message).toMatch(/not sent: the provider asked to wait 1s more/)

          yield* TestClock.adjust("1 seconds")
          expect(yield* market.blockedFor).toEqual(Option.none())
          const after = yield* market.fetch(Option.some(previous))
          expect(after.staleFields).toEqual([])
        })
      ))

    it.effect("a call held by another provider's wait makes its fields stale, but is no failure", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const previous = previousSummary()
          fake.fail("fear_greed", Fault.RateLimited({ retryAfter: "60" }), { times: 1 })
          yield* market.fetch(Option.some(previous))
          expect(yield* market.blockedFor).toEqual(Option.none())
          const held = yield* market.fetch(Option.some(previous))
          expect(held.staleFields).toEqual(["fear_greed_index"])
          expect(held.partialFailure).toEqual(Option.none())
          expect(held.summary.fear_greed_index).toBe(previous.fear_greed_index)
        })
      ))
  })

  describe("body size", () => {
    it.effect("fails with TooLarge past UPSTREAM_MAX_BYTES, streamed or declared, and reads a body just under it", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const previous = previousSummary()
          for (const declareLength of [false, true]) {
            fake.fail("global", Fault.Huge({ bytes: 200 * 1024, declareLength }), { times: 1 })
            const result = yield* market.fetch(Option.some(previous))
            const failure = Option.getOrThrow(result.partialFailure)
            expect(failure.reason).toEqual({ _tag: "TooLarge", limit: 100_000 })
            expect(failure.message).toBe("global: body larger than 100000 bytes")
          }
          // A normal body well under the cap decodes as usual.
          expect((yield* market.fetch(Option.some(previous))).staleFields).toEqual([])
        }), { UPSTREAM_MAX_BYTES: "100000" }))
  })

  describe("partial failure", () => {
    it.effect("keeps previous values for failed calls, lists them stale, carries the rate limit first", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const previous = previousSummary()
          fake.fail("global", Fault.ServerError({}))
          fake.fail("fear_greed", Fault.RateLimited({ retryAfter: "60" }))
          const result = yield* market.fetch(Option.some(previous))
          const v = fake.values()
          expect(result.summary).toMatchObject({
            btc_price: v.btcPrice,
            btc_change_24h: v.btcChange24h,
            market_cap: previous.market_cap,
            volume_24h: previous.volume_24h,
            fear_greed_index: previous.fear_greed_index,
            rsi_14: Option.getOrThrow(wilderRsi(v.closes))
          })
          expect(result.staleFields).toEqual(["market_cap", "volume_24h", "fear_greed_index"])
          const failure = Option.getOrThrow(result.partialFailure)
          expect(failure.endpoint).toBe("fear_greed")
          expect(failure.retryAfter).toEqual(Option.some(Duration.seconds(60)))
        })
      ))

    it.effect("carries the first failure in endpoint order when none is a rate limit", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          fake.fail("fear_greed", Fault.ServerError({}))
          fake.fail("market_chart", Fault.EmptyObject())
          const result = yield* market.fetch(Option.some(previousSummary()))
          expect(result.staleFields).toEqual(["rsi_14", "fear_greed_index"])
          expect(Option.map(result.partialFailure, (e) => e.endpoint)).toEqual(Option.some("market_chart"))
        })
      ))

    it.effect("fails the whole fetch when a failed field has no previous value", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          fake.fail("global", Fault.ServerError({}))
          fake.fail("fear_greed", Fault.RateLimited({ retryAfter: "7" }))
          const error = failureOf(yield* Effect.exit(market.fetch(Option.none())))
          expect(error.endpoint).toBe("fear_greed")
          expect(error.retryAfter).toEqual(Option.some(Duration.seconds(7)))
        })
      ))

    it.effect("fails the whole fetch when every call failed, even with a previous summary", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          for (const endpoint of ENDPOINTS) fake.fail(endpoint, Fault.ServerError({ status: 502 }))
          const error = failureOf(yield* Effect.exit(market.fetch(Option.some(previousSummary()))))
          expect(error.endpoint).toBe("simple_price")
          expect(error.reason).toEqual({ _tag: "HttpStatus", status: 502 })
        })
      ))

    it.effect("recovers: the next successful fetch has no stale fields", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          fake.fail("global", Fault.ServerError({}), { times: 1 })
          const partial = yield* market.fetch(Option.some(previousSummary()))
          expect(partial.staleFields).toEqual(["market_cap", "volume_24h"])
          const full = yield* market.fetch(Option.some(partial.summary))
          expect(full.staleFields).toEqual([])
          expect(full.partialFailure).toEqual(Option.none())
          expect(full.summary.market_cap).toBe(fake.values().totalMarketCap)
        })
      ))
  })

  describe("coalescing", () => {
    it.effect("N concurrent fetches make one request per endpoint and get the same summary", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          fake.hold()
          const fibers = yield* Effect.forEach(Array.from({ length: 8 }), () => Effect.fork(market.fetch(Option.none())))
          yield* Effect.promise(() => fake.waitForRequests(4))
          yield* Effect.yieldNow()
          fake.release()
          const results = yield* Fiber.joinAll(fibers)
          expect(results).toHaveLength(8)
          for (const r of results) expect(r.summary).toEqual(results[0]?.summary)
          for (const e of ENDPOINTS) expect(fake.requestsTo(e)).toHaveLength(1)
          // Nothing is cached: the next fetch calls upstream again.
          yield* market.fetch(Option.none())
          for (const e of ENDPOINTS) expect(fake.requestsTo(e)).toHaveLength(2)
        })
      ))

    it.effect("N concurrent fetches share one failure too", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          fake.fail("global", Fault.RateLimited({ retryAfter: "30" }))
          fake.hold()
          const fibers = yield* Effect.forEach(Array.from({ length: 5 }), () => Effect.fork(Effect.flip(market.fetch(Option.none()))))
          yield* Effect.promise(() => fake.waitForRequests(4))
          fake.release()
          const errors = yield* Fiber.joinAll(fibers)
          for (const e of errors) expect(e.retryAfter).toEqual(Option.some(Duration.seconds(30)))
          for (const e of ENDPOINTS) expect(fake.requestsTo(e)).toHaveLength(1)
        })
      ))

    it.effect("a caller that gives up does not cancel the shared request for the others", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          fake.hold()
          const quitter = yield* Effect.fork(market.fetch(Option.none()))
          const stayer = yield* Effect.fork(market.fetch(Option.none()))
          yield* Effect.promise(() => fake.waitForRequests(4))
          yield* Fiber.interrupt(quitter)
          fake.release()
          const result = yield* Fiber.join(stayer)
          expect(result.staleFields).toEqual([])
          for (const e of ENDPOINTS) expect(fake.requestsTo(e)).toHaveLength(1)
        })
      ))
  })
})
