/**
 * The real dashcast stack (config, cache, market state, Broadcaster, history, alerts, Updater, HTTP API and
 * the Bun server on a real port), composed as `src/main.ts` composes it, with a scripted
 * `MarketData` double in place of upstream, and builders of realistic market views for it.
 * Run it in live tests (`it.scopedLive`): sockets and the server keep real time.
 */
import { ConfigProvider, Context, DateTime, Duration, Effect, Layer, Logger, LogLevel, Option, Queue, Ref, Schedule, type Scope } from "effect"
import { Alerts, AlertStoreLive } from "../../src/alerts/Alerts.js"
import { CacheManager } from "../../src/cache/CacheManager.js"
import { StandaloneCluster } from "../../src/cluster/Cluster.js"
import { AppConfig } from "../../src/Config.js"
import { History } from "../../src/history/History.js"
import type { HistoryStore } from "../../src/history/HistoryStore.js"
import { ApiHandlers } from "../../src/http/ApiHandlers.js"
import { DashboardSummary } from "../../src/market/DashboardSummary.js"
import { type Endpoint, type MarketFetch, MarketData, type PriceSeed, UpstreamError, UpstreamReason } from "../../src/market/MarketData.js"
import { AssetInfo, FearGreed, MarketSnapshot, MarketTotals, MarketView, Quote, StaleParts } from "../../src/market/Watchlist.js"
import { MetricsExporter } from "../../src/metrics/MetricsExporter.js"
import { Broadcaster, type TopicPublisher } from "../../src/realtime/Broadcaster.js"
import { Server } from "../../src/realtime/Server.js"
import { MarketState } from "../../src/state/MarketState.js"
import { Updater } from "../../src/updater/Updater.js"

// ---------------------------------------------------------------------------------------------
// Market views

/** 1 USD in each currency the builders know (any other currency gets 1). */
const RATIOS: Readonly<Record<string, number>> = { usd: 1, eur: 0.92, gbp: 0.79, jpy: 150.25 }

/** The provider's time of every default quote, and the default fetch time. */
const PROVIDER_TIME = DateTime.unsafeMake("2025-08-20T12:00:00.000Z")

interface Profile {
  readonly symbol: string
  readonly name: string
  readonly usd: number
  readonly supply: number
  readonly change: number
  readonly rsi: number
}

/** Plausible magnitudes for the coins tests use; any other id gets a generic small-cap profile. */
const PROFILES: Readonly<Record<string, Profile>> = {
  bitcoin: { symbol: "btc", name: "Bitcoin", usd: 64_123.45, supply: 19_700_000, change: -1.25, rsi: 55.3 },
  ethereum: { symbol: "eth", name: "Ethereum", usd: 3_512.09, supply: 120_000_000, change: -1.84, rsi: 48.7 },
  solana: { symbol: "sol", name: "Solana", usd: 151.37, supply: 470_000_000, change: 5.02, rsi: 63.1 },
  tether: { symbol: "usdt", name: "Tether", usd: 1.0002, supply: 140_000_000_000, change: 0.01, rsi: 50.2 }
}

const profileOf = (id: string): Profile =>
  PROFILES[id] ?? { symbol: id.slice(0, 4), name: `Coin ${id}`, usd: 2.5 + id.length, supply: 50_000_000, change: 0.5, rsi: 50 }

const ratioOf = (currency: string) => RATIOS[currency] ?? 1
const round2 = (x: number) => Math.round(x * 100) / 100

/** A quote's fields; whatever is left out takes the asset's default in that currency. */
export type QuoteInput = Partial<Omit<ConstructorParameters<typeof Quote>[0], "last_updated" | "fetched_at">> & {
  readonly last_updated?: DateTime.Utc
  readonly fetched_at?: DateTime.Utc
}

export interface ViewOptions {
  /** RSI-14 per asset; every quoted asset has its profile's RSI otherwise. */
  readonly rsi?: Readonly<Record<string, number>>
  /** Totals per currency (`null`: never known); every quoted currency has realistic totals otherwise. */
  readonly totals?: Readonly<Record<string, { readonly total_market_cap: number; readonly total_volume: number } | null>>
  /** The Fear & Greed index; 61 ("Greed") by default, `null` for never known. */
  readonly fearGreed?: { readonly value: number; readonly label: string } | null
  /** Watched ids the provider does not know. */
  readonly missing?: ReadonlyArray<string>
  readonly stale?: Partial<ConstructorParameters<typeof StaleParts>[0]>
}

