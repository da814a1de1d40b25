/**
 * The live `MarketData` against the fake upstream (docs/ARCHITECTURE.md, "Upstream calls"): what a
 * round asks for, how each answer is read, what every kind of fault becomes, what stays stale after
 * a partial failure, and when the slower calls (charts, Fear & Greed) are made. The clock is
 * Effect's TestClock, set inside a real UTC day, because the fake's daily closes are dated by the
 * wall clock and RSI uses the points up to today's 00:00 UTC.
 */
import { FetchHttpClient } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import {
  Cause,
  Clock,
  ConfigProvider,
  Context,
  DateTime,
  Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  Logger,
  LogLevel,
  Option,
  type Scope,
  TestClock,
  Tracer
} from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { CacheManager } from "../../src/cache/CacheManager.js"
import { SqliteStoreLive } from "../../src/cache/SqliteStore.js"
import { AppConfig } from "../../src/Config.js"
import { type Endpoint, type MarketFetch, MarketData, type UpstreamError, type UpstreamReason } from "../../src/market/MarketData.js"
import { UpstreamMarketDataLive } from "../../src/market/Upstream.js"
import { FearGreed, MarketView } from "../../src/market/Watchlist.js"
import { VERSION } from "../../src/Version.js"
import { type LogLine, withCapturedLogs } from "../cache/CapturedLogs.js"
import { expectedAsset, expectedRsi } from "../e2e/Market.js"
import {
  Fault,
  type FakeUpstream,
  fearGreedLabel,
  generatedMarket,
  type MarketValues,
  scopedFakeUpstream,
  sparklineOf
} from "../support/FakeUpstream.js"

const ENDPOINTS: ReadonlyArray<Endpoint> = ["coins_markets", "global", "market_chart", "fear_greed"]
const API_KEY = "CG-test-key-5f2b9c1d"
const HOUR = 3_600_000
const DAY = 86_400_000

/** 01:00 UTC of the real day: hours of TestClock rounds stay within the day the fake dates its closes by. */
const morningOfToday = () => Math.floor(Date.now() / DAY) * DAY + HOUR

type Market = Context.Tag.Service<MarketData>
type Env = Readonly<Record<string, string>>

const inMemoryCache = () => CacheManager.over(SqliteStoreLive({ path: ":memory:" }))

const marketLayer = (fake: FakeUpstream, env: Env, cache: Layer.Layer<CacheManager> = inMemoryCache()) =>
  UpstreamMarketDataLive.pipe(
    Layer.provide(Layer.mergeAll(FetchHttpClient.layer, AppConfig.Default, cache)),
    Layer.provide(
      Layer.setConfigProvider(
        ConfigProvider.fromMap(new Map(Object.entries({ ...fake.env, UPSTREAM_TIMEOUT: "200 millis", ...env })))
      )
    )
  )

interface Options {
  readonly env?: Env
  readonly values?: Partial<MarketValues>
  /** Under `it.live`: the real clock, which cannot be set. */
  readonly live?: boolean
}

/**
 * Runs `body` against a fresh fake and a fresh live MarketData pointed at it, with the clock at
 * `morningOfToday()` and every log line captured.
 */
const withMarket = <A, E>(
  body: (fake: FakeUpstream, market: Market, logs: ReadonlyArray<LogLine>) => Effect.Effect<A, E, Scope.Scope>,
  options: Options = {}
) =>
  withCapturedLogs((logs) =>
    Effect.scoped(
      Effect.gen(function*() {
        if (options.live !== true) yield* TestClock.setTime(morningOfToday())
        const fake = yield* scopedFakeUpstream(options.values === undefined ? {} : { values: options.values })
        const market = Context.get(yield* Layer.build(marketLayer(fake, options.env ?? {})), MarketData)
        return yield* body(fake, market, logs)
      })
    )
  )

const failureOf = <A>(exit: Exit.Exit<A, UpstreamError>): UpstreamError => {
  if (Exit.isSuccess(exit)) throw new Error(`expected a failure, got ${JSON.stringify(exit.value)}`)
  return Option.getOrThrowWith(Cause.failureOption(exit.cause), () => new Error(Cause.pretty(exit.cause)))
}

/** The failed call of a round that otherwise went through. */
const failedCall = (result: MarketFetch): UpstreamError =>
  Option.getOrThrowWith(result.failure, () => new Error(`expected a failed call, got problems ${JSON.stringify(result.problems)}`))

/** A quote's market values, to compare with `expectedAsset`. */
const quoteValues = (view: MarketView, currency: string, id: string) => {
  const quote = view.quotes[currency]?.[id]
  if (quote === undefined) return undefined
  return { price: quote.price, change_24h: quote.change_24h, market_cap: quote.market_cap, volume_24h: quote.volume_24h }
}

const expectedValues = (v: MarketValues, id: string, currency: string, firstCurrency = "usd") => {
  const { change_24h, market_cap, price, volume_24h } = expectedAsset(v, id, currency, firstCurrency)
  return { price, change_24h, market_cap, volume_24h }
}

const previousOf = (result: MarketFetch) => Option.some(result.view)

const FOUR = { ASSETS: "bitcoin,ethereum,solana,tether", CURRENCIES: "usd,eur,gbp,jpy" }

