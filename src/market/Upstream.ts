/**
 * The live `MarketData` (docs/ARCHITECTURE.md, "Upstream calls"): per round one `coins/markets`
 * call per currency for every watched asset at once, one `/global`, alternative.me's index only
 * when a new value exists, and a few daily-closes calls for RSI (each asset's at most once an hour).
 * Every body is read with a size cap and decoded with a Schema into values or one typed
 * `UpstreamError`; a failed call keeps the last good values of exactly what it feeds. It also
 * hands the price history what the provider already had: each series' 7-day sparkline once, each
 * asset's daily closes when new.
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
  Queue,
  Redacted,
  Schema,
  Stream
} from "effect"
import { CacheManager, cacheKey } from "../cache/CacheManager.js"
import { AppConfig } from "../Config.js"
import * as Metrics from "../metrics/Metrics.js"
import { VERSION } from "../Version.js"
import {
  type Endpoint,
  type MarketFetch,
  MarketData,
  type PriceSeed,
  type Provider,
  providerOf,
  UpstreamError,
  UpstreamReason
} from "./MarketData.js"
import { FearGreedBody, GlobalBody, MarketChartBody, MarketsBody, MarketsRow, RowId, SparklinePrices, Totals } from "./Upstream/Bodies.js"
import { ChartEntry, chartsPerRound, liveRsi, nextDueAfter, planCharts } from "./Upstream/Charts.js"
import { waitAskedFor } from "./Upstream/RateLimit.js"
import {
  AssetInfo,
  type AssetId,
  type ChartStamp,
  LEGACY_ASSET,
  type Currency,
  FearGreed,
  MarketTotals,
  MarketView,
  Quote,
  StaleParts
} from "./Watchlist.js"

export { parseRateLimitReset, parseRetryAfter } from "./Upstream/RateLimit.js"

const USER_AGENT = `dashcast/${VERSION}`
const API_KEY_HEADER = "x-cg-demo-api-key"
/** CoinGecko's largest page: one `coins/markets` call covers the whole watchlist (`ASSETS` ≤ 250). */
const PAGE_SIZE = 250
/** alternative.me is asked again at least this often, whatever `time_until_update` says. */
const FEAR_GREED_REFRESH_MS = 60 * 60 * 1000
/**
 * CoinGecko calls a minute: 10 is the keyless budget this project plans for (the provider's 429s
 * decide the rest); 30 is the Demo plan's published rate limit.
 */
const KEYLESS_CALLS_PER_MINUTE = 10
const KEYED_CALLS_PER_MINUTE = 30
const HOUR_MS = 60 * 60 * 1000
const DAY_MS = 24 * HOUR_MS

/** Each asset's daily closes, kept so that a restart or a new leader does not fetch them all again. */
const closesKey = (asset: AssetId) => cacheKey(`market:closes:${asset}`, ChartEntry, "2 days")

// ---------------------------------------------------------------------------------------------
// Reading a response

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

interface Call {
  readonly endpoint: Endpoint
  readonly target?: string
}

const failure = (call: Call, reason: UpstreamReason, cause?: unknown) =>
  new UpstreamError({
    endpoint: call.endpoint,
    ...(call.target === undefined ? {} : { target: call.target }),
    reason,
    ...(cause === undefined ? {} : { cause })
  })

/**
 * Maps a client failure to the port's error. The `HttpClientError` itself is not kept as the cause:
 * it holds the request, whose headers carry the API key.
 */
const fromHttpError = (call: Call, error: HttpClientError.HttpClientError) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    if (error._tag === "RequestError") {
      return failure(call, UpstreamReason.Network({ detail: causeDetail(error.cause) }), error.cause)
    }
    const status = error.response.status
    if (error.reason === "StatusCode") {
      return failure(
        call,
        status === 429 || status === 418
          ? UpstreamReason.RateLimited({ status, retryAfter: waitAskedFor(error.response.headers, now) })
          : UpstreamReason.HttpStatus({ status })
      )
    }
    // The status line arrived but the body did not: the connection broke while reading it.
    return failure(call, UpstreamReason.Network({ detail: `body of HTTP ${status} not received: ${causeDetail(error.cause)}` }), error.cause)
  })

/**
 * The body as text, read chunk by chunk and given up as soon as it passes `limit` bytes (a declared
 * `Content-Length` over it is refused before reading): a huge or endless body costs at most `limit`.
 */