/** The default quote of `id` in `currency`, with `input` laid over it. */
const makeQuote = (id: string, currency: string, input: QuoteInput = {}): Quote => {
  const profile = profileOf(id)
  const price = input.price ?? round2(profile.usd * ratioOf(currency))
  return Quote.make({
    price,
    change_24h: input.change_24h === undefined ? profile.change : input.change_24h,
    market_cap: input.market_cap === undefined ? Math.round(price * profile.supply) : input.market_cap,
    volume_24h: input.volume_24h === undefined ? Math.round(price * profile.supply * 0.04) : input.volume_24h,
    last_updated: input.last_updated ?? PROVIDER_TIME,
    fetched_at: input.fetched_at ?? PROVIDER_TIME
  })
}

/**
 * A view of the assets and currencies named in `prices` (assets in its key order): each entry is a
 * price or a partial quote, e.g. `makeView({ bitcoin: { usd: 64_123.45 } })`. Every quoted asset
 * has its RSI and every quoted currency its totals, unless `options` say otherwise.
 */
export const makeView = (
  prices: Readonly<Record<string, Readonly<Record<string, number | QuoteInput>>>>,
  options: ViewOptions = {}
): MarketView => {
  const quotes: Record<string, Record<string, Quote>> = {}
  for (const [id, byCurrency] of Object.entries(prices)) {
    for (const [currency, input] of Object.entries(byCurrency)) {
      ;(quotes[currency] ??= {})[id] = makeQuote(id, currency, typeof input === "number" ? { price: input } : input)
    }
  }
  const ids = Object.keys(prices)
  const fearGreed = options.fearGreed === undefined ? { value: 61, label: "Greed" } : options.fearGreed
  return MarketView.make({
    assets: ids.map((id) => AssetInfo.make({ id, symbol: profileOf(id).symbol, name: profileOf(id).name })),
    missing: options.missing ?? [],
    quotes,
    rsi: options.rsi ?? Object.fromEntries(ids.map((id) => [id, profileOf(id).rsi])),
    totals: Object.fromEntries(
      [...new Set([...Object.keys(quotes), ...Object.keys(options.totals ?? {})])].flatMap((c) => {
        const given = options.totals?.[c]
        return given === null ? [] : [[c, MarketTotals.make(given ?? defaultTotals(c))] as const]
      })
    ),
    fear_greed: fearGreed === null ? Option.none() : Option.some(FearGreed.make(fearGreed)),
    stale: StaleParts.make({ ...StaleParts.none, ...options.stale })
  })
}

const defaultTotals = (currency: string) => ({
  total_market_cap: round2(2_300_000_000_000 * ratioOf(currency)),
  total_volume: round2(85_000_000_000 * ratioOf(currency))
})

/**
 * Every one of `assets` in every one of `currencies` at its default price times `scale` (a
 * different `scale` makes a different round), at the fixed `RATIOS`.
 */
export const watchlistView = (
  assets: ReadonlyArray<string>,
  currencies: ReadonlyArray<string>,
  options: ViewOptions & { readonly scale?: number } = {}
): MarketView =>
  makeView(
    Object.fromEntries(
      assets.map((id) => [id, Object.fromEntries(currencies.map((c) => [c, round2(profileOf(id).usd * ratioOf(c) * (options.scale ?? 1))]))])
    ),
    options
  )

// ---------------------------------------------------------------------------------------------
// The seed's summary

/** A summary of the seed with realistic values; every field can be overridden. */
export const makeSummary = (overrides: Partial<ConstructorParameters<typeof DashboardSummary>[0]> = {}) =>
  DashboardSummary.make({
    btc_price: 64_123.45,
    btc_change_24h: -1.25,
    market_cap: 2_300_000_000_000,
    volume_24h: 85_000_000_000,
    fear_greed_index: 61,
    rsi_14: 55.3,
    last_updated: PROVIDER_TIME,
    ...overrides
  })

/**
 * A view (bitcoin only) whose seed summary in `currency` is `summary`: the frames' `data` then has
 * its six market fields, and `last_updated` the snapshot's fetch time, as the seed's server had.
 */
export const summaryView = (
  summary: DashboardSummary,
  options: { readonly currency?: string; readonly stale?: ViewOptions["stale"] } = {}
): MarketView => {
  const currency = options.currency ?? "usd"
  return makeView({ bitcoin: { [currency]: { price: summary.btc_price, change_24h: summary.btc_change_24h } } }, {
    rsi: { bitcoin: summary.rsi_14 },
    totals: { [currency]: { total_market_cap: summary.market_cap, total_volume: summary.volume_24h } },
    fearGreed: { value: summary.fear_greed_index, label: "Greed" },
    ...(options.stale === undefined ? {} : { stale: options.stale })
  })
}

/** The six market fields of a summary, as a frame's `data` carries them. */
export const marketFields = (summary: DashboardSummary) => ({
  btc_price: summary.btc_price,
  btc_change_24h: summary.btc_change_24h,
  market_cap: summary.market_cap,
  volume_24h: summary.volume_24h,
  fear_greed_index: summary.fear_greed_index,
  rsi_14: summary.rsi_14
})

