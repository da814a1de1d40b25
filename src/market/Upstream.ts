/**
 * The live `MarketData`: the four upstream calls of DESIGN.md "Upstream calls" (CoinGecko and
 * alternative.me), each decoded with a Schema into values or one typed `UpstreamError`, run
 * concurrently, coalesced per endpoint, and merged with the previous summary when some of them fail.
 */
import { FetchHttpClient, Headers, HttpClient, HttpClientRequest } from "@effect/platform"
import type { HttpClientError, HttpClientResponse } from "@effect/platform"
import {
  Array as Arr,
  Clock,
  DateTime,
  Deferred,
  Duration,
  Effect,
  Either,
  Exit,
  FiberId,
  FiberSet,
  Layer,
  Option,
  ParseResult,
  Redacted,
  Schema,
  Stream
} from "effect"
import { VERSION } from "../Version.js"
import { AppConfig } from "../Config.js"
import { Amount, ChangePercent, Price, Total } from "./Bounds.js"
import { DashboardSummary, type SummaryField } from "./DashboardSummary.js"
import { type Endpoint, MarketData, type Provider, providerOf, UpstreamError, UpstreamReason } from "./MarketData.js"
import { wilderRsi } from "./Rsi.js"
import * as Metrics from "../metrics/Metrics.js"

const USER_AGENT = `dashcast/${VERSION}`
const API_KEY_HEADER = "x-cg-demo-api-key"
const RSI_PERIOD = 14

// ---------------------------------------------------------------------------------------------
// Response bodies: only the fields DESIGN.md names, strictly typed and within the plausibility
// bounds of `Bounds.ts`. A `null`, a numeric string, a missing key or an implausible value is a
// Decode failure, never a default.

/** `bitcoin.usd_24h_change` is documented as nullable; a null fails the call rather than reading 0. */
const SimplePriceBody = Schema.Struct({
  bitcoin: Schema.Struct({
    usd: Price,
    usd_24h_change: ChangePercent
  })
})

/** Totals of the whole crypto market, as the original system showed. */
const GlobalBody = Schema.Struct({
  data: Schema.Struct({
    total_market_cap: Schema.Struct({ usd: Total }),
    total_volume: Schema.Struct({ usd: Amount })
  })
})

const MarketChartBody = Schema.Struct({
  prices: Schema.Array(Schema.Tuple(Schema.Number, Price)).pipe(
    Schema.minItems(RSI_PERIOD + 1, {
      message: () => `fewer than ${RSI_PERIOD + 1} price points, too few for RSI-${RSI_PERIOD}`
    })
  )
})

/** A string holding an integer 0..100; `" 54"`, `"0x10"` or `"54.5"` are not accepted. */
const FearGreedValue = Schema.String.pipe(
  Schema.pattern(/^\d{1,3}$/),
  Schema.compose(Schema.NumberFromString),
  Schema.int(),
  Schema.between(0, 100)
)

/** `metadata` comes first so that a provider error is what the failure reports. */
const FearGreedBody = Schema.Struct({
  metadata: Schema.Struct({ error: Schema.Null }),
  data: Schema.NonEmptyArray(Schema.Struct({ value: FearGreedValue }))
})

// ---------------------------------------------------------------------------------------------
// Errors

/**
 * `Retry-After` as a delay: delay-seconds or an HTTP-date (RFC 9110 10.2.3), relative to `nowMillis`.
 * Anything else, or no header, is none: the schedule then uses its own delay.
 */
export const parseRetryAfter = (
  header: string | undefined,
  nowMillis: number
): Option.Option<Duration.Duration> => {
  if (header === undefined) return Option.none()
  const value = header.trim()
  if (/^\d+$/.test(value)) return Option.some(Duration.seconds(Number(value)))
  // All three HTTP-date forms start with a day name; without this check `Date.parse` takes "1.5".
  if (!/^[A-Za-z]{3,9},? /.test(value)) return Option.none()
  const at = Date.parse(value)
  return Number.isNaN(at) ? Option.none() : Option.some(Duration.millis(Math.max(0, at - nowMillis)))
}

/** A short single-line excerpt of a body that is not what was expected, for the error detail. */
const excerpt = (text: string): string => {
  const line = text.replace(/\s+/g, " ").trim()
  return line.length > 60 ? `${line.slice(0, 60)}...` : line
}

const causeDetail = (cause: unknown): string => {
  const message = cause instanceof Error ? cause.message : String(cause)
  // Bun appends advice after the first sentence ("For more information, pass `verbose: true`...").
  return message.split(/(?<=\.) /)[0] ?? message
}

/**
 * Maps a client failure to the port's error. The `HttpClientError` itself is not kept as the cause:
 * it holds the request, whose headers carry the API key.
 */