const readCapped = (call: Call, response: HttpClientResponse.HttpClientResponse, limit: number) => {
  const tooLarge = failure(call, UpstreamReason.TooLarge({ limit }))
  const declared = Number(response.headers["content-length"] ?? Number.NaN)
  if (declared > limit) return Effect.fail(tooLarge)
  return response.stream.pipe(
    Stream.catchAll((error) => fromHttpError(call, error)),
    Stream.runFoldEffect({ chunks: [] as Array<Uint8Array>, size: 0 }, (acc, chunk) => {
      const size = acc.size + chunk.byteLength
      if (size > limit) return Effect.fail(tooLarge)
      acc.chunks.push(chunk)
      return Effect.succeed({ chunks: acc.chunks, size })
    }),
    Effect.map(({ chunks }) => new TextDecoder().decode(Buffer.concat(chunks)))
  )
}

/** The first problem of a failed decode, as `path: message`. */
const describeParseError = (error: ParseResult.ParseError): string => {
  const issue = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
  if (issue === undefined) return error.message
  return `${issue.path.length === 0 ? "body" : issue.path.join(".")}: ${issue.message}`
}

const decodeBody = <A, I>(call: Call, schema: Schema.Schema<A, I>) => (text: string) =>
  Effect.try({
    try: (): unknown => JSON.parse(text),
    catch: (cause) => failure(call, UpstreamReason.Decode({ detail: text.trim() === "" ? "empty body" : `not JSON: "${excerpt(text)}"` }), cause)
  }).pipe(
    Effect.flatMap(Schema.decodeUnknown(schema)),
    Effect.catchTag("ParseError", (cause) => failure(call, UpstreamReason.Decode({ detail: describeParseError(cause) }), cause))
  )

/** The error that explains a round best: a rate limit (its `Retry-After` must be honoured), else the first. */
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
// One round's answers

/** What one currency's `coins/markets` answer said: good rows, and rows that did not decode. */
interface MarketsAnswer {
  readonly rows: ReadonlyMap<AssetId, MarketsRow>
  readonly bad: ReadonlyMap<AssetId, string>
}

interface FearGreedAnswer {
  readonly value: FearGreed
}

// ---------------------------------------------------------------------------------------------
// The service