// ---------------------------------------------------------------------------------------------
// The scripted market

/** A failed call: `coins_markets` for usd unless told; `target` is the currency or asset of the call, if it has one. */
export const makeUpstreamError = (status = 503, endpoint: Endpoint = "coins_markets", target = endpoint === "coins_markets" ? "usd" : undefined) =>
  new UpstreamError({ endpoint, reason: UpstreamReason.HttpStatus({ status }), ...(target === undefined ? {} : { target }) })

const pollEvery = Schedule.spaced("10 millis")

/**
 * The `MarketData` double: each fetch takes the next scripted outcome, in order, and waits while
 * none is scripted, so a fetch with nothing scripted is one that blocks until the test releases it.
 */
export interface ScriptedMarket {
  readonly service: MarketData["Type"]
  /** The next fetch returns `view` (bitcoin in usd by default), every call answered, with `seeds` for the price history. */
  readonly succeed: (view?: MarketView, seeds?: ReadonlyArray<PriceSeed>) => Effect.Effect<void>
  /**
   * The next fetch returns `view` with `problems` (some calls failed); the first of them is the
   * round's failure unless `counted` is false (calls only held by a provider's Retry-After).
   */
  readonly partial: (view: MarketView, problems: ReadonlyArray<UpstreamError>, counted?: boolean) => Effect.Effect<void>
  /** The next fetch fails with `error`: no call answered. */
  readonly fail: (error?: UpstreamError) => Effect.Effect<void>
  /** Fetches started so far, answered or not. */
  readonly calls: Effect.Effect<number>
  /** Waits until at least `count` fetches have started (5 s at most). */
  readonly awaitCalls: (count: number) => Effect.Effect<void>
}

export const makeScriptedMarket: Effect.Effect<ScriptedMarket> = Effect.gen(function*() {
  const outcomes = yield* Queue.unbounded<Effect.Effect<MarketFetch, UpstreamError>>()
  const started = yield* Ref.make(0)
  const fetch = (_previous: Option.Option<MarketView>) =>
    Ref.update(started, (n) => n + 1).pipe(Effect.zipRight(Queue.take(outcomes)), Effect.flatten)
  const calls = Ref.get(started)
  return {
    service: MarketData.of({ fetch, blockedFor: Effect.succeed(Option.none()) }),
    succeed: (view = summaryView(makeSummary()), seeds) =>
      Queue.offer(outcomes, Effect.succeed({ view, failure: Option.none(), problems: [], ...(seeds === undefined ? {} : { seeds }) })),
    partial: (view, problems, counted = true) =>
      Queue.offer(outcomes, Effect.succeed({ view, failure: counted ? Option.fromNullable(problems[0]) : Option.none(), problems })),
    fail: (error = makeUpstreamError()) => Queue.offer(outcomes, Effect.fail(error)),
    calls,
    awaitCalls: (count) =>
      calls.pipe(
        Effect.repeat({ until: (n) => n >= count, schedule: pollEvery }),
        Effect.timeoutFail({
          duration: "5 seconds",
          onTimeout: () => new Error(`the market double was not called ${count} times within 5 seconds`)
        }),
        Effect.orDie,
        Effect.asVoid
      )
  }
})

// ---------------------------------------------------------------------------------------------
// The server

/** Settings of every test server unless a test overrides them: nothing happens on its own. */
export const TEST_DEFAULTS: Readonly<Record<string, string>> = {
  HOST: "127.0.0.1",
  PORT: "0",
  CACHE_PATH: ":memory:",
  UPDATE_INTERVAL: "1 hour",
  INITIAL_RETRY_DELAY: "1 hour",
  FRESHNESS: "1 hour",
  MIN_FETCH_GAP: "0 millis"
}

export interface TestServerOptions {
  /** Settings by environment name, over `TEST_DEFAULTS`. */
  readonly config?: Readonly<Record<string, string>>
  /** A market double scripted beforehand; a fresh one otherwise. */
  readonly market?: ScriptedMarket
  /** When given, the first fetch returns it and `start` waits until it is published. */
  readonly first?: MarketView
  /** Log level of the stack; none by default, to keep test output readable. */
  readonly logLevel?: LogLevel.LogLevel
  /** The price history's store; the one the configuration picks by default (SQLite at `CACHE_PATH`). */
  readonly historyStore?: Layer.Layer<HistoryStore>
}

/** One frame the Broadcaster handed to Bun's `server.publish`. */
export interface Published {
  readonly topic: string
  readonly frame: string
  /** What Bun's `publish` returned: bytes sent, -1 queued behind backpressure, 0 dropped (or no subscriber). */
  readonly result: number
}

