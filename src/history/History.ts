/**
 * The price history of every watched asset in every currency (docs/ARCHITECTURE.md, "Price
 * history"), kept in L2 so that a restart, even after `kill -9`, serves the same charts and every
 * instance of a cluster serves the same history. The instance that made a round records it, behind
 * the broadcast: the updater hands over the snapshot and the provider's seeds (sparklines, daily
 * closes), and a background writer stores them. Reads go to the store, so any instance answers.
 */
import { Clock, DateTime, Effect, Layer, Option, Queue, Schedule } from "effect"
import { AppConfig } from "../Config.js"
import type { PriceSeed } from "../market/MarketData.js"
import type { AssetId, Currency, MarketSnapshot } from "../market/Watchlist.js"
import type { HistoryRange } from "./HistoryPoint.js"
import { HistoryStore, type HistoryStoreError, type HistoryWrite } from "./HistoryStore.js"
import { RedisHistoryStoreLive } from "./RedisHistoryStore.js"
import { SqliteHistoryStoreLive } from "./SqliteHistoryStore.js"
import { DAY_TIER, HOUR_TIER, mergeTiers, type Point, RANGES, TIERS } from "./Tiers.js"

/** Where the history lives: with `REDIS_URL` in Redis (shared by a cluster), else in the SQLite file at `CACHE_PATH`. */
export const HistoryStoreLive: Layer.Layer<HistoryStore, HistoryStoreError, AppConfig> = Layer.unwrapEffect(
  Effect.map(AppConfig, (config) =>
    Option.match(config.redisUrl, {
      onNone: () => SqliteHistoryStoreLive({ path: config.cachePath }),
      onSome: (url) => RedisHistoryStoreLive({ url })
    }))
)

/** Rounds waiting to be written; past this many (L2 hung for a long time) the oldest are dropped. */
const MAX_PENDING_ROUNDS = 512
const TRIM_EVERY = "1 hour"

/**
 * What one round adds: every fresh quote as a live point at its own time (not later than the
 * snapshot), and the seeds: a sparkline's hourly points go to the hourly and daily tiers, daily
 * closes to the daily tier. A stale quote is an old price again and adds nothing.
 */
export const writesOf = (snapshot: MarketSnapshot, seeds: ReadonlyArray<PriceSeed>): ReadonlyArray<HistoryWrite> => {
  const { view } = snapshot
  const fetchedAt = DateTime.toEpochMillis(snapshot.fetched_at)
  const live = Object.entries(view.quotes).flatMap(([currency, quotes]) =>
    view.stale.currencies.includes(currency) ? [] : Object.entries(quotes).flatMap(([asset, quote]): Array<HistoryWrite> => {
      if (view.stale.quotes.some(([c, a]) => c === currency && a === asset)) return []
      const t = Math.min(DateTime.toEpochMillis(quote.last_updated), fetchedAt)
      return [{ asset, currency, mode: "live", tiers: TIERS, points: [[t, quote.price]] }]
    })
  )
  const seeded = seeds.map((seed): HistoryWrite => ({
    asset: seed.asset,
    currency: seed.currency,
    mode: "seed",
    tiers: seed.kind === "sparkline" ? [HOUR_TIER, DAY_TIER] : [DAY_TIER],
    points: seed.points
  }))
  // Seeds first: a live point of the same bucket then replaces a seed written in the same batch.
  return [...seeded, ...live]
}

export class History extends Effect.Service<History>()("dashcast/History", {
  scoped: Effect.gen(function*() {
    const store = yield* HistoryStore
    const pending = yield* Queue.sliding<ReadonlyArray<HistoryWrite>>(MAX_PENDING_ROUNDS)
    let failing = false

    /** Logs the start and the end of an outage once each; the points of the rounds in between are lost. */
    const reportOutcome = (result: Effect.Effect<void, HistoryStoreError>) =>
      Effect.matchEffect(result, {
        onFailure: (error) =>
          Effect.gen(function*() {
            if (failing) return
            failing = true
            yield* Effect.logWarning("price history store unavailable; rounds are not recorded until it recovers").pipe(
              Effect.annotateLogs({ store: store.kind, location: store.location, reason: error.reason, error: error.message })
            )
          }),
        onSuccess: () =>
          Effect.gen(function*() {
            if (!failing) return
            failing = false
            yield* Effect.logInfo("price history store available again").pipe(Effect.annotateLogs({ store: store.kind }))
          })
      })

    const writeAll = (batches: ReadonlyArray<ReadonlyArray<HistoryWrite>>) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => reportOutcome(store.write(batches.flat(), now)))

    // Whatever piled up while a write ran is written together, in one transaction or pipeline.
    yield* Queue.take(pending).pipe(
      Effect.flatMap((first) => Effect.flatMap(Queue.takeAll(pending), (rest) => writeAll([first, ...rest]))),
      Effect.forever,
      Effect.forkScoped
    )
    // Rounds still waiting at shutdown are written then.
    yield* Effect.addFinalizer(() =>
      Effect.flatMap(Queue.takeAll(pending), (rest) => (rest.length === 0 ? Effect.void : writeAll([...rest])))
    )
    // Series nobody writes any more (an asset left ASSETS) are trimmed too.
    yield* Clock.currentTimeMillis.pipe(
      Effect.flatMap((now) => store.trim(now)),
      Effect.catchAll((error) => Effect.logDebug("price history trim failed", error.message)),
      Effect.repeat(Schedule.spaced(TRIM_EVERY)),
      Effect.forkScoped
    )

    /** One series over a range, oldest first. */
    const series = Effect.fn("History.series")(function*(asset: AssetId, currency: Currency, range: HistoryRange) {
      const { span, tiers } = RANGES[range]
      const now = yield* Clock.currentTimeMillis
      const [byTier] = yield* store.read([{ asset, currency }], tiers, now - span)
      return mergeTiers(tiers, byTier ?? [])
    })

    /** Every asset's last 24 hours in `currency`, hourly (the newest point is the latest price). */
    const sparklines = Effect.fn("History.sparklines")(function*(assets: ReadonlyArray<AssetId>, currency: Currency) {
      const now = yield* Clock.currentTimeMillis
      const read = yield* store.read(assets.map((asset) => ({ asset, currency })), [HOUR_TIER], now - RANGES["24h"].span)
      return assets.map((asset, i): { readonly asset: AssetId; readonly points: ReadonlyArray<Point> } => ({
        asset,
        points: read[i]?.[0] ?? []
      }))
    })

    return {
      /**
       * Records a round this instance made: queued, so that it never delays the broadcast (the
       * updater calls it after publishing) nor the next round.
       */
      record: (snapshot: MarketSnapshot, seeds: ReadonlyArray<PriceSeed> = []) => Queue.offer(pending, writesOf(snapshot, seeds)),
      series,
      sparklines
    } as const
  }),
  dependencies: [HistoryStoreLive]
}) {}