const fromHttpError = (endpoint: Endpoint, error: HttpClientError.HttpClientError) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    if (error._tag === "RequestError") {
      return new UpstreamError({ endpoint, reason: UpstreamReason.Network({ detail: causeDetail(error.cause) }), cause: error.cause })
    }
    const status = error.response.status
    if (error.reason === "StatusCode") {
      return new UpstreamError({
        endpoint,
        reason: status === 429 || status === 418
          ? UpstreamReason.RateLimited({ status, retryAfter: parseRetryAfter(error.response.headers["retry-after"], now) })
          : UpstreamReason.HttpStatus({ status })
      })
    }
    // The status line arrived but the body did not: the connection broke while reading it.
    return new UpstreamError({
      endpoint,
      reason: UpstreamReason.Network({ detail: `body of HTTP ${status} not received: ${causeDetail(error.cause)}` }),
      cause: error.cause
    })
  })

/**
 * The body as text, read chunk by chunk and given up as soon as it passes `limit` bytes (a declared
 * `Content-Length` over it is refused before reading): a huge or endless body costs at most `limit`.
 */
const readCapped = (endpoint: Endpoint, response: HttpClientResponse.HttpClientResponse, limit: number) => {
  const tooLarge = new UpstreamError({ endpoint, reason: UpstreamReason.TooLarge({ limit }) })
  const declared = Number(response.headers["content-length"] ?? Number.NaN)
  if (declared > limit) return Effect.fail(tooLarge)
  return response.stream.pipe(
    Stream.catchAll((error) => fromHttpError(endpoint, error)),
    Stream.runFoldEffect({ chunks: [] as Array<Uint8Array>, size: 0 }, (acc, chunk) => {
      const size = acc.size + chunk.byteLength
      if (size > limit) return Effect.fail(tooLarge)
      acc.chunks.push(chunk)
      return Effect.succeed({ chunks: acc.chunks, size })
    }),
    Effect.map(({ chunks }) => new TextDecoder().decode(Buffer.concat(chunks)))
  )
}

const decodeBody = <A, I>(endpoint: Endpoint, schema: Schema.Schema<A, I>) => (text: string) =>
  Effect.try({
    try: (): unknown => JSON.parse(text),
    catch: (cause) =>
      new UpstreamError({
        endpoint,
        reason: UpstreamReason.Decode({ detail: text.trim() === "" ? "empty body" : `not JSON: "${excerpt(text)}"` }),
        cause
      })
  }).pipe(
    Effect.flatMap(Schema.decodeUnknown(schema)),
    Effect.catchTag("ParseError", (cause) => {
      const issue = ParseResult.ArrayFormatter.formatErrorSync(cause)[0]
      const where = issue === undefined || issue.path.length === 0 ? "body" : issue.path.join(".")
      const detail = issue === undefined ? cause.message : `${where}: ${issue.message}`
      return new UpstreamError({ endpoint, reason: UpstreamReason.Decode({ detail }), cause })
    })
  )

/** Which summary fields each call supplies; a failed call makes exactly these stale. */
const fieldsOf: Record<Endpoint, ReadonlyArray<SummaryField>> = {
  simple_price: ["btc_price", "btc_change_24h"],
  global: ["market_cap", "volume_24h"],
  market_chart: ["rsi_14"],
  fear_greed: ["fear_greed_index"]
}

/** The error that explains an attempt best: a rate limit (its `Retry-After` must be honoured), else the first. */
const mostTelling = (failures: Arr.NonEmptyReadonlyArray<UpstreamError>): UpstreamError =>
  Option.getOrElse(Arr.findFirst(failures, (e) => e.reason._tag === "RateLimited"), () => Arr.headNonEmpty(failures))

// ---------------------------------------------------------------------------------------------
// Coalescing

/**
 * Shares one run of `effect` among every caller that asks while it is in flight; the next call after
 * it settles runs it again (nothing is cached). The run is a fiber of `fibers`, so that one caller
 * giving up does not cancel it for the others, and closing the layer interrupts it.
 */
const singleFlight = <A, E>(fibers: FiberSet.FiberSet, effect: Effect.Effect<A, E>): Effect.Effect<A, E> => {
  let inFlight: Deferred.Deferred<A, E> | undefined
  return Effect.uninterruptibleMask((restore) =>
    Effect.suspend(() => {
      if (inFlight !== undefined) return restore(Deferred.await(inFlight))
      const deferred = Deferred.unsafeMake<A, E>(FiberId.none)
      inFlight = deferred
      // Forked fibers inherit the mask: the run itself must stay interruptible (its timeout needs it).
      return Effect.flatMap(FiberSet.run(fibers, Effect.interruptible(Effect.exit(effect))), (fiber) => {
        // An observer, not a finalizer inside the fiber: it also runs if the fiber is interrupted before it starts.
        fiber.addObserver((exit) => {
          inFlight = undefined
          Deferred.unsafeDone(deferred, Exit.flatten(exit))
        })
        return restore(Deferred.await(deferred))
      })
    })
  )
}