export interface TestServer {
  /** `http://127.0.0.1:<port>/` */
  readonly url: URL
  /** `ws://127.0.0.1:<port>/ws` */
  readonly wsUrl: string
  readonly market: ScriptedMarket
  readonly state: MarketState
  readonly broadcaster: Broadcaster
  readonly updater: Updater
  readonly alerts: Alerts
  readonly server: Server
  /** Every frame published on a Bun topic so far, in order (the server's own publisher, recorded). */
  readonly published: () => ReadonlyArray<Published>
  /** A request to this server, given a path (5 s timeout). */
  readonly fetch: (path: string, init?: BunFetchRequestInit) => Effect.Effect<Response>
  /** Waits until a snapshot with at least `seq` is the latest and the round in flight has ended (5 s at most); returns it. */
  readonly awaitSeq: (seq: number) => Effect.Effect<MarketSnapshot>
}

/** The real Broadcaster, recording what it publishes through the publisher the Server attaches. */
const recordingBroadcaster = (log: Array<Published>) =>
  Layer.effect(
    Broadcaster,
    Effect.map(Broadcaster, (real) =>
      Broadcaster.make({
        ...real,
        attach: (publisher: TopicPublisher) =>
          real.attach({
            publish: (topic, frame) => {
              const result = publisher.publish(topic, frame)
              log.push({ topic, frame, result })
              return result
            },
            subscriberCount: publisher.subscriberCount,
            ...(publisher.streamCount === undefined ? {} : { streamCount: publisher.streamCount })
          })
      }))
  ).pipe(Layer.provide(Broadcaster.DefaultWithoutDependencies))

/** The composition of `src/main.ts`, with the market double instead of the live feed. */
const stack = (
  market: ScriptedMarket,
  config: Readonly<Record<string, string>>,
  logLevel: LogLevel.LogLevel,
  log: Array<Published>,
  historyStore: Layer.Layer<HistoryStore> | undefined
) =>
  Server.Default.pipe(
    Layer.provide(ApiHandlers.Default),
    Layer.provide(MetricsExporter.Default),
    Layer.provideMerge(Updater.DefaultWithoutDependencies),
    Layer.provide(Layer.succeed(MarketData, market.service)),
    Layer.provideMerge(Alerts.Default),
    Layer.provide(AlertStoreLive),
    Layer.provideMerge(recordingBroadcaster(log)),
    Layer.provideMerge(historyStore === undefined ? History.Default : History.DefaultWithoutDependencies.pipe(Layer.provide(historyStore))),
    Layer.provideMerge(MarketState.DefaultWithoutDependencies),
    Layer.provideMerge(CacheManager.Default),
    Layer.provide(StandaloneCluster),
    Layer.provideMerge(
      AppConfig.Default.pipe(Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(config))))))
    ),
    Layer.provide(Logger.minimumLogLevel(logLevel))
  )

/** Starts the stack in the current scope; closing the scope shuts it down as production does. */
export const start = (options: TestServerOptions = {}): Effect.Effect<TestServer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const market = options.market ?? (yield* makeScriptedMarket)
    if (options.first !== undefined) yield* market.succeed(options.first)
    const log: Array<Published> = []
    const context = yield* Layer.build(
      stack(market, { ...TEST_DEFAULTS, ...options.config }, options.logLevel ?? LogLevel.None, log, options.historyStore)
    ).pipe(Effect.orDie)
    const server = Context.get(context, Server)
    const state = Context.get(context, MarketState)
    const updater = Context.get(context, Updater)
    const base = new URL(server.url.href)
    const testServer: TestServer = {
      url: base,
      wsUrl: new URL("/ws", base).href.replace(/^http/, "ws"),
      market,
      state,
      broadcaster: Context.get(context, Broadcaster),
      updater,
      alerts: Context.get(context, Alerts),
      server,
      published: () => log,
      fetch: (path, init) =>
        Effect.promise((signal) =>
          fetch(new URL(path, base), { ...init, signal: AbortSignal.any([signal, AbortSignal.timeout(5_000)]) })
        ),
      awaitSeq: (seq) =>
        Effect.sync(() => state.current()).pipe(
          Effect.flatMap(Option.filter((s) => s.seq >= seq)),
          Effect.retry(pollEvery),
          // The round that published it has ended, so that the next force update is a new round.
          Effect.tap(() => updater.idle),
          Effect.timeoutFail({
            duration: Duration.seconds(5),
            onTimeout: () => new Error(`no snapshot with seq >= ${seq} within 5 seconds`)
          }),
          Effect.orDie
        )
    }
    if (options.first !== undefined) yield* testServer.awaitSeq(1)
    return testServer
  })