export const makeUpstreamMarketData = Effect.gen(function*() {
  const config = yield* AppConfig
  const client = yield* HttpClient.HttpClient
  const cache = yield* CacheManager
  const fibers = yield* FiberSet.make()
  const timeout = config.upstreamTimeout
  const assets = config.assets
  const currencies = config.currencies
  const [firstCurrency] = currencies
  const intervalMs = Duration.toMillis(config.updateInterval)
  const perMinuteBudget = Option.isSome(config.coingeckoApiKey) ? KEYED_CALLS_PER_MINUTE : KEYLESS_CALLS_PER_MINUTE

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
  const clients: Record<Provider, HttpClient.HttpClient> = {
    coingecko: upstream(config.coingeckoBaseUrl, config.coingeckoApiKey),
    alternative_me: upstream(config.fngBaseUrl, Option.none())
  }

  /**
   * When each provider may be called again (epoch ms by `Clock`), from the wait its last 429 asked
   * for: until then no call to it is sent, whoever asks (schedule, force update, refresh).
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
  const makeCall = <A, I>(call: Call, request: HttpClientRequest.HttpClientRequest, schema: Schema.Schema<A, I>) => {
    const provider = providerOf[call.endpoint]
    const sent = clients[provider].execute(request).pipe(
      Effect.catchAll((error) => fromHttpError(call, error)),
      // The body is read as text and parsed here so that a broken connection (Network), a body
      // that is too large (TooLarge) and one that is not JSON (Decode) stay apart.
      Effect.flatMap((response) => readCapped(call, response, config.upstreamMaxBytes)),
      Effect.flatMap(decodeBody(call, schema)),
      Effect.timeoutFail({ duration: timeout, onTimeout: () => failure(call, UpstreamReason.Timeout({ after: timeout })) }),
      Effect.tapError((error) => block(provider, error)),
      Metrics.trackUpstream(call.endpoint),
      Effect.withSpan(`Upstream.${call.endpoint}`, { attributes: { target: call.target ?? "" } })
    )
    return singleFlight(
      fibers,
      Effect.flatMap(blockedFor(provider), (wait) =>
        Option.match(wait, {
          onNone: () => sent,
          onSome: (retryAfter) =>
            Effect.zipRight(Metrics.upstreamError(call.endpoint, "Blocked"), failure(call, UpstreamReason.Blocked({ retryAfter })))
        }))
    )
  }

  const idsParam = assets.join(",")
  const marketsCalls = new Map(currencies.map((currency) => [
    currency,
    makeCall(
      { endpoint: "coins_markets", target: currency },
      HttpClientRequest.get("/api/v3/coins/markets", {
        urlParams: {
          vs_currency: currency,
          ids: idsParam,
          per_page: String(PAGE_SIZE),
          sparkline: "true",
          price_change_percentage: "24h"
        }
      }),
      MarketsBody
    )
  ]))
  const globalCall = makeCall({ endpoint: "global" }, HttpClientRequest.get("/api/v3/global"), GlobalBody)
  const fearGreedCall = makeCall({ endpoint: "fear_greed" }, HttpClientRequest.get("/fng/", { urlParams: { limit: "1" } }), FearGreedBody)
  const chartCalls = new Map(assets.map((asset) => [
    asset,
    makeCall(
      { endpoint: "market_chart", target: asset },
      HttpClientRequest.get(`/api/v3/coins/${encodeURIComponent(asset)}/market_chart`, {
        urlParams: { vs_currency: firstCurrency, days: "60", interval: "daily" }
      }),
      MarketChartBody
    )
  ]))

  // --------------------------------------------------------------------------------------------
  // What is known between rounds

  /** Each asset's daily closes (also in L2, so a restart does not fetch them all again). */
  const charts = new Map<AssetId, ChartEntry>()
  // Closes are written to L2 behind the rounds (a slow or hung L2 must not hold one): the latest per
  // asset waits here until the writer takes it, and what is left at shutdown is written then. An
  // entry leaves this map only in the same uninterruptible step that writes it, so none is lost.
  const closesToWrite = new Map<AssetId, ChartEntry>()
  const closesWaiting = yield* Queue.sliding<void>(1)
  const writeCloses = Effect.suspend(() => {
    const batch = [...closesToWrite]
    closesToWrite.clear()
    return Effect.forEach(batch, ([asset, entry]) => cache.set(closesKey(asset), entry), { discard: true })
  })
  yield* Queue.take(closesWaiting).pipe(Effect.zipRight(Effect.uninterruptible(writeCloses)), Effect.forever, Effect.forkScoped)
  yield* Effect.addFinalizer(() => writeCloses)
  /** Assets whose last daily-closes call failed: their RSI rests on older closes until one succeeds. */
  const chartFailed = new Set<AssetId>()
  /** Assets the provider answered for; only these get chart calls. */
  const known = new Set<AssetId>()
  /** Watched ids the provider does not know (each logged once). */
  const missing = new Set<AssetId>()
  /** Currencies `/global` has no totals for (each logged once). */
  const noTotals = new Set<Currency>()
  /** Quotes answered with a row that did not decode, logged once until they decode again. */
  const badRows = new Set<string>()
  let fearGreedDueAt = Number.NEGATIVE_INFINITY
  /** Series (`currency/asset`) whose sparkline this process has handed to the price history. */
  const sparklineSeeded = new Set<string>()
  /** The fetch time of each asset's closes this process has handed to the price history. */
  const closesSeededAt = new Map<AssetId, number>()

  /**
   * A series' 7-day sparkline as history points: hourly prices, the last one at the quote's time
   * (CoinGecko gives no times; its sparkline is hourly and ends about now). Once per series and
   * process: later rounds extend the history with live prices. A sparkline that does not decode is
   * logged once and the series' history starts with the live prices.
   */
  const sparklineSeed = (currency: Currency, row: MarketsRow, end: number) =>
    Effect.gen(function*() {
      const key = `${currency}/${row.id}`
      if (sparklineSeeded.has(key)) return Option.none<PriceSeed>()
      sparklineSeeded.add(key)
      const decoded = Schema.decodeUnknownEither(SparklinePrices)(row.sparkline_in_7d?.price ?? [])
      if (Either.isLeft(decoded)) {
        yield* Effect.logInfo(`coins_markets(${currency}): no usable 7-day sparkline for ${row.id} (${describeParseError(decoded.left)}); its history starts with the live prices`)
          .pipe(Effect.annotateLogs({ currency, asset: row.id }))
        return Option.none<PriceSeed>()
      }
      const prices = decoded.right
      return Option.some<PriceSeed>({
        kind: "sparkline",
        asset: row.id,
        currency,
        points: prices.map((price, i) => [end - (prices.length - 1 - i) * HOUR_MS, price] as const)
      })
    })

  yield* Effect.forEach(
    assets,
    (asset) =>
      Effect.map(cache.get(closesKey(asset)), Option.map((entry) => {
        charts.set(asset, entry)
        known.add(asset)
      })),
    { concurrency: 16, discard: true }
  )

  // The call budget, for operators: CoinGecko limits by the minute, alternative.me is free.
  const roundsPerHour = 3_600_000 / intervalMs
  const coingeckoPerHour = Math.ceil(roundsPerHour * (currencies.length + 1) + assets.length)
  const perMinute = coingeckoPerHour / 60
  yield* Effect.logInfo(
    `upstream call budget: about ${coingeckoPerHour} CoinGecko calls an hour (${
      currencies.length + 1
    } a round every ${Duration.format(config.updateInterval)}, and each of ${assets.length} assets' daily closes once an hour), at most 1 an hour to alternative.me; API key ${
      Option.isSome(config.coingeckoApiKey) ? "set" : "not set"
    }`
  ).pipe(
    Effect.annotateLogs({
      assets: assets.length,
      currencies: currencies.length,
      coingecko_calls_per_hour: coingeckoPerHour,
      api_key: Option.isSome(config.coingeckoApiKey)
    })
  )
  if (perMinute > perMinuteBudget) {
    yield* Effect.logWarning(
      `about ${perMinute.toFixed(1)} CoinGecko calls a minute is more than the ${perMinuteBudget} a minute that ${
        Option.isSome(config.coingeckoApiKey) ? "the Demo plan allows" : "keyless use tolerates"
      }: expect 429s; raise UPDATE_INTERVAL, watch fewer CURRENCIES${Option.isSome(config.coingeckoApiKey) ? "" : " or set COINGECKO_API_KEY"}`
    )
  }

  // --------------------------------------------------------------------------------------------
  // One round

  const readMarkets = (currency: Currency) =>
    Effect.map(marketsCalls.get(currency) ?? Effect.die(`no call for ${currency}`), (rows): MarketsAnswer => {
      const good = new Map<AssetId, MarketsRow>()
      const bad = new Map<AssetId, string>()
      for (const raw of rows) {
        const id = Schema.decodeUnknownOption(RowId)(raw)
        if (Option.isNone(id) || !assets.includes(id.value.id)) continue
        Either.match(Schema.decodeUnknownEither(MarketsRow)(raw), {
          onLeft: (error) => bad.set(id.value.id, describeParseError(error)),
          onRight: (row) => good.set(row.id, row)
        })
      }
      return { rows: good, bad }
    })

  const readTotals = (body: typeof GlobalBody.Type) =>
    new Map(currencies.flatMap((currency) => {
      const raw = { total_market_cap: body.data.total_market_cap[currency], total_volume: body.data.total_volume[currency] }
      if (raw.total_market_cap === undefined && raw.total_volume === undefined) return []
      return [[currency, Either.mapLeft(Schema.decodeUnknownEither(Totals)(raw), describeParseError)] as const]
    }))

  const readFearGreed = (now: number) =>
    Effect.map(fearGreedCall, ({ data }): FearGreedAnswer => {
      const [latest] = data
      const untilNext = latest.time_until_update === undefined ? FEAR_GREED_REFRESH_MS : latest.time_until_update * 1000
      return {
        // At least hourly, and a little after the new value is due, so it is there when asked for.
        value: FearGreed.make({
          value: latest.value,
          label: latest.value_classification,
          refresh_at: now + Math.min(FEAR_GREED_REFRESH_MS, untilNext + 60_000)
        })
      }
    })

  const readCharts = (planned: ReadonlyArray<AssetId>) =>
    Effect.forEach(
      planned,
      (asset) => Effect.map(Effect.either(chartCalls.get(asset) ?? Effect.die(`no call for ${asset}`)), (result) => [asset, result] as const),
      { concurrency: "unbounded" }
    )

  /**
   * Closes another instance fetched since this one last saw them (the previous view says when):
   * read again from L2, in the background (a slow or hung L2 must not hold the round; meanwhile the
   * view's stamps say what is due and its RSI stands in).
   */
  const catchUpCharts = (previous: MarketView | undefined) =>
    Effect.forEach(
      Object.entries(previous?.charts ?? {}).filter(([asset, stamp]) => (charts.get(asset)?.fetched_at ?? -1) < stamp.fetched_at),
      ([asset, stamp]) =>
        Effect.map(cache.getFresh(closesKey(asset)), Option.map((entry) => {
          if (entry.fetched_at < stamp.fetched_at) return
          charts.set(asset, entry)
          chartFailed.delete(asset)
          known.add(asset)
        })),
      { concurrency: 16, discard: true }
    )

  const fetch = Effect.fn("Upstream.fetch")(function*(previous: Option.Option<MarketView>) {
    const now = yield* Clock.currentTimeMillis
    const fetchedAt = DateTime.unsafeMake(now)
    const prev = Option.getOrUndefined(previous)
    yield* FiberSet.run(fibers, catchUpCharts(prev))
    /** When each asset's closes are due, as this instance or the previous view knows it, whichever is newer. */
    const stamps = new Map<AssetId, ChartStamp>(Object.entries(prev?.charts ?? {}))
    for (const [asset, entry] of charts) {
      if ((stamps.get(asset)?.fetched_at ?? -1) <= entry.fetched_at) stamps.set(asset, { fetched_at: entry.fetched_at, next_due_at: entry.next_due_at })
    }
    const fearGreedDue = now >= Math.max(fearGreedDueAt, Option.match(prev?.fear_greed ?? Option.none(), { onNone: () => 0, onSome: (f) => f.refresh_at }))

    const phaseOne = Effect.all({
      markets: Effect.forEach(currencies, (currency) => Effect.map(Effect.either(readMarkets(currency)), (r) => [currency, r] as const), {
        concurrency: "unbounded"
      }),
      global: Effect.either(globalCall),
      fearGreed: fearGreedDue ? Effect.map(Effect.either(readFearGreed(now)), Option.some) : Effect.succeedNone
    }, { concurrency: "unbounded" })
    const plan = () => {
      // Bitcoin first: the seed's summary needs its RSI, and clients of the first version need the summary.
      const watched = [...assets]
        .sort((a, b) => Number(b === LEGACY_ASSET) - Number(a === LEGACY_ASSET))
        .filter((asset) => known.has(asset) && !missing.has(asset))
      const cold = watched.filter((asset) => !stamps.has(asset)).length
      const limit = chartsPerRound({
        assets: watched.length,
        cold,
        intervalMs,
        otherCalls: currencies.length + 1,
        perMinuteBudget
      })
      return planCharts(watched, stamps, now, limit)
    }
    // Chart calls go only to assets the provider has answered for: on the first round that is
    // known after the markets calls, later it is known before, and all calls run at once.
    const firstRound = known.size === 0
    const [answers, chartResults] = firstRound
      ? yield* Effect.flatMap(phaseOne, (one) =>
        Effect.zipRight(learnAssets(one.markets), Effect.map(Effect.suspend(() => readCharts(plan())), (c) => [one, c] as const)))
      : yield* Effect.all([phaseOne, readCharts(plan())], { concurrency: "unbounded" })
    if (!firstRound) yield* learnAssets(answers.markets)

    // Daily closes: keep what came, remember what failed.
    const chartProblems: Array<UpstreamError> = []
    for (const [asset, result] of chartResults) {
      if (Either.isLeft(result)) {
        chartFailed.add(asset)
        chartProblems.push(result.left)
        continue
      }
      const entry = ChartEntry.make({
        closes: result.right.prices,
        fetched_at: now,
        next_due_at: nextDueAfter(now, assets.indexOf(asset), assets.length, !charts.has(asset))
      })
      charts.set(asset, entry)
      stamps.set(asset, { fetched_at: entry.fetched_at, next_due_at: entry.next_due_at })
      chartFailed.delete(asset)
      closesToWrite.set(asset, entry)
      yield* Queue.offer(closesWaiting, undefined)
    }

    const problems: Array<UpstreamError> = []
    const staleCurrencies: Array<Currency> = []
    const staleQuotes: Array<readonly [Currency, AssetId]> = []
    const staleTotals: Array<Currency> = []

    // Quotes, per currency and asset.
    const quotes: Record<Currency, Record<AssetId, Quote>> = {}
    const infos = new Map<AssetId, AssetInfo>()
    const seeds: Array<PriceSeed> = []
    for (const [currency, result] of answers.markets) {
      const before = prev?.quotes[currency] ?? {}
      if (Either.isLeft(result)) {
        problems.push(result.left)
        if (Object.keys(before).length > 0) {
          quotes[currency] = before
          staleCurrencies.push(currency)
        }
        continue
      }
      const fresh: Record<AssetId, Quote> = {}
      for (const asset of assets) {
        const row = result.right.rows.get(asset)
        const rowKey = `${currency}/${asset}`
        if (row !== undefined) {
          if (badRows.delete(rowKey)) yield* Effect.logInfo("quote decodes again").pipe(Effect.annotateLogs({ currency, asset }))
          infos.set(asset, AssetInfo.make({ id: asset, symbol: row.symbol, name: row.name }))
          const lastUpdated = row.last_updated ?? fetchedAt
          seeds.push(...Option.toArray(yield* sparklineSeed(currency, row, Math.min(now, DateTime.toEpochMillis(lastUpdated)))))
          // The row was decoded with the same bounds: no need to check its values twice.
          fresh[asset] = Quote.make({
            price: row.current_price,
            change_24h: row.price_change_percentage_24h,
            // CoinGecko writes 0 for a market cap it does not know.
            market_cap: row.market_cap === 0 ? null : row.market_cap,
            volume_24h: row.total_volume,
            last_updated: lastUpdated,
            fetched_at: fetchedAt
          }, true)
          continue
        }
        const bad = result.right.bad.get(asset)
        if (bad === undefined) continue
        if (!badRows.has(rowKey)) {
          badRows.add(rowKey)
          yield* Effect.logWarning(`coins_markets(${currency}): the row of ${asset} is not plausible: ${bad}`).pipe(
            Effect.annotateLogs({ currency, asset })
          )
        }
        const old = before[asset]
        if (old !== undefined) {
          fresh[asset] = old
          staleQuotes.push([currency, asset])
        }
      }
      quotes[currency] = fresh
    }

    // Totals of the whole market, per currency.
    const totals: Record<Currency, MarketTotals> = {}
    const keepTotals = (currency: Currency) => {
      const old = prev?.totals[currency]
      if (old !== undefined) {
        totals[currency] = old
        staleTotals.push(currency)
      }
    }
    if (Either.isLeft(answers.global)) {
      problems.push(answers.global.left)
      currencies.forEach(keepTotals)
    } else {
      const read = readTotals(answers.global.right)
      for (const currency of currencies) {
        const one = read.get(currency)
        if (one === undefined) {
          if (!noTotals.has(currency)) {
            noTotals.add(currency)
            yield* Effect.logWarning(`global: CoinGecko has no market totals in ${currency}`)
          }
          continue
        }
        if (Either.isRight(one)) totals[currency] = MarketTotals.make(one.right)
        else {
          problems.push(failure({ endpoint: "global" }, UpstreamReason.Decode({ detail: `data.${currency}: ${one.left}` })))
          keepTotals(currency)
        }
      }
    }

    // Fear & Greed: asked only when a new value exists.
    let fearGreed = prev?.fear_greed ?? Option.none<FearGreed>()
    let fearGreedStale = false
    if (Option.isSome(answers.fearGreed)) {
      const result = answers.fearGreed.value
      if (Either.isRight(result)) {
        fearGreed = Option.some(result.right.value)
        fearGreedDueAt = result.right.value.refresh_at
        fearGreedStale = false
      } else {
        problems.push(result.left)
        fearGreedStale = Option.isSome(fearGreed)
      }
    }

    // RSI-14 from each asset's closes and its live price in the first currency.
    const rsi: Record<AssetId, number> = {}
    const staleRsi: Array<AssetId> = []
    for (const asset of assets) {
      const entry = charts.get(asset)
      const live = quotes[firstCurrency]?.[asset]?.price
      // Closes older than another instance's (not read back yet): its RSI is the better one.
      const behind = entry !== undefined && entry.fetched_at < (stamps.get(asset)?.fetched_at ?? -1) && prev?.rsi[asset] !== undefined
      const value = entry !== undefined && live !== undefined && !behind
        ? Option.getOrUndefined(liveRsi(entry, live, now))
        : prev?.rsi[asset]
      if (value === undefined) continue
      rsi[asset] = value
      if (chartFailed.has(asset)) staleRsi.push(asset)
    }

    // Daily closes this process has not handed to the price history yet (fetched now, or read
    // from L2 at start): in the first currency, up to today's 00:00 UTC (a later point is intraday).
    const startOfToday = Math.floor(now / DAY_MS) * DAY_MS
    for (const [asset, entry] of charts) {
      if ((closesSeededAt.get(asset) ?? Number.NEGATIVE_INFINITY) >= entry.fetched_at) continue
      closesSeededAt.set(asset, entry.fetched_at)
      seeds.push({ kind: "closes", asset, currency: firstCurrency, points: entry.closes.filter(([t]) => t <= startOfToday) })
    }

    problems.push(...chartProblems)
    const answered = answers.markets.some(([, r]) => Either.isRight(r)) || Either.isRight(answers.global) ||
      Option.exists(answers.fearGreed, Either.isRight) || chartResults.some(([, r]) => Either.isRight(r))
    // With nothing new at all the round failed: it is not an update that repeats the last one.
    if (!answered && Arr.isNonEmptyReadonlyArray(problems)) return yield* mostTelling(problems)

    const view = MarketView.make({
      assets: assets.flatMap((asset) => {
        if (missing.has(asset)) return []
        const info = infos.get(asset) ?? prev?.assets.find((a) => a.id === asset)
        return info === undefined ? [] : [info]
      }),
      missing: assets.filter((asset) => missing.has(asset)),
      quotes,
      rsi,
      totals,
      fear_greed: fearGreed,
      charts: Object.fromEntries(stamps),
      stale: StaleParts.make({
        currencies: staleCurrencies,
        quotes: staleQuotes,
        rsi: staleRsi,
        totals: staleTotals,
        fear_greed: fearGreedStale
      })
    })
    // A call not sent because its provider asked to wait is no failure of this round.
    const failed = problems.filter((e) => e.reason._tag !== "Blocked")
    if (problems.length > 0) {
      yield* Effect.logWarning("some upstream calls failed; what they feed keeps its last good value").pipe(
        Effect.annotateLogs({ errors: problems.map((e) => e.message).join("; ") })
      )
    }
    return {
      view,
      failure: Arr.isNonEmptyReadonlyArray(failed) ? Option.some(mostTelling(failed)) : Option.none(),
      problems,
      seeds
    } satisfies MarketFetch
  }, Effect.annotateLogs({ service: "Upstream" }))

  /** Learns which watched ids exist from the currencies that answered; a new missing id is logged once. */
  const learnAssets = (markets: ReadonlyArray<readonly [Currency, Either.Either<MarketsAnswer, UpstreamError>]>) =>
    Effect.gen(function*() {
      const answered = markets.flatMap(([, r]) => (Either.isRight(r) ? [r.right] : []))
      if (answered.length === 0) return
      for (const asset of assets) {
        if (answered.some((a) => a.rows.has(asset) || a.bad.has(asset))) {
          known.add(asset)
          if (missing.delete(asset)) yield* Effect.logInfo(`the provider now knows the coin id ${JSON.stringify(asset)}`)
        } else if (!missing.has(asset)) {
          missing.add(asset)
          known.delete(asset)
          yield* Effect.logWarning(`the provider does not know the coin id ${JSON.stringify(asset)} (ASSETS); it is listed as missing`).pipe(
            Effect.annotateLogs({ asset })
          )
        }
      }
    })

  return MarketData.of({ fetch, blockedFor: blockedFor("coingecko") })
})

/** The live market data; needs an `HttpClient` (tests may provide their own) and the cache. */
export const UpstreamMarketDataLive: Layer.Layer<MarketData, never, AppConfig | HttpClient.HttpClient | CacheManager> = Layer.scoped(
  MarketData,
  makeUpstreamMarketData
)

/** The live market data over the platform's `fetch`, which is Bun's in the binary. */
export const UpstreamMarketDataFetchLive: Layer.Layer<MarketData, never, AppConfig | CacheManager> = UpstreamMarketDataLive.pipe(
  Layer.provide(FetchHttpClient.layer)
)