// ---------------------------------------------------------------------------------------------
// The service

export const makeUpstreamMarketData = Effect.gen(function*() {
  const config = yield* AppConfig
  const client = yield* HttpClient.HttpClient
  const fibers = yield* FiberSet.make()
  const timeout = config.upstreamTimeout

  /** One pipeline per provider: base URL, identification, only 2xx passes, the key kept out of spans. */
  const upstream = (baseUrl: string, apiKey: Option.Option<Redacted.Redacted>) =>
    client.pipe(
      HttpClient.mapRequest((request) =>
        request.pipe(
          HttpClientRequest.prependUrl(baseUrl),
          HttpClientRequest.setHeader("user-agent", USER_AGENT),
          HttpClientRequest.acceptJson,
          (r) =>
            Option.match(apiKey, {
              onNone: () => r,
              onSome: (key) => HttpClientRequest.setHeader(r, API_KEY_HEADER, Redacted.value(key))
            })
        )
      ),
      HttpClient.filterStatusOk,
      HttpClient.transform((response) =>
        Effect.locallyWith(response, Headers.currentRedactedNames, (names) => [...names, API_KEY_HEADER])
      )
    )
  const coingecko = upstream(config.coingeckoBaseUrl, config.coingeckoApiKey)
  const alternativeMe = upstream(config.fngBaseUrl, Option.none())

  /**
   * When each provider may be called again (epoch ms by `Clock`), from the `Retry-After` of its last
   * 429: until then no call to it is sent, whoever asks (schedule, force update, refresh).
   */
  const blockedUntil = new Map<Provider, number>()
  const blockedFor = (provider: Provider) =>
    Effect.map(Clock.currentTimeMillis, (now) => {
      const wait = (blockedUntil.get(provider) ?? 0) - now
      return wait > 0 ? Option.some(Duration.millis(wait)) : Option.none()
    })
  const block = (provider: Provider, error: UpstreamError) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.sync(() => {
        if (error.reason._tag !== "RateLimited" || Option.isNone(error.reason.retryAfter)) return
        const until = now + Duration.toMillis(error.reason.retryAfter.value)
        blockedUntil.set(provider, Math.max(until, blockedUntil.get(provider) ?? 0))
      }))

  /**
   * One call: request, body as text (at most `UPSTREAM_MAX_BYTES`), Schema, all within
   * `UPSTREAM_TIMEOUT`, and shared while in flight. Not sent while its provider asks to wait.
   */
  const call = <A, I>(
    endpoint: Endpoint,
    client: HttpClient.HttpClient,
    request: HttpClientRequest.HttpClientRequest,
    schema: Schema.Schema<A, I>
  ) => {
    const provider = providerOf[endpoint]
    const sent = client.execute(request).pipe(
      Effect.catchAll((error) => fromHttpError(endpoint, error)),
      // The body is read as text and parsed here so that a broken connection (Network), a body
      // that is too large (TooLarge) and one that is not JSON (Decode) stay apart.
      Effect.flatMap((response) => readCapped(endpoint, response, config.upstreamMaxBytes)),
      Effect.flatMap(decodeBody(endpoint, schema)),
      Effect.timeoutFail({
        duration: timeout,
        onTimeout: () => new UpstreamError({ endpoint, reason: UpstreamReason.Timeout({ after: timeout }) })
      }),
      Effect.tapError((error) => block(provider, error)),
      Metrics.trackUpstream(endpoint),
      Effect.withSpan(`Upstream.${endpoint}`)
    )
    return singleFlight(
      fibers,
      Effect.flatMap(blockedFor(provider), (wait) =>
        Option.match(wait, {
          onNone: () => sent,
          onSome: (retryAfter) =>
            Effect.zipRight(
              Metrics.upstreamError(endpoint, "Blocked"),
              new UpstreamError({ endpoint, reason: UpstreamReason.Blocked({ retryAfter }) })
            )
        }))
    )
  }

  const simplePrice = call(
    "simple_price",
    coingecko,
    HttpClientRequest.get("/api/v3/simple/price", {
      urlParams: {
        ids: "bitcoin",
        vs_currencies: "usd",
        include_market_cap: "true",
        include_24hr_vol: "true",
        include_24hr_change: "true",
        include_last_updated_at: "true"
      }
    }),
    SimplePriceBody
  ).pipe(Effect.map(({ bitcoin }) => ({ btc_price: bitcoin.usd, btc_change_24h: bitcoin.usd_24h_change })))

  const globalMarket = call("global", coingecko, HttpClientRequest.get("/api/v3/global"), GlobalBody).pipe(
    Effect.map(({ data }) => ({ market_cap: data.total_market_cap.usd, volume_24h: data.total_volume.usd }))
  )

  const marketChart = call(
    "market_chart",
    coingecko,
    HttpClientRequest.get("/api/v3/coins/bitcoin/market_chart", {
      urlParams: { vs_currency: "usd", days: "60", interval: "daily" }
    }),
    MarketChartBody
  ).pipe(
    // The schema already demands RSI_PERIOD + 1 points; none here would still be a failure, not a 50.
    Effect.flatMap(({ prices }) =>
      Option.match(wilderRsi(prices.map(([, close]) => close), RSI_PERIOD), {
        onNone: () =>
          new UpstreamError({
            endpoint: "market_chart",
            reason: UpstreamReason.Decode({ detail: `too few price points for RSI-${RSI_PERIOD}` })
          }),
        onSome: (rsi) => Effect.succeed({ rsi_14: rsi })
      })
    )
  )

  const fearGreed = call("fear_greed", alternativeMe, HttpClientRequest.get("/fng/", { urlParams: { limit: "1" } }), FearGreedBody)
    .pipe(Effect.map(({ data }) => ({ fear_greed_index: data[0].value })))

  const fetch = Effect.fn("Upstream.fetch")(function*(previous: Option.Option<DashboardSummary>) {
    const results = yield* Effect.all(
      {
        simple_price: Effect.either(simplePrice),
        global: Effect.either(globalMarket),
        market_chart: Effect.either(marketChart),
        fear_greed: Effect.either(fearGreed)
      },
      { concurrency: "unbounded" }
    )
    const failures = Arr.getLefts([results.simple_price, results.global, results.market_chart, results.fear_greed])

    /** A call's fields, or the previous summary's when the call failed; none when there is no previous. */
    const orPrevious = <A>(result: Either.Either<A, UpstreamError>, fromPrevious: (p: DashboardSummary) => A) =>
      Either.match(result, { onRight: Option.some, onLeft: () => Option.map(previous, fromPrevious) })
    const merged = Option.all({
      price: orPrevious(results.simple_price, (p) => ({ btc_price: p.btc_price, btc_change_24h: p.btc_change_24h })),
      global: orPrevious(results.global, (p) => ({ market_cap: p.market_cap, volume_24h: p.volume_24h })),
      chart: orPrevious(results.market_chart, (p) => ({ rsi_14: p.rsi_14 })),
      fearGreed: orPrevious(results.fear_greed, (p) => ({ fear_greed_index: p.fear_greed_index }))
    })

    // With nothing new at all, the attempt failed: it is not an update that repeats the last one.
    if (Option.isNone(merged) || failures.length === Object.keys(fieldsOf).length) {
      return yield* Arr.isNonEmptyReadonlyArray(failures)
        ? mostTelling(failures)
        : Effect.dieMessage("Upstream.fetch: a field has neither a value nor a failure")
    }

    const staleFields = failures.flatMap((e) => fieldsOf[e.endpoint])
    // A call not sent because its provider asked to wait is no failure of this attempt.
    const failed = failures.filter((e) => e.reason._tag !== "Blocked")
    const summary = DashboardSummary.make({
      ...merged.value.price,
      ...merged.value.global,
      ...merged.value.chart,
      ...merged.value.fearGreed,
      last_updated: yield* DateTime.now
    })
    const partialFailure = Arr.isNonEmptyReadonlyArray(failed) ? Option.some(mostTelling(failed)) : Option.none()
    if (failures.length > 0) {
      yield* Effect.logWarning("some upstream calls failed; their fields keep the previous values").pipe(
        Effect.annotateLogs({ stale_fields: staleFields.join(","), errors: failures.map((e) => e.message).join("; ") })
      )
    }
    return { summary, staleFields, partialFailure }
  }, Effect.annotateLogs({ service: "Upstream" }))

  return MarketData.of({ fetch, blockedFor: blockedFor("coingecko") })
})

/** The live market data; needs an `HttpClient` (tests may provide their own). */
export const UpstreamMarketDataLive: Layer.Layer<MarketData, never, AppConfig | HttpClient.HttpClient> = Layer.scoped(
  MarketData,
  makeUpstreamMarketData
)

/** The live market data over the platform's `fetch`, which is Bun's in the binary. */
export const UpstreamMarketDataFetchLive: Layer.Layer<MarketData, never, AppConfig> = UpstreamMarketDataLive.pipe(
  Layer.provide(FetchHttpClient.layer)
)
