/**
 * dashcast's entry point: composes the feature layers and runs them. No logic lives here.
 */
import { BunRuntime } from "@effect/platform-bun"
import { Effect, Layer, Option } from "effect"
import { hostname } from "node:os"
import { Alerts, AlertStoreLive } from "./alerts/Alerts.js"
import { CacheManager } from "./cache/CacheManager.js"
import * as Cli from "./Cli.js"
import { StandaloneCluster } from "./cluster/Cluster.js"
import { RedisClusterLive } from "./cluster/RedisCluster.js"
import { AppConfig } from "./Config.js"
import { ApiHandlers } from "./http/ApiHandlers.js"
import { LoggingLive } from "./Logging.js"
import { DemoMarketDataLive } from "./market/Demo.js"
import { UpstreamMarketDataFetchLive } from "./market/Upstream.js"
import { MetricsExporter } from "./metrics/MetricsExporter.js"
import { History } from "./history/History.js"
import { Broadcaster } from "./realtime/Broadcaster.js"
import { Server } from "./realtime/Server.js"
import { MarketState } from "./state/MarketState.js"
import { Updater } from "./updater/Updater.js"

const DEMO_SEED = 20_250_820

const MarketDataLive = Layer.unwrapEffect(
  Effect.map(AppConfig, (config) => (config.demo ? DemoMarketDataLive(DEMO_SEED) : UpstreamMarketDataFetchLive))
)

const ClusterLive = Layer.unwrapEffect(
  Effect.map(AppConfig, (config) =>
    Option.match(config.redisUrl, {
      onNone: () => StandaloneCluster,
      onSome: (url) => RedisClusterLive({ url, leaseTtl: config.leaseTtl, instanceId: `${hostname()}:${process.pid}:${crypto.randomUUID()}` })
    }))
)

// Readers of the market state (the Broadcaster, alerts) are built before the Updater writes to it.
const ServerLive = Server.Default.pipe(
  Layer.provide(ApiHandlers.Default),
  Layer.provide(MetricsExporter.Default),
  Layer.provideMerge(Updater.DefaultWithoutDependencies),
  Layer.provide(MarketDataLive),
  Layer.provideMerge(Alerts.Default),
  Layer.provide(AlertStoreLive),
  Layer.provideMerge(Broadcaster.DefaultWithoutDependencies),
  Layer.provideMerge(History.Default),
  Layer.provideMerge(MarketState.DefaultWithoutDependencies),
  Layer.provideMerge(CacheManager.Default),
  Layer.provide(ClusterLive),
  Layer.provide(LoggingLive)
)

BunRuntime.runMain(Cli.run(process.argv.slice(2), Layer.discard(ServerLive)), {
  disableErrorReporting: true,
  disablePrettyLogger: true,
  teardown: (exit, onExit) => onExit(Cli.exitCode(exit))
})