describe("Upstream", () => {
  describe("decoding", () => {
    it.effect("reads exactly the fake's values for every asset in every currency, totals, index and RSI", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const result = yield* market.fetch(Option.none())
          const v = fake.values()
          const { view } = result
          expect(view.assets.map((a) => [a.id, a.symbol, a.name])).toEqual([
            ["bitcoin", "btc", "Bitcoin"],
            ["ethereum", "eth", "Ethereum"],
            ["solana", "sol", "Solana"],
            ["tether", "usdt", "Tether"]
          ])
          for (const currency of ["usd", "eur", "gbp", "jpy"]) {
            for (const id of ["bitcoin", "ethereum", "solana", "tether"]) {
              expect(quoteValues(view, currency, id), `${id} in ${currency}`).toEqual(expectedValues(v, id, currency))
            }
            expect(view.totals[currency]).toEqual({
              total_market_cap: v.totals[currency]?.marketCap,
              total_volume: v.totals[currency]?.volume
            })
          }
          for (const id of ["bitcoin", "ethereum", "solana", "tether"]) expect(view.rsi[id]).toBe(expectedRsi(v, id))
          expect(Option.getOrThrow(view.fear_greed)).toMatchObject({ value: 54, label: "Neutral" })
          expect(view.missing).toEqual([])
          expect(view.stale.isEmpty).toBe(true)
          expect(result.failure).toEqual(Option.none())
          expect(result.problems).toEqual([])
          // fetched_at is ours (the clock of the round), last_updated the provider's (30 s before its now).
          const btc = view.quotes["usd"]?.["bitcoin"]
          expect(btc && DateTime.toEpochMillis(btc.fetched_at)).toBe(morningOfToday())
          expect(btc && Math.abs(DateTime.toEpochMillis(btc.last_updated) - (Date.now() - 30_000))).toBeLessThan(10_000)
        }), { env: FOUR }))

    it.effect("makes one coins/markets call per currency, one /global, one /fng/ and the first charts, identified", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          yield* market.fetch(Option.none())
          expect(fake.requests().map((r) => `${r.method} ${r.path}`).sort()).toEqual([
            "GET /api/v3/coins/bitcoin/market_chart",
            "GET /api/v3/coins/ethereum/market_chart",
            "GET /api/v3/coins/markets",
            "GET /api/v3/coins/markets",
            "GET /api/v3/coins/markets",
            "GET /api/v3/coins/markets",
            "GET /api/v3/coins/solana/market_chart",
            "GET /api/v3/coins/tether/market_chart",
            "GET /api/v3/global",
            "GET /fng/"
          ])
          expect(fake.requestsTo("coins_markets").map((r) => r.query)).toEqual(
            expect.arrayContaining(["usd", "eur", "gbp", "jpy"].map((vs_currency) => ({
              vs_currency,
              ids: "bitcoin,ethereum,solana,tether",
              per_page: "250",
              sparkline: "true",
              price_change_percentage: "24h"
            })))
          )
          expect(fake.requestsTo("global")[0]?.query).toEqual({})
          // Daily closes in the first currency only.
          for (const r of fake.requestsTo("market_chart")) expect(r.query).toEqual({ vs_currency: "usd", days: "60", interval: "daily" })
          expect(fake.requestsTo("fear_greed")[0]?.query).toEqual({ limit: "1" })
          for (const request of fake.requests()) {
            expect(request.headers["user-agent"]).toBe(`dashcast/${VERSION}`)
            expect(request.headers["accept"]).toBe("application/json")
          }
        }), { env: FOUR }))

    it.effect("reads CoinGecko's unknowns as null: a market cap of 0, a null 24h change and a null volume", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          fake.setAsset("ethereum", { marketCapUsd: 0, change24h: null, volumeUsd: null })
          const { view } = yield* market.fetch(Option.none())
          expect(quoteValues(view, "usd", "ethereum")).toEqual({
            price: fake.values().assets["ethereum"]?.prices["usd"],
            change_24h: null,
            market_cap: null,
            volume_24h: null
          })
          expect(view.stale.isEmpty).toBe(true)
        }), { env: { ASSETS: "bitcoin,ethereum" } }))

    it.effect("computes RSI-14 from the daily closes up to today's 00:00 UTC and the live price, not the intraday point", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const btc = fake.values().assets["bitcoin"]!
          // An intraday point far from the live price: used, it would move the RSI a lot.
          fake.setAsset("bitcoin", { closes: [...btc.closes.slice(0, -1), (btc.prices["usd"] ?? 0) * 0.5] })
          const { view } = yield* market.fetch(Option.none())
          expect(view.rsi["bitcoin"]).toBe(expectedRsi(fake.values(), "bitcoin"))
          expect(expectedRsi(fake.values(), "bitcoin")).toBeGreaterThan(0)
        })))

    it.effect("accepts a chart of exactly 15 points and refuses 14 with Decode (only that RSI is missing)", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const closes = fake.values().assets["ethereum"]!.closes
          fake.setAsset("bitcoin", { closes: closes.slice(0, 15) })
          fake.setAsset("ethereum", { closes: closes.slice(0, 14) })
          const result = yield* market.fetch(Option.none())
          expect(result.view.rsi["bitcoin"]).toBe(expectedRsi(fake.values(), "bitcoin"))
          expect(result.view.rsi["ethereum"]).toBeUndefined()
          const error = failedCall(result)
          expect(error.endpoint).toBe("market_chart")
          expect(error.target).toBe("ethereum")
          expect(error.reason).toMatchObject({ _tag: "Decode", detail: expect.stringContaining("fewer than 15 price points") })
          expect(error.message).toMatch(/^market_chart\(ethereum\): unexpected response: prices: fewer than 15/)
        }), { env: { ASSETS: "bitcoin,ethereum" } }))

    for (const fearGreed of [101, 54.5, -1]) {
      it.effect(`refuses a fear & greed value of "${fearGreed}" with Decode`, () =>
        withMarket((fake, market) =>
          Effect.gen(function*() {
            fake.setValues({ fearGreed })
            const result = yield* market.fetch(Option.none())
            const error = failedCall(result)
            expect(error.endpoint).toBe("fear_greed")
            expect(error.reason._tag).toBe("Decode")
            expect(result.view.fear_greed).toEqual(Option.none())
          })
        ))
    }

    it.effect("reads fear & greed bounds 0 and 100 with alternative.me's label", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          for (const value of [0, 100]) {
            fake.setValues({ fearGreed: value })
            // Asked again only when due: 0 s to the next value, so due 60 s later.
            const { view } = yield* market.fetch(Option.none())
            expect(Option.getOrThrow(view.fear_greed)).toMatchObject({ value, label: fearGreedLabel(value) })
            yield* TestClock.adjust("61 seconds")
          }
        }), { values: { fearGreedUpdateIn: 0 } }))
  })

  describe("faults", () => {
    const HTTP_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
    /** CoinGecko's own format for `x-ratelimit-reset`, 150 s after the clock of these tests. */
    const RESET = "2015-10-21 07:29:00 +0000"
    /** What a fault is read as: a failed call with this reason, or (a row fault) a quote without a good row. */
    type Expected = { readonly reason: Partial<UpstreamReason> } | { readonly row: true }
    const cases: ReadonlyArray<{ readonly name: string; readonly fault: Fault; readonly expected: (e: Endpoint) => Expected }> = [
      { name: "HTTP 500", fault: Fault.ServerError({}), expected: () => ({ reason: { _tag: "HttpStatus", status: 500 } }) },
      { name: "HTTP 503", fault: Fault.ServerError({ status: 503 }), expected: () => ({ reason: { _tag: "HttpStatus", status: 503 } }) },
      { name: "HTML challenge (403)", fault: Fault.HtmlChallenge({}), expected: () => ({ reason: { _tag: "HttpStatus", status: 403 } }) },
      {
        name: "429 without Retry-After",
        fault: Fault.RateLimited({}),
        expected: () => ({ reason: { _tag: "RateLimited", status: 429, retryAfter: Option.none() } })
      },
      {
        name: "429 with Retry-After seconds",
        fault: Fault.RateLimited({ retryAfter: "120" }),
        expected: () => ({ reason: { _tag: "RateLimited", status: 429, retryAfter: Option.some(Duration.seconds(120)) } })
      },
      {
        name: "429 with Retry-After HTTP-date",
        fault: Fault.RateLimited({ retryAfter: HTTP_DATE }),
        expected: () => ({ reason: { _tag: "RateLimited", status: 429, retryAfter: Option.some(Duration.seconds(90)) } })
      },
      {
        name: "429 with CoinGecko's x-ratelimit-reset",
        fault: Fault.RateLimited({ rateLimitReset: RESET }),
        expected: () => ({ reason: { _tag: "RateLimited", status: 429, retryAfter: Option.some(Duration.seconds(150)) } })
      },
      {
        name: "429 with both headers (the longer wait wins)",
        fault: Fault.RateLimited({ retryAfter: "30", rateLimitReset: RESET }),
        expected: () => ({ reason: { _tag: "RateLimited", status: 429, retryAfter: Option.some(Duration.seconds(150)) } })
      },
      {
        name: "429 with an unparsable Retry-After",
        fault: Fault.RateLimited({ retryAfter: "soon" }),
        expected: () => ({ reason: { _tag: "RateLimited", status: 429, retryAfter: Option.none() } })
      },
      {
        name: "429 with plain-text Throttled",
        fault: Fault.RateLimited({ body: "text", retryAfter: "60" }),
        expected: () => ({ reason: { _tag: "RateLimited", status: 429, retryAfter: Option.some(Duration.seconds(60)) } })
      },
      {
        name: "418 with Retry-After",
        fault: Fault.RateLimited({ status: 418, retryAfter: "30" }),
        expected: () => ({ reason: { _tag: "RateLimited", status: 418, retryAfter: Option.some(Duration.seconds(30)) } })
      },
      {
        name: "200 plain-text Throttled",
        fault: Fault.Throttled(),
        expected: () => ({ reason: { _tag: "Decode", detail: "not JSON: \"Throttled\"" } })
      },
      { name: "200 HTML challenge", fault: Fault.HtmlChallenge({ status: 200 }), expected: () => ({ reason: { _tag: "Decode" } }) },
      { name: "200 {}", fault: Fault.EmptyObject(), expected: () => ({ reason: { _tag: "Decode" } }) },
      { name: "200 malformed JSON", fault: Fault.MalformedJson(), expected: () => ({ reason: { _tag: "Decode" } }) },
      {
        name: "200 empty body",
        fault: Fault.Raw({ status: 200, body: "" }),
        expected: () => ({ reason: { _tag: "Decode", detail: "empty body" } })
      },
      // coins/markets rows are read one by one: bad numbers spoil rows, not the call.
      {
        name: "200 wrong types",
        fault: Fault.WrongTypes(),
        expected: (e) => (e === "coins_markets" ? { row: true } : { reason: { _tag: "Decode" } })
      },
      {
        name: "200 non-numeric strings",
        fault: Fault.NonNumeric(),
        expected: (e) => (e === "coins_markets" ? { row: true } : { reason: { _tag: "Decode" } })
      },
      {
        name: "200 null numbers",
        fault: Fault.NullValues(),
        expected: (e) => (e === "coins_markets" ? { row: true } : { reason: { _tag: "Decode" } })
      },
      { name: "200 provider error body", fault: Fault.ProviderError({}), expected: () => ({ reason: { _tag: "Decode" } }) },
      { name: "dropped connection", fault: Fault.Drop(), expected: () => ({ reason: { _tag: "Network" } }) },
      { name: "connection dropped mid-body", fault: Fault.DropMidBody(), expected: () => ({ reason: { _tag: "Network" } }) }
    ]

    for (const endpoint of ENDPOINTS) {
      describe(endpoint, () => {
        for (const { expected, fault, name } of cases) {
          const outcome = expected(endpoint)
          it.effect(`${name} -> ${"row" in outcome ? "rows refused, call not failed" : outcome.reason._tag}`, () =>
            withMarket((fake, market, logs) =>
              Effect.gen(function*() {
                // HTTP-dates are read against the clock: 90 seconds before the date sent.
                yield* TestClock.setTime(Date.parse(HTTP_DATE) - 90_000)
                fake.fail(endpoint, fault)
                const result = yield* market.fetch(Option.none())
                // No retries inside a round: the schedule decides when to call again. (Bun's fetch itself
                // resends a GET when a reused keep-alive connection is reset, on each pooled connection
                // it has: a Drop may be seen once more per connection the round's other calls opened.)
                const others = fake.requests().filter((r) => r.endpoint !== endpoint).length
                expect(fake.requestsTo(endpoint).length).toBeGreaterThanOrEqual(1)
                expect(fake.requestsTo(endpoint).length).toBeLessThanOrEqual(fault._tag === "Drop" ? 1 + others : 1)
                if ("row" in outcome) {
                  expect(result.failure).toEqual(Option.none())
                  expect(result.problems).toEqual([])
                  expect(result.view.quotes["usd"]).toEqual({})
                  expect(logs.filter((l) => l.level === "WARN" && l.message.includes("the row of bitcoin is not plausible"))).toHaveLength(1)
                  return
                }
                // Every other call answered: the round is published, with this call as its failure.
                const error = failedCall(result)
                expect(error._tag).toBe("UpstreamError")
                expect(error.endpoint).toBe(endpoint)
                expect(error.target).toBe(endpoint === "coins_markets" ? "usd" : endpoint === "market_chart" ? "bitcoin" : undefined)
                expect(error.reason).toMatchObject(outcome.reason)
                expect(error.retryAfter).toEqual(outcome.reason._tag === "RateLimited" ? outcome.reason.retryAfter : Option.none())
                expect(result.problems).toContain(error)
              })
            ))
        }

        it.effect("a hang past UPSTREAM_TIMEOUT -> Timeout", () =>
          withMarket((fake, market) =>
            Effect.gen(function*() {
              fake.fail(endpoint, Fault.Hang())
              const fiber = yield* Effect.fork(market.fetch(Option.none()))
              yield* Effect.promise(() => fake.waitForRequests(1, endpoint))
              yield* TestClock.adjust("200 millis")
              const error = failedCall(yield* Fiber.join(fiber))
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
          const error = failedCall(yield* market.fetch(Option.none()))
          expect(error.reason._tag).toBe("Timeout")
          expect(error.message).toBe("market_chart(bitcoin): timed out after 200ms")
        }), { live: true }))

    it.effect("nothing listening: every call fails with Network and so does the round", () =>
      Effect.gen(function*() {
        const closed = yield* Effect.scoped(scopedFakeUpstream())
        // The fake is stopped now: its port refuses connections.
        const error = yield* Effect.flatMap(MarketData, (market) => Effect.flip(market.fetch(Option.none()))).pipe(
          Effect.provide(marketLayer(closed, {}))
        )
        expect(error.reason._tag).toBe("Network")
        expect(error.endpoint).toBe("coins_markets")
      }))
  })

  describe("API key", () => {
    it.effect("is sent as x-cg-demo-api-key to CoinGecko only, when configured", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          yield* market.fetch(Option.none())
          for (const e of ["coins_markets", "global", "market_chart"] as const) {
            expect(fake.requestsTo(e)).not.toHaveLength(0)
            for (const r of fake.requestsTo(e)) expect(r.headers["x-cg-demo-api-key"]).toBe(API_KEY)
          }
          expect(fake.requestsTo("fear_greed")[0]?.headers["x-cg-demo-api-key"]).toBeUndefined()
        }), { env: { COINGECKO_API_KEY: API_KEY } }))

    for (const env of [{}, { COINGECKO_API_KEY: "" }]) {
      it.effect(`is not sent when ${"COINGECKO_API_KEY" in env ? "empty" : "unset"}`, () =>
        withMarket((fake, market) =>
          Effect.gen(function*() {
            yield* market.fetch(Option.none())
            expect(fake.requests().length).toBe(4)
            for (const r of fake.requests()) expect(r.headers["x-cg-demo-api-key"]).toBeUndefined()
          }), { env }))
    }

    it.effect("never appears in logs, errors or span attributes", () => {
      const attributes: Array<string> = []
      return withMarket((fake, market, logs) =>
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
            const errors: Array<UpstreamError> = []
            fake.fail("market_chart", Fault.RateLimited({}), { times: 1 })
            const first = yield* market.fetch(Option.none())
            errors.push(...first.problems)
            // Two hours on, charts and the index are due again: every call fails once.
            yield* TestClock.adjust("2 hours")
            // One currency's markets call fails, the other answers: the round is published.
            fake.fail("coins_markets", Fault.RateLimited({}), { times: 1, target: "eur" })
            for (const endpoint of ["global", "fear_greed", "market_chart"] as const) fake.fail(endpoint, Fault.RateLimited({}), { times: 1 })
            const second = yield* market.fetch(previousOf(first))
            errors.push(...second.problems)
            // Every request, not once: Bun's fetch retries a GET whose reused connection was reset.
            yield* TestClock.adjust("2 hours")
            for (const endpoint of ENDPOINTS) fake.fail(endpoint, Fault.Drop())
            errors.push(yield* Effect.flip(market.fetch(previousOf(second))))
            fake.clearFaults()
            fake.fail("coins_markets", Fault.NonNumeric(), { times: 1 })
            yield* market.fetch(Option.none())
            return errors
          })
          const errors = yield* Effect.withTracer(exercise, tracer)
          expect(errors.map((e) => e.endpoint)).toEqual(["market_chart", "coins_markets", "global", "fear_greed", "market_chart", "coins_markets"])
          expect(logs.some((l) => l.message.includes("the row of bitcoin is not plausible"))).toBe(true)
          expect(attributes).toContain("http.request.header.x-cg-demo-api-key=<redacted>")
          const seen = [
            ...logs.map((l) => `${l.message} ${JSON.stringify(l.annotations)}`),
            ...attributes,
            ...errors.flatMap((e) => [e.message, String(e), JSON.stringify(e), Cause.pretty(Cause.fail(e))])
          ]
          for (const text of seen) expect(text).not.toContain(API_KEY)
        }), { env: { COINGECKO_API_KEY: API_KEY, CURRENCIES: "usd,eur" } }).pipe(Logger.withMinimumLogLevel(LogLevel.All))
    })
  })

  describe("a provider's wait", () => {
    it.effect("Retry-After holds every CoinGecko call until it expires, and not alternative.me's", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const first = yield* market.fetch(Option.none())
          yield* TestClock.adjust("60 seconds")
          fake.fail("global", Fault.RateLimited({ retryAfter: "30" }), { times: 1 })
          const limited = yield* market.fetch(previousOf(first))
          expect(Option.map(limited.failure, (e) => e.reason._tag)).toEqual(Option.some("RateLimited"))
          expect(yield* market.blockedFor).toEqual(Option.some(Duration.seconds(30)))

          // Inside the wait CoinGecko is not called at all; alternative.me still is (its value is due).
          yield* TestClock.adjust("29 seconds")
          const sent = fake.requests().length
          const held = yield* market.fetch(previousOf(limited))
          expect(fake.requests().slice(sent).map((r) => r.endpoint)).toEqual(["fear_greed"])
          // Held calls make their values stale but are no failure: the wait binds the provider only.
          expect(held.failure).toEqual(Option.none())
          expect(held.problems.map((e) => e.reason._tag)).toEqual(["Blocked", "Blocked"])
          expect(held.problems[0]?.message).toBe("coins_markets(usd): not sent: the provider asked to wait 1s more")
          expect(held.view.stale).toMatchObject({ currencies: ["usd"], totals: ["usd"], rsi: [], fear_greed: false })
          expect(held.view.quotes).toEqual(limited.view.quotes)
          // With nothing new at all (the index is not due again yet), the round itself fails.
          const error = failureOf(yield* Effect.exit(market.fetch(previousOf(held))))
          expect(error.reason).toMatchObject({ _tag: "Blocked" })

          yield* TestClock.adjust("1 seconds")
          expect(yield* market.blockedFor).toEqual(Option.none())
          const after = yield* market.fetch(previousOf(held))
          expect(after.view.stale.isEmpty).toBe(true)
          expect(fake.requestsTo("coins_markets")).toHaveLength(3)
        }), { values: { fearGreedUpdateIn: 10 } }))

    it.effect("a 429 from alternative.me holds the index only: it is stale, the round is no failure", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          fake.fail("fear_greed", Fault.RateLimited({ retryAfter: "60" }), { times: 1 })
          const first = yield* market.fetch(Option.none())
          expect(first.view.fear_greed).toEqual(Option.none())
          expect(yield* market.blockedFor).toEqual(Option.none())
          yield* TestClock.adjust("10 seconds")
          fake.setValues({ fearGreed: 12 })
          // An earlier value is kept and marked stale while the wait lasts.
          const withPrevious = MarketView.make({ ...first.view, fear_greed: Option.some(FearGreed.make({ value: 33, label: "Fear" })) })
          const held = yield* market.fetch(Option.some(withPrevious))
          expect(held.view.stale.fear_greed).toBe(true)
          expect(Option.getOrThrow(held.view.fear_greed)).toMatchObject({ value: 33, label: "Fear" })
          expect(held.failure).toEqual(Option.none())
          expect(fake.requestsTo("fear_greed")).toHaveLength(1)
          yield* TestClock.adjust("50 seconds")
          const after = yield* market.fetch(previousOf(held))
          expect(Option.getOrThrow(after.view.fear_greed)).toMatchObject({ value: 12, label: "Extreme Fear" })
          expect(after.view.stale.isEmpty).toBe(true)
        })))

    it.effect("CoinGecko's x-ratelimit-reset closes CoinGecko until that time", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const now = morningOfToday()
          const reset = new Date(now + 120_000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " +0000")
          expect(reset).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000$/)
          fake.fail("coins_markets", Fault.RateLimited({ rateLimitReset: reset }), { times: 1 })
          const first = yield* market.fetch(Option.none())
          expect(failedCall(first).retryAfter).toEqual(Option.some(Duration.seconds(120)))
          expect(yield* market.blockedFor).toEqual(Option.some(Duration.seconds(120)))
          yield* TestClock.adjust("119 seconds")
          const sent = fake.requests().length
          yield* Effect.exit(market.fetch(previousOf(first)))
          expect(fake.requests().slice(sent).filter((r) => r.endpoint !== "fear_greed")).toEqual([])
          yield* TestClock.adjust("1 seconds")
          expect(yield* market.blockedFor).toEqual(Option.none())
          const after = yield* market.fetch(previousOf(first))
          expect(after.failure).toEqual(Option.none())
          expect(quoteValues(after.view, "usd", "bitcoin")).toEqual(expectedValues(fake.values(), "bitcoin", "usd"))
        })))
  })

  describe("body size", () => {
    it.effect("fails a call with TooLarge past UPSTREAM_MAX_BYTES, streamed or declared, and reads a body under it", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const first = yield* market.fetch(Option.none())
          for (const declareLength of [false, true]) {
            for (const endpoint of ["global", "coins_markets"] as const) {
              fake.fail(endpoint, Fault.Huge({ bytes: 200 * 1024, declareLength }), { times: 1 })
              const failure = failedCall(yield* market.fetch(previousOf(first)))
              expect(failure.reason).toEqual({ _tag: "TooLarge", limit: 100_000 })
              expect(failure.message).toBe(`${endpoint === "global" ? "global" : "coins_markets(usd)"}: body larger than 100000 bytes`)
            }
          }
          // A normal body well under the cap decodes as usual.
          expect((yield* market.fetch(previousOf(first))).view.stale.isEmpty).toBe(true)
        }), { env: { UPSTREAM_MAX_BYTES: "100000" } }))
  })

  describe("partial failure", () => {
    it.effect("keeps the last good values of exactly what failed, names them stale, carries the rate limit first", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const first = yield* market.fetch(Option.none())
          fake.setAsset("bitcoin", { prices: { ...fake.values().assets["bitcoin"]!.prices, usd: 70_001.5 } })
          fake.setValues({ totals: { usd: { marketCap: 3e12, volume: 9e10 } }, fearGreed: 80 })
          fake.fail("global", Fault.ServerError({}))
          fake.fail("fear_greed", Fault.RateLimited({ retryAfter: "60" }))
          yield* TestClock.adjust("61 seconds")
          const result = yield* market.fetch(previousOf(first))
          expect(quoteValues(result.view, "usd", "bitcoin")?.price).toBe(70_001.5)
          expect(result.view.totals).toEqual(first.view.totals)
          expect(result.view.fear_greed).toEqual(first.view.fear_greed)
          expect(result.view.stale).toEqual({ currencies: [], quotes: [], rsi: [], totals: ["usd"], fear_greed: true })
          const failure = failedCall(result)
          expect(failure.endpoint).toBe("fear_greed")
          expect(failure.retryAfter).toEqual(Option.some(Duration.seconds(60)))
          expect(result.problems.map((e) => e.message)).toEqual(["global: HTTP 500", "fear_greed: rate limited (HTTP 429, retry after 1m)"])
        }), { values: { fearGreedUpdateIn: 0 } }))

    it.effect("carries the first failed call when none is a rate limit", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          fake.fail("fear_greed", Fault.ServerError({}))
          fake.fail("market_chart", Fault.EmptyObject())
          const result = yield* market.fetch(Option.none())
          expect(result.problems.map((e) => e.endpoint)).toEqual(["fear_greed", "market_chart"])
          expect(Option.map(result.failure, (e) => e.endpoint)).toEqual(Option.some("fear_greed"))
        })))

    it.effect("a value that never had a good one is absent, not zero, and not stale", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          fake.fail("global", Fault.ServerError({}))
          fake.fail("coins_markets", Fault.ServerError({}), { target: "eur" })
          const result = yield* market.fetch(Option.none())
          expect(result.view.totals).toEqual({})
          expect(Object.keys(result.view.quotes)).toEqual(["usd"])
          expect(result.view.stale.isEmpty).toBe(true)
          expect(result.problems.map((e) => e.message).sort()).toEqual(["coins_markets(eur): HTTP 500", "global: HTTP 500"])
        }), { env: { CURRENCIES: "usd,eur" } }))

    it.effect("fails the whole round when every call failed, even with a previous view", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const first = yield* market.fetch(Option.none())
          yield* TestClock.adjust("2 hours")
          for (const endpoint of ENDPOINTS) fake.fail(endpoint, Fault.ServerError({ status: 502 }))
          const error = failureOf(yield* Effect.exit(market.fetch(previousOf(first))))
          expect(error.message).toBe("coins_markets(usd): HTTP 502")
          expect(fake.requestsTo("market_chart")).toHaveLength(2)
        })))

    it.effect("one currency's call failing: its quotes keep their last good values and are stale, the others are fresh", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const first = yield* market.fetch(Option.none())
          const btc = fake.values().assets["bitcoin"]!
          fake.setAsset("bitcoin", { prices: { usd: btc.prices["usd"]! * 1.01, eur: btc.prices["eur"]! * 1.01, gbp: btc.prices["gbp"]! } })
          fake.fail("coins_markets", Fault.ServerError({}), { target: "eur", times: 1 })
          yield* TestClock.adjust("5 minutes")
          const result = yield* market.fetch(previousOf(first))
          expect(result.view.quotes["eur"]).toEqual(first.view.quotes["eur"])
          expect(quoteValues(result.view, "usd", "bitcoin")).toEqual(expectedValues(fake.values(), "bitcoin", "usd"))
          expect(quoteValues(result.view, "gbp", "bitcoin")).toEqual(expectedValues(fake.values(), "bitcoin", "gbp"))
          const usdFetchedAt = result.view.quotes["usd"]?.["bitcoin"]?.fetched_at
          expect(usdFetchedAt && DateTime.toEpochMillis(usdFetchedAt)).toBe(morningOfToday() + 300_000)
          expect(result.view.stale).toEqual({ currencies: ["eur"], quotes: [], rsi: [], totals: [], fear_greed: false })
          expect(failedCall(result).message).toBe("coins_markets(eur): HTTP 500")
          // The totals come from /global, not from the failed call: eur's are fresh.
          expect(result.view.totals["eur"]).toEqual(first.view.totals["eur"])

          const next = yield* market.fetch(previousOf(result))
          expect(next.view.stale.isEmpty).toBe(true)
          expect(quoteValues(next.view, "eur", "bitcoin")).toEqual(expectedValues(fake.values(), "bitcoin", "eur"))
        }), { env: { CURRENCIES: "usd,eur,gbp" } }))

    it.effect("one implausible row: only that quote is stale, it is logged once, and the round is no failure", () =>
      withMarket((fake, market, logs) =>
        Effect.gen(function*() {
          const first = yield* market.fetch(Option.none())
          const eth = fake.values().assets["ethereum"]!
          fake.setAsset("ethereum", { prices: { ...eth.prices, eur: 2e12 } })
          const rounds: Array<MarketFetch> = [first]
          for (let i = 0; i < 3; i++) {
            yield* TestClock.adjust("5 minutes")
            const result = yield* market.fetch(previousOf(rounds.at(-1)!))
            expect(result.view.quotes["eur"]?.["ethereum"]).toEqual(first.view.quotes["eur"]?.["ethereum"])
            expect(quoteValues(result.view, "usd", "ethereum")).toEqual(expectedValues(fake.values(), "ethereum", "usd"))
            expect(quoteValues(result.view, "eur", "bitcoin")).toEqual(expectedValues(fake.values(), "bitcoin", "eur"))
            expect(result.view.stale).toEqual({ currencies: [], quotes: [["eur", "ethereum"]], rsi: [], totals: [], fear_greed: false })
            expect(result.failure).toEqual(Option.none())
            expect(result.problems).toEqual([])
            rounds.push(result)
          }
          const warnings = logs.filter((l) => l.level === "WARN" && l.message.includes("not plausible"))
          expect(warnings.map((l) => l.message)).toEqual([
            "coins_markets(eur): the row of ethereum is not plausible: current_price: 2000000000000 is above the plausible price maximum 1000000000000"
          ])
          fake.setAsset("ethereum", { prices: eth.prices })
          const healed = yield* market.fetch(previousOf(rounds.at(-1)!))
          expect(healed.view.stale.isEmpty).toBe(true)
          expect(logs.filter((l) => l.message === "quote decodes again")).toHaveLength(1)
        }), { env: { ASSETS: "bitcoin,ethereum", CURRENCIES: "usd,eur" } }))

    it.effect("recovers: the next round without failures has nothing stale", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const first = yield* market.fetch(Option.none())
          fake.fail("global", Fault.ServerError({}), { times: 1 })
          const partial = yield* market.fetch(previousOf(first))
          expect(partial.view.stale.totals).toEqual(["usd"])
          const full = yield* market.fetch(previousOf(partial))
          expect(full.view.stale.isEmpty).toBe(true)
          expect(full.failure).toEqual(Option.none())
          expect(full.view.totals["usd"]?.total_market_cap).toBe(fake.values().totals["usd"]?.marketCap)
        })))
  })

  describe("the watchlist", () => {
    it.effect("an id the provider does not know is missing, warned about once, and never quoted nor charted", () =>
      withMarket((fake, market, logs) =>
        Effect.gen(function*() {
          const first = yield* market.fetch(Option.none())
          yield* TestClock.adjust("2 hours")
          const second = yield* market.fetch(previousOf(first))
          for (const { view } of [first, second]) {
            expect(view.missing).toEqual(["no-such-coin"])
            expect(view.assets.map((a) => a.id)).toEqual(["bitcoin", "ethereum"])
            for (const currency of ["usd", "eur"]) expect(Object.keys(view.quotes[currency] ?? {})).toEqual(["bitcoin", "ethereum"])
            expect(Object.keys(view.rsi)).toEqual(["bitcoin", "ethereum"])
          }
          // The markets call asks for it (that is how its absence is learnt); no chart call does.
          expect(fake.requestsTo("coins_markets")[0]?.query["ids"]).toBe("bitcoin,no-such-coin,ethereum")
          expect(fake.requestsTo("market_chart", "no-such-coin")).toEqual([])
          expect(fake.requestsTo("market_chart")).toHaveLength(4)
          expect(second.failure).toEqual(Option.none())
          const warnings = logs.filter((l) => l.level === "WARN" && l.message.includes("does not know"))
          expect(warnings.map((l) => l.message)).toEqual([
            "the provider does not know the coin id \"no-such-coin\" (ASSETS); it is listed as missing"
          ])
          // An hour's interval: each round may refresh both known assets' closes.
        }), { env: { ASSETS: "bitcoin,no-such-coin,ethereum", CURRENCIES: "usd,eur", UPDATE_INTERVAL: "1 hour" } }))

    it.effect("asks for a page of 250: a 150-asset watchlist gets all 150 rows (the provider's default page is 100)", () => {
      const ids = Array.from({ length: 150 }, (_, i) => `coin-${i}`)
      return withMarket((fake, market) =>
        Effect.gen(function*() {
          const { view } = yield* market.fetch(Option.none())
          expect(fake.requestsTo("coins_markets")).toHaveLength(1)
          expect(view.missing).toEqual([])
          expect(view.assets.map((a) => a.id)).toEqual(ids)
          for (const id of ids) expect(quoteValues(view, "usd", id), id).toEqual(expectedValues(fake.values(), id, "usd"))
        }), { env: { ASSETS: ids.join(","), UPDATE_INTERVAL: "1 hour" }, values: generatedMarket(ids, ["usd"]) })
    })
  })

  describe("slower calls", () => {
    it.effect("asks alternative.me only when its time_until_update says a new value exists, and at least hourly", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          let previous = yield* market.fetch(Option.none())
          const roundAt = (offset: Duration.DurationInput) =>
            Effect.gen(function*() {
              yield* TestClock.setTime(morningOfToday() + Duration.toMillis(offset))
              previous = yield* market.fetch(previousOf(previous))
              return fake.requestsTo("fear_greed").length
            })
          expect(fake.requestsTo("fear_greed")).toHaveLength(1)
          // Next value in 600 s: asked again a minute after it is due.
          expect(yield* roundAt("600 seconds")).toBe(1)
          expect(yield* roundAt("659 seconds")).toBe(1)
          expect(previous.view.stale.fear_greed).toBe(false)
          // Then half a day to the next value: asked again after an hour all the same.
          fake.setValues({ fearGreedUpdateIn: 43_200, fearGreed: 70 })
          expect(yield* roundAt("660 seconds")).toBe(2)
          expect(yield* roundAt("661 seconds")).toBe(2)
          expect(yield* roundAt(Duration.sum("660 seconds", "59 minutes"))).toBe(2)
          expect(yield* roundAt(Duration.sum("660 seconds", "60 minutes"))).toBe(3)
          expect(yield* roundAt(Duration.sum("660 seconds", "61 minutes"))).toBe(3)
          expect(Option.getOrThrow(previous.view.fear_greed)).toMatchObject({ value: 70, label: "Greed" })
        }), { values: { fearGreedUpdateIn: 600 } }))

    it.effect("fetches each asset's closes at most once an hour, fills a cold start fast, then spreads the calls", () => {
      const ids = Array.from({ length: 12 }, (_, i) => `asset-${i}`)
      return withMarket((fake, market) =>
        Effect.gen(function*() {
          const start = morningOfToday()
          const perRound: Array<ReadonlyArray<string>> = []
          const fetchedAt = new Map<string, Array<number>>()
          let previous = Option.none<MarketView>()
          // Four hours of rounds every 5 minutes.
          for (let round = 0; round < 48; round++) {
            const now = start + round * 300_000
            yield* TestClock.setTime(now)
            const seen = fake.requestsTo("market_chart").length
            const result = yield* market.fetch(previous)
            previous = previousOf(result)
            const charted = fake.requestsTo("market_chart").slice(seen).map((r) => r.target ?? "")
            perRound.push(charted)
            for (const id of charted) fetchedAt.set(id, [...(fetchedAt.get(id) ?? []), now])
            // Every asset with closes has a live RSI, whatever round its closes came in.
            for (const id of fetchedAt.keys()) expect(result.view.rsi[id], `RSI of ${id} in round ${round}`).toBe(expectedRsi(fake.values(), id))
          }
          // Cold start: the minute's budget less the round's other calls (10 - 2), then the rest.
          expect([...perRound[0]!].sort()).toEqual(ids.slice(0, 8).sort())
          expect([...perRound[1]!].sort()).toEqual(ids.slice(8).sort())
          // Then at most ceil(12 assets * 5 min / 1 h) = 1 a round: spread, never a burst.
          expect(Math.max(...perRound.slice(2).map((r) => r.length))).toBe(1)
          for (const id of ids) {
            const times = fetchedAt.get(id) ?? []
            const gaps = times.slice(1).map((t, i) => t - times[i]!)
            expect(Math.min(...gaps), `${id}: ${gaps.join(", ")}`).toBeGreaterThanOrEqual(HOUR)
            // And none is left behind: every asset's closes are refreshed about hourly.
            expect(times.length, id).toBeGreaterThanOrEqual(3)
            expect(Math.max(...gaps), `${id}: ${gaps.join(", ")}`).toBeLessThanOrEqual(2 * HOUR)
          }
        }), { env: { ASSETS: ids.join(","), UPDATE_INTERVAL: "5 minutes" }, values: generatedMarket(ids, ["usd"]) })
    })

    it.effect("a key raises the cold-start fill to the Demo plan's 30 calls a minute", () => {
      const ids = Array.from({ length: 50 }, (_, i) => `asset-${i}`)
      return withMarket((fake, market) =>
        Effect.gen(function*() {
          const first = yield* market.fetch(Option.none())
          // 30 a minute less the round's 3 other calls.
          expect(fake.requestsTo("market_chart")).toHaveLength(27)
          yield* TestClock.adjust("5 minutes")
          const second = yield* market.fetch(previousOf(first))
          expect(fake.requestsTo("market_chart")).toHaveLength(50)
          expect(Object.keys(second.view.rsi)).toHaveLength(50)
        }), {
        env: { ASSETS: ids.join(","), CURRENCIES: "usd,eur", UPDATE_INTERVAL: "5 minutes", COINGECKO_API_KEY: API_KEY },
        values: generatedMarket(ids, ["usd", "eur"])
      })
    })

    it.effect("keeps RSI live with the live price between chart calls", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const first = yield* market.fetch(Option.none())
          const before = first.view.rsi["bitcoin"]
          expect(before).toBe(expectedRsi(fake.values(), "bitcoin"))
          const btc = fake.values().assets["bitcoin"]!
          fake.setAsset("bitcoin", { prices: { ...btc.prices, usd: btc.prices["usd"]! * 1.06 } })
          yield* TestClock.adjust("5 minutes")
          const second = yield* market.fetch(previousOf(first))
          expect(fake.requestsTo("market_chart")).toHaveLength(1)
          expect(second.view.rsi["bitcoin"]).toBe(expectedRsi(fake.values(), "bitcoin"))
          expect(second.view.rsi["bitcoin"]).toBeGreaterThan(before ?? 100)
        })))

    it.effect("one asset's chart call failing: only its RSI is stale, still live on its older closes", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const first = yield* market.fetch(Option.none())
          yield* TestClock.adjust("2 hours")
          fake.fail("market_chart", Fault.ServerError({}), { target: "ethereum" })
          const eth = fake.values().assets["ethereum"]!
          fake.setAsset("ethereum", { prices: { ...eth.prices, usd: eth.prices["usd"]! * 0.97 } })
          const second = yield* market.fetch(previousOf(first))
          expect(second.view.stale).toEqual({ currencies: [], quotes: [], rsi: ["ethereum"], totals: [], fear_greed: false })
          expect(second.view.rsi["ethereum"]).toBe(expectedRsi(fake.values(), "ethereum"))
          expect(second.view.rsi["bitcoin"]).toBe(expectedRsi(fake.values(), "bitcoin"))
          expect(failedCall(second).message).toBe("market_chart(ethereum): HTTP 500")
          // It is asked again next round (it stays due), and then nothing is stale.
          fake.clearFaults()
          yield* TestClock.adjust("5 minutes")
          const third = yield* market.fetch(previousOf(second))
          expect(fake.requestsTo("market_chart", "ethereum")).toHaveLength(3)
          expect(third.view.stale.isEmpty).toBe(true)
          // An hour's interval: each round may refresh both assets' closes (ceil(2 * 1 h / 1 h)).
        }), { env: { ASSETS: "bitcoin,ethereum", UPDATE_INTERVAL: "1 hour" } }))

    it.effect("keeps the closes in the cache: a restart over the same cache makes no chart call and has RSI at once", () =>
      Effect.gen(function*() {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dashcast-upstream-"))
        yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
        const cache = () => CacheManager.over(SqliteStoreLive({ path: path.join(dir, "cache.sqlite") }))
        yield* TestClock.setTime(morningOfToday())
        const fake = yield* scopedFakeUpstream()
        const env = { ASSETS: "bitcoin,ethereum" }
        const run = <A>(body: (market: Market) => Effect.Effect<A, UpstreamError>) =>
          Effect.flatMap(MarketData, body).pipe(Effect.provide(marketLayer(fake, env, cache())))
        const first = yield* run((market) => market.fetch(Option.none()))
        expect(fake.requestsTo("market_chart")).toHaveLength(2)
        yield* TestClock.adjust("5 minutes")
        const restarted = yield* run((market) => market.fetch(Option.none()))
        expect(fake.requestsTo("market_chart")).toHaveLength(2)
        expect(restarted.view.rsi).toEqual(first.view.rsi)
        expect(restarted.view.rsi["ethereum"]).toBe(expectedRsi(fake.values(), "ethereum"))
        // The restored closes keep their schedule: due an hour (and their spread) after they were fetched.
        yield* TestClock.adjust("56 minutes")
        yield* run((market) => market.fetch(Option.none()))
        expect(fake.requestsTo("market_chart").map((r) => r.target)).toEqual(["bitcoin", "ethereum", "bitcoin"])
      }).pipe(Effect.scoped))
  })

  describe("in a cluster", () => {
    it.effect("an instance that makes the next round knows from the previous snapshot what another fetched: no repeated hourly calls", () =>
      Effect.gen(function*() {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dashcast-upstream-"))
        yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
        // One L2 shared by two instances (Redis in a real cluster), each with its own L1 and memory.
        const shared = () => CacheManager.over(SqliteStoreLive({ path: path.join(dir, "cache.sqlite") }))
        yield* TestClock.setTime(morningOfToday())
        const fake = yield* scopedFakeUpstream()
        const env = { ASSETS: "bitcoin,ethereum" }
        const leader = Context.get(yield* Layer.build(marketLayer(fake, env, shared())), MarketData)
        const follower = Context.get(yield* Layer.build(marketLayer(fake, env, shared())), MarketData)
        // The follower started long ago: it has no closes and thinks Fear & Greed is due.
        const led = yield* leader.fetch(Option.none())
        expect(fake.requestsTo("market_chart")).toHaveLength(2)
        expect(fake.requestsTo("fear_greed")).toHaveLength(1)
        yield* TestClock.adjust("2 minutes")
        // A force update on the follower, with the snapshot the leader published.
        const forced = yield* follower.fetch(Option.some(led.view))
        expect(fake.requestsTo("market_chart")).toHaveLength(2)
        expect(fake.requestsTo("fear_greed")).toHaveLength(1)
        // It has the leader's closes, so its RSI is the same live RSI.
        expect(forced.view.rsi["ethereum"]).toBe(expectedRsi(fake.values(), "ethereum"))
        expect(forced.view.charts).toEqual(led.view.charts)
      }).pipe(Effect.scoped))
  })

  describe("the call budget", () => {
    const budgetLines = (logs: ReadonlyArray<LogLine>) =>
      logs.filter((l) => l.message.startsWith("upstream call budget") || l.message.includes("CoinGecko calls a minute"))

    it.effect("is logged at start-up with calls an hour, the interval, the assets and whether a key is set", () =>
      withMarket((_fake, _market, logs) =>
        Effect.sync(() => {
          const lines = budgetLines(logs)
          expect(lines.map((l) => [l.level, l.message])).toEqual([[
            "INFO",
            "upstream call budget: about 290 CoinGecko calls an hour (4 a round every 1m, and each of 50 assets' daily closes once an hour), at most 1 an hour to alternative.me; API key not set"
          ]])
          expect(lines[0]?.annotations).toMatchObject({ assets: 50, currencies: 3, coingecko_calls_per_hour: 290, api_key: false })
        }), { env: { ASSETS: Array.from({ length: 50 }, (_, i) => `a${i}`).join(","), CURRENCIES: "usd,eur,gbp", UPDATE_INTERVAL: "1 minute" } }))

    it.effect("warns above the keyless 10 calls a minute and suggests a key", () =>
      withMarket((_fake, _market, logs) =>
        Effect.sync(() => {
          const lines = budgetLines(logs)
          // 180 rounds an hour of 4 calls, and 50 charts: 770 an hour, 12.8 a minute.
          expect(lines.map((l) => [l.level, l.message])).toEqual([
            [
              "INFO",
              "upstream call budget: about 770 CoinGecko calls an hour (4 a round every 20s, and each of 50 assets' daily closes once an hour), at most 1 an hour to alternative.me; API key not set"
            ],
            [
              "WARN",
              "about 12.8 CoinGecko calls a minute is more than the 10 a minute that keyless use tolerates: expect 429s; raise UPDATE_INTERVAL, watch fewer CURRENCIES or set COINGECKO_API_KEY"
            ]
          ])
        }), { env: { ASSETS: Array.from({ length: 50 }, (_, i) => `a${i}`).join(","), CURRENCIES: "usd,eur,gbp", UPDATE_INTERVAL: "20 seconds" } }))

    it.effect("with a key the same settings are within the Demo plan's 30 a minute: no warning", () =>
      withMarket((_fake, _market, logs) =>
        Effect.sync(() => {
          const lines = budgetLines(logs)
          expect(lines.map((l) => l.level)).toEqual(["INFO"])
          expect(lines[0]?.message).toMatch(/about 770 CoinGecko calls an hour .*; API key set$/)
        }), {
        env: {
          ASSETS: Array.from({ length: 50 }, (_, i) => `a${i}`).join(","),
          CURRENCIES: "usd,eur,gbp",
          UPDATE_INTERVAL: "20 seconds",
          COINGECKO_API_KEY: API_KEY
        }
      }))
  })

  describe("price history seeds", () => {
    const TWO = { ASSETS: "bitcoin,ethereum", CURRENCIES: "usd,eur" }
    const seedsOf = (result: MarketFetch, kind: "sparkline" | "closes") =>
      (result.seeds ?? []).filter((s) => s.kind === kind).map((s) => [`${s.currency}/${s.asset}`, s] as const)

    it.effect("hands every series' 7-day sparkline once, hourly up to the quote's time, and each asset's closes once per fetch", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          const first = yield* market.fetch(Option.none())
          const sparklines = new Map(seedsOf(first, "sparkline"))
          expect([...sparklines.keys()].sort()).toEqual(["eur/bitcoin", "eur/ethereum", "usd/bitcoin", "usd/ethereum"])
          const now = yield* Clock.currentTimeMillis
          for (const [key, seed] of sparklines) {
            const [currency = "", asset = ""] = key.split("/")
            const price = fake.values().assets[asset]?.prices[currency] ?? Number.NaN
            // The fake's 168 prices, exactly, one an hour, the last at the quote's time (not after the round).
            expect(seed.points.map(([, p]) => p)).toEqual(sparklineOf(price))
            const quote = first.view.quotes[currency]?.[asset]
            const end = Math.min(now, DateTime.toEpochMillis(quote?.last_updated ?? DateTime.unsafeMake(0)))
            expect(seed.points.map(([t]) => t)).toEqual(Array.from({ length: 168 }, (_, i) => end - (167 - i) * HOUR))
          }
          // The daily closes, in the first currency only, without today's intraday point.
          const closes = new Map(seedsOf(first, "closes"))
          expect([...closes.keys()].sort()).toEqual(["usd/bitcoin", "usd/ethereum"])
          const startOfToday = Math.floor(now / DAY) * DAY
          for (const [key, seed] of closes) {
            const asset = key.split("/")[1] ?? ""
            expect(seed.points.map(([, p]) => p)).toEqual(fake.values().assets[asset]?.closes.slice(0, -1))
            expect(seed.points.every(([t]) => t <= startOfToday)).toBe(true)
          }
          // The next round extends the history with live prices: nothing is seeded again.
          yield* TestClock.adjust("10 minutes")
          const second = yield* market.fetch(previousOf(first))
          expect(second.seeds).toEqual([])
          // Over an hour later closes are fetched again: those are handed again (they fill new days only).
          yield* TestClock.adjust("2 hours")
          const chartsBefore = fake.requestsTo("market_chart").length
          const third = yield* market.fetch(previousOf(second))
          const refetched = fake.requestsTo("market_chart").slice(chartsBefore).map((r) => `usd/${r.target}`)
          expect(refetched.length).toBeGreaterThan(0)
          expect(seedsOf(third, "sparkline")).toEqual([])
          expect(seedsOf(third, "closes").map(([key]) => key).sort()).toEqual(refetched.sort())
        }), { env: TWO }))

    it.effect("a sparkline that does not decode seeds nothing, logged once; its price is still good", () =>
      withMarket((fake, market, logs) =>
        Effect.gen(function*() {
          const bitcoin = fake.values().assets["bitcoin"]!
          fake.setAsset("bitcoin", { sparkline: [64_000, null, 64_100] })
          fake.setAsset("ethereum", { sparkline: [3_000, 2e13] })
          const first = yield* market.fetch(Option.none())
          expect(first.failure).toEqual(Option.none())
          expect(first.view.stale.isEmpty).toBe(true)
          expect(first.view.quotes["usd"]?.["bitcoin"]?.price).toBe(bitcoin.prices["usd"])
          expect(seedsOf(first, "sparkline")).toEqual([])
          const lines = logs.filter((l) => l.message.includes("no usable 7-day sparkline"))
          expect(lines.map((l) => l.message).sort()).toEqual([
            expect.stringMatching(/^coins_markets\(eur\): no usable 7-day sparkline for bitcoin \(1: Expected/),
            expect.stringMatching(/^coins_markets\(eur\): no usable 7-day sparkline for ethereum \(1: .*above the plausible price maximum/),
            expect.stringMatching(/^coins_markets\(usd\): no usable 7-day sparkline for bitcoin/),
            expect.stringMatching(/^coins_markets\(usd\): no usable 7-day sparkline for ethereum/)
          ])
          yield* TestClock.adjust("10 minutes")
          yield* market.fetch(previousOf(first))
          expect(logs.filter((l) => l.message.includes("no usable 7-day sparkline"))).toHaveLength(4)
        }), { env: TWO }))

    it.effect("a currency whose markets call failed is seeded on the first round that answers it", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          fake.fail("coins_markets", Fault.ServerError({}), { target: "eur", times: 1 })
          const first = yield* market.fetch(Option.none())
          expect(seedsOf(first, "sparkline").map(([key]) => key).sort()).toEqual(["usd/bitcoin", "usd/ethereum"])
          yield* TestClock.adjust("10 minutes")
          const second = yield* market.fetch(previousOf(first))
          expect(seedsOf(second, "sparkline").map(([key]) => key).sort()).toEqual(["eur/bitcoin", "eur/ethereum"])
        }), { env: TWO }))
  })

  describe("coalescing", () => {
    it.effect("N concurrent rounds make one request per call and get the same view", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          fake.hold()
          const fibers = yield* Effect.forEach(Array.from({ length: 8 }), () => Effect.fork(market.fetch(Option.none())))
          // The first round's chart calls follow the markets calls: three requests are in flight.
          yield* Effect.promise(() => fake.waitForRequests(3))
          yield* Effect.yieldNow()
          fake.release()
          const results = yield* Fiber.joinAll(fibers)
          expect(results).toHaveLength(8)
          for (const r of results) expect(r.view).toEqual(results[0]?.view)
          for (const e of ENDPOINTS) expect(fake.requestsTo(e), e).toHaveLength(1)
          // Nothing is cached: the next round calls upstream again (charts and the index when due).
          yield* market.fetch(Option.none())
          expect(ENDPOINTS.map((e) => fake.requestsTo(e).length)).toEqual([2, 2, 1, 1])
        })))

    it.effect("N concurrent rounds share one failure too", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          fake.fail("global", Fault.RateLimited({ retryAfter: "30" }))
          fake.hold()
          const fibers = yield* Effect.forEach(Array.from({ length: 5 }), () => Effect.fork(market.fetch(Option.none())))
          yield* Effect.promise(() => fake.waitForRequests(3))
          fake.release()
          const results = yield* Fiber.joinAll(fibers)
          for (const r of results) expect(failedCall(r).retryAfter).toEqual(Option.some(Duration.seconds(30)))
          expect(fake.requestsTo("global")).toHaveLength(1)
          // The 429 closed CoinGecko before the charts were due to be asked: they were not sent.
          expect(fake.requestsTo("market_chart")).toHaveLength(0)
        })))

    it.effect("a caller that gives up does not cancel the shared request for the others", () =>
      withMarket((fake, market) =>
        Effect.gen(function*() {
          fake.hold()
          const quitter = yield* Effect.fork(market.fetch(Option.none()))
          const stayer = yield* Effect.fork(market.fetch(Option.none()))
          yield* Effect.promise(() => fake.waitForRequests(3))
          yield* Fiber.interrupt(quitter)
          fake.release()
          const result = yield* Fiber.join(stayer)
          expect(result.view.stale.isEmpty).toBe(true)
          expect(result.failure).toEqual(Option.none())
          for (const e of ENDPOINTS) expect(fake.requestsTo(e), e).toHaveLength(1)
        })))
  })
})

