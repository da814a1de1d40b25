/**
 * The real dashcast stack (config, cache, Broadcaster, Updater, HTTP API and the Bun server on a
 * real port) built in a test's scope, with a scripted `MarketData` double in place of upstream.
 * Run it in live tests (`it.scopedLive`): sockets and the server keep real time.
 */
import { ConfigProvider, Context, DateTime, Duration, Effect, Layer, Logger, LogLevel, Option, Queue, Ref, Schedule, type Scope } from "effect"
import { CacheManager } from "../../src/cache/CacheManager.js"
import { AppConfig } from "../../src/Config.js"
import { HttpApi } from "../../src/http/HttpApi.js"
import { DashboardSummary } from "../../src/market/DashboardSummary.js"
import { type MarketFetch, MarketData, UpstreamError, UpstreamReason } from "../../src/market/MarketData.js"
import { Broadcaster } from "../../src/realtime/Broadcaster.js"
import { Server } from "../../src/realtime/Server.js"
import { History } from "../../src/updater/History.js"
import { Updater } from "../../src/updater/Updater.js"
import { MetricsExporter } from "../../src/metrics/MetricsExporter.js"
import { StandaloneCluster } from "../../src/cluster/Cluster.js"

/** A summary with realistic values; every field can be overridden. */
export const makeSummary = (overrides: Partial<ConstructorParameters<typeof DashboardSummary>[0]> = {}) =>
  DashboardSummary.make({
    btc_price: 64_123.45,
    btc_change_24h: -1.25,
    market_cap: 2_300_000_000_000,
    volume_24h: 85_000_000_000,
    fear_greed_index: 61,
    rsi_14: 55.3,
    last_updated: DateTime.unsafeMake("2025-08-20T12:00:00.000Z"),
    ...overrides
  })

export const makeUpstreamError = (status = 503) =>
  new UpstreamError({ endpoint: "simple_price", reason: UpstreamReason.HttpStatus({ status }) })

const pollEvery = Schedule.spaced("10 millis")

/**
 * The `MarketData` double: each fetch takes the next scripted outcome, in order, and waits while
 * none is scripted, so a fetch with nothing scripted is one that blocks until the test releases it.
 */
export interface ScriptedMarket {
  readonly service: MarketData["Type"]
  /** The next fetch returns `summary`. */
  readonly succeed: (summary?: DashboardSummary) => Effect.Effect<void>
  /** The next fetch fails with `error`. */
  readonly fail: (error?: UpstreamError) => Effect.Effect<void>
  /** Fetches started so far, answered or not. */
  readonly calls: Effect.Effect<number>
  /** Waits until at least `count` fetches have started (5 s at most). */
  readonly awaitCalls: (count: number) => Effect.Effect<void>
}

export const makeScriptedMarket: Effect.Effect<ScriptedMarket> = Effect.gen(function*() {
  const outcomes = yield* Queue.unbounded<Effect.Effect<MarketFetch, UpstreamError>>()
  const calls = yield* Ref.make(0)
  const fetch = (_previous: Option.Option<DashboardSummary>) =>
    Ref.update(calls, (n) => n + 1).pipe(Effect.zipRight(Queue.take(outcomes)), Effect.flatten)
  return {
    service: MarketData.of({ fetch, blockedFor: Effect.succeed(Option.none()) }),
    succeed: (summary = makeSummary()) =>
      Queue.offer(outcomes, Effect.succeed({ summary, staleFields: [], partialFailure: Option.none() })),
    fail: (error = makeUpstreamError()) => Queue.offer(outcomes, Effect.fail(error)),
    calls: Ref.get(calls),
    awaitCalls: (count) =>
      Ref.get(calls).pipe(
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
  readonly first?: DashboardSummary
  /** Log level of the stack; none by default, to keep test output readable. */
  readonly logLevel?: LogLevel.LogLevel
}

export interface TestServer {
  /** `http://127.0.0.1:<port>/` */
  readonly url: URL
  /** `ws://127.0.0.1:<port>/ws` */
  readonly wsUrl: string
  readonly market: ScriptedMarket
  readonly broadcaster: Broadcaster
  readonly updater: Updater
  readonly server: Server
  /** A request to this server, given a path (5 s timeout). */
  readonly fetch: (path: string, init?: BunFetchRequestInit) => Effect.Effect<Response>
  /** Waits until a summary with at least `seq` is the latest (5 s at most). */
  readonly awaitSeq: (seq: number) => Effect.Effect<void>
}

/** The composition of `src/main.ts`, with the market double instead of the live feed. */
const stack = (market: ScriptedMarket, config: Readonly<Record<string, string>>, logLevel: LogLevel.LogLevel) =>
  Server.Default.pipe(
    Layer.provide(HttpApi.Default),
    Layer.provide(MetricsExporter.Default),
    Layer.provideMerge(Updater.DefaultWithoutDependencies),
    Layer.provide(Layer.succeed(MarketData, market.service)),
    Layer.provideMerge(Broadcaster.DefaultWithoutDependencies),
    Layer.provide(History.Default),
    Layer.provide(CacheManager.Default),
    Layer.provide(StandaloneCluster),
    Layer.provide(
      AppConfig.Default.pipe(Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(config))))))
    ),
    Layer.provide(Logger.minimumLogLevel(logLevel))
  )

/** Starts the stack in the current scope; closing the scope shuts it down as production does. */
export const start = (options: TestServerOptions = {}): Effect.Effect<TestServer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const market = options.market ?? (yield* makeScriptedMarket)
    if (options.first !== undefined) yield* market.succeed(options.first)
    const context = yield* Layer.build(stack(market, { ...TEST_DEFAULTS, ...options.config }, options.logLevel ?? LogLevel.None)).pipe(
      Effect.orDie
    )
    const server = Context.get(context, Server)
    const broadcaster = Context.get(context, Broadcaster)
    const updater = Context.get(context, Updater)
    const base = new URL(server.url.href)
    const testServer: TestServer = {
      url: base,
      wsUrl: new URL("/ws", base).href.replace(/^http/, "ws"),
      market,
      broadcaster,
      updater,
      server,
      fetch: (path, init) =>
        Effect.promise((signal) =>
          fetch(new URL(path, base), { ...init, signal: AbortSignal.any([signal, AbortSignal.timeout(5_000)]) })
        ),
      awaitSeq: (seq) =>
        broadcaster.latest.pipe(
          Effect.repeat({ until: Option.exists((s) => s.seq >= seq), schedule: pollEvery }),
          Effect.timeoutFail({
            duration: Duration.seconds(5),
            onTimeout: () => new Error(`no summary with seq >= ${seq} within 5 seconds`)
          }),
          Effect.orDie,
          Effect.asVoid
        )
    }
    if (options.first !== undefined) yield* testServer.awaitSeq(1)
    return testServer
  })
