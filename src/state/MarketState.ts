/**
 * The one place the market's current state lives (docs/ARCHITECTURE.md, "One state, one
 * direction"): the latest snapshot, the updater's status (last error, next attempt) and the
 * freshness rule. The Updater writes it; the Broadcaster, the Server, the HTTP API and the
 * history read it. When clustered, every write travels through the cluster channel first and each
 * instance applies it once, so every instance's state is the same.
 */
import { Clock, DateTime, Duration, Effect, Option, Schema } from "effect"
import { Cluster } from "../cluster/Cluster.js"
import { AppConfig } from "../Config.js"
import { encodeSnapshot, MarketSnapshot } from "../market/Watchlist.js"
import { UpdateSource } from "./UpdateSource.js"

export { UpdateSource }

/** When the updater will try upstream next, and why the last attempt failed, if it did. */
export interface UpdaterStatus {
  readonly nextAttemptAt: Option.Option<number>
  readonly lastError: Option.Option<string>
}

/** What readers hear, in the order every instance applies it. */
export type StateEvent =
  | { readonly _tag: "Seeded"; readonly snapshot: MarketSnapshot }
  | { readonly _tag: "Updated"; readonly snapshot: MarketSnapshot; readonly source: UpdateSource }
  | { readonly _tag: "Failed"; readonly error: string; readonly at: number; readonly retryAfterSeconds: number }

/** The latest snapshot with its age at some moment. */
export interface Freshness {
  readonly snapshot: MarketSnapshot
  readonly ageSeconds: number
  /** Older than `FRESHNESS` (stale values are a per-currency matter: `currencyView`). */
  readonly old: boolean
}

/** What travels on the cluster channel. */
const UpdateEnvelope = Schema.Struct({ kind: Schema.Literal("update"), source: UpdateSource, snapshot: MarketSnapshot })
const Envelope = Schema.parseJson(Schema.Union(
  UpdateEnvelope,
  Schema.Struct({ kind: Schema.Literal("error"), error: Schema.String, at: Schema.Number, retryAfterSeconds: Schema.Number }),
  Schema.Struct({ kind: Schema.Literal("hold"), until: Schema.Number })
))
const encodeEnvelope = Schema.encodeSync(Envelope)
const decodeEnvelope = Schema.decodeUnknownEither(Envelope)
/** An update on its way to every instance, before their clients get it: the snapshot's own encoder (`encodeSnapshot`). */
const encodeUpdateEnvelope = (snapshot: MarketSnapshot, source: UpdateSource): string =>
  JSON.stringify({ kind: "update", source, snapshot: encodeSnapshot(snapshot) } satisfies typeof UpdateEnvelope.Encoded)

export class MarketState extends Effect.Service<MarketState>()("dashcast/MarketState", {
  effect: Effect.gen(function*() {
    const config = yield* AppConfig
    const cluster = yield* Cluster
    const freshnessMillis = Duration.toMillis(config.freshness)
    let latest: Option.Option<MarketSnapshot> = Option.none()
    let latestFetchedAt = 0
    /** True once the latest snapshot was delivered to readers (a warm-start seed is not). */
    let delivered = false
    let status: UpdaterStatus = { nextAttemptAt: Option.none(), lastError: Option.none() }
    /** Until when (epoch ms) the provider of prices asked, on any instance, not to be called. */
    let heldUntil = 0
    const listeners: Array<(event: StateEvent) => void> = []
    let refreshWanted: () => void = () => {}

    const remember = (snapshot: MarketSnapshot) => {
      latest = Option.some(snapshot)
      latestFetchedAt = DateTime.toEpochMillis(snapshot.fetched_at)
    }

    const notify = (event: StateEvent) => {
      for (const listener of listeners) listener(event)
    }

    /** Applies an update once: a snapshot not newer than the latest delivered one (a duplicate from the channel, or one overtaken) is dropped. */
    const applyUpdate = (snapshot: MarketSnapshot, source: UpdateSource) => {
      if (delivered && Option.exists(latest, (l) => l.seq >= snapshot.seq)) return
      remember(snapshot)
      delivered = true
      notify({ _tag: "Updated", snapshot, source })
    }

    const applyError = (error: string, at: number, retryAfterSeconds: number) => {
      status = { nextAttemptAt: Option.some(at + retryAfterSeconds * 1000), lastError: Option.some(error) }
      notify({ _tag: "Failed", error, at, retryAfterSeconds })
    }

    yield* cluster.onMessage((message) => {
      const envelope = decodeEnvelope(message)
      if (envelope._tag === "Left") return
      const m = envelope.right
      if (m.kind === "update") applyUpdate(m.snapshot, m.source)
      else if (m.kind === "error") applyError(m.error, m.at, m.retryAfterSeconds)
      else heldUntil = Math.max(heldUntil, m.until)
    })

    const freshness = (now: number): Option.Option<Freshness> =>
      Option.map(latest, (snapshot) => {
        const ageMillis = Math.max(0, now - latestFetchedAt)
        return { snapshot, ageSeconds: Math.round(ageMillis / 100) / 10, old: ageMillis >= freshnessMillis }
      })

    return {
      /** The latest snapshot, synchronously (socket callbacks read it). */
      current: (): Option.Option<MarketSnapshot> => latest,
      latest: Effect.sync(() => latest),
      freshness: (now: number) => freshness(now),
      view: Effect.map(Clock.currentTimeMillis, freshness),
      /** Whether a connecting client should trigger a background refresh (no snapshot is not old). */
      isOld: (now: number): boolean => Option.isSome(latest) && now - latestFetchedAt >= freshnessMillis,
      status: Effect.sync(() => status),
      statusNow: (): UpdaterStatus => status,
      setStatus: (next: UpdaterStatus) =>
        Effect.sync(() => {
          status = next
        }),
      /** Sets the latest snapshot from the cache at a warm start: readers learn it, clients are not sent it. */
      seed: (snapshot: MarketSnapshot) =>
        Effect.sync(() => {
          remember(snapshot)
          notify({ _tag: "Seeded", snapshot })
        }),
      /** Readers: called synchronously, in order, for every update and failure this instance applies. */
      subscribe: (listener: (event: StateEvent) => void) =>
        Effect.sync(() => {
          listeners.push(listener)
        }),
      /** Publishes a new snapshot to every instance's readers, this one's included. */
      publish: Effect.fn("MarketState.publish")(function*(snapshot: MarketSnapshot, source: UpdateSource) {
        const relayed = yield* cluster.broadcast(() => encodeUpdateEnvelope(snapshot, source))
        if (!relayed) applyUpdate(snapshot, source)
        yield* Effect.logDebug("update published").pipe(Effect.annotateLogs({ seq: snapshot.seq, source, relayed }))
      }),
      /** Tells every instance's readers that upstream failed and when the next attempt is. */
      publishError: Effect.fn("MarketState.publishError")(function*(error: string, retryAfterSeconds: number) {
        const at = yield* Clock.currentTimeMillis
        const relayed = yield* cluster.broadcast(() => encodeEnvelope({ kind: "error", error, at, retryAfterSeconds }))
        if (!relayed) applyError(error, at, retryAfterSeconds)
      }),
      /**
       * The provider of prices asked (through a 429 on this or another instance) not to be called
       * until `until` (epoch ms): every instance learns it, so no one's force update, refresh or
       * takeover calls it sooner.
       */
      holdUpstream: Effect.fn("MarketState.holdUpstream")(function*(until: number) {
        if (until <= heldUntil) return
        const relayed = yield* cluster.broadcast(() => encodeEnvelope({ kind: "hold", until }))
        if (!relayed) heldUntil = until
      }),
      /** What is left of the provider's wait, if any. */
      heldFor: Effect.map(Clock.currentTimeMillis, (now) =>
        heldUntil > now ? Option.some(Duration.millis(heldUntil - now)) : Option.none<Duration.Duration>()),
      /** A client found the snapshot old: asks the updater for a background refresh (it decides). */
      wantRefresh: (): void => refreshWanted(),
      /** The updater's answer to `wantRefresh`. */
      onRefreshWanted: (handler: () => void) =>
        Effect.sync(() => {
          refreshWanted = handler
        })
    }
  }),
  dependencies: [AppConfig.Default]
}) {}
