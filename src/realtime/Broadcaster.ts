/**
 * Turns the market state into protocol frames and publishes them on Bun topics, one per currency
 * (`dashboard:<currency>`). It reads the state and writes only to sockets: every update is encoded
 * once per currency and published once per topic, never per socket. It also keeps each currency's
 * latest view encoded, so a connecting socket gets its welcome synchronously.
 */
import { Effect, Option } from "effect"
import { AppConfig } from "../Config.js"
import { type Currency, currencyView } from "../market/Watchlist.js"
import * as Metrics from "../metrics/Metrics.js"
import { MarketState, type UpdateSource } from "../state/MarketState.js"
import { type EncodedView, encodeServerMessage, encodeView, updateFrame, welcomeFrame } from "./Protocol.js"

/** The Bun topic of one currency's frames. */
export const topicOf = (currency: Currency): string => `dashboard:${currency}`

/**
 * What the Broadcaster needs from the server: Bun's native pub/sub, nothing per socket. `publish`
 * also reaches the topic's event streams (the server's doing); it returns what Bun's `publish` does.
 */
export interface TopicPublisher {
  readonly publish: (topic: string, frame: string) => number
  /** WebSockets subscribed to the topic. */
  readonly subscriberCount: (topic: string) => number
  /** Event streams of the topic, for the recipients metric. */
  readonly streamCount?: (topic: string) => number
}

export class Broadcaster extends Effect.Service<Broadcaster>()("dashcast/Broadcaster", {
  effect: Effect.gen(function*() {
    const config = yield* AppConfig
    const state = yield* MarketState
    const topics = config.currencies.map((currency) => [currency, topicOf(currency)] as const)
    let publisher: Option.Option<TopicPublisher> = Option.none()
    /** Each currency's view of the latest snapshot, encoded at most once (`viewsSeq` says which snapshot). */
    let views = new Map<Currency, EncodedView>()
    let viewsSeq = 0
    /** The last update frame published per currency, re-sent as is to a socket that drained after missing it. */
    const lastFrames = new Map<Currency, string>()

    const publish = (topic: string, frame: string): number =>
      Option.match(publisher, { onNone: () => 0, onSome: (p) => p.publish(topic, frame) })
    const subscribers = (topic: string): number =>
      Option.match(publisher, { onNone: () => 0, onSome: (p) => p.subscriberCount(topic) })
    const streamsOf = (topic: string): number =>
      Option.match(publisher, { onNone: () => 0, onSome: (p) => p.streamCount?.(topic) ?? 0 })

    /** The latest snapshot's view in `currency`, encoded on first use. */
    const viewOf = (currency: Currency): Option.Option<EncodedView> =>
      Option.map(state.current(), (snapshot) => {
        if (viewsSeq !== snapshot.seq) {
          views = new Map()
          viewsSeq = snapshot.seq
        }
        const cached = views.get(currency)
        if (cached !== undefined) return cached
        const encoded = encodeView(currencyView(snapshot, currency), snapshot.seq)
        views.set(currency, encoded)
        return encoded
      })

    const deliverUpdate = (source: UpdateSource) => {
      const started = performance.now()
      const timestamp = new Date().toISOString()
      let recipients = 0
      for (const [currency, topic] of topics) {
        const view = viewOf(currency)
        if (Option.isNone(view)) continue
        const frame = updateFrame(view.value, source, timestamp)
        lastFrames.set(currency, frame)
        // `publish` returns bytes, not sockets: the topic's subscribers are the recipients.
        const count = subscribers(topic)
        Metrics.frameSent(publish(topic, frame), frame, count)
        recipients += count + streamsOf(topic)
      }
      Effect.runSync(Metrics.broadcast(source, recipients, (performance.now() - started) / 1000))
    }

    const deliverError = (error: string, at: number, retryAfterSeconds: number) => {
      const frame = encodeServerMessage({ type: "error", error, timestamp: new Date(at).toISOString(), retry_after: retryAfterSeconds })
      for (const [, topic] of topics) Metrics.frameSent(publish(topic, frame), frame, subscribers(topic))
    }

    yield* state.subscribe((event) => {
      switch (event._tag) {
        case "Updated":
          return deliverUpdate(event.source)
        case "Failed":
          return deliverError(event.error, event.at, event.retryAfterSeconds)
        case "Seeded":
          return
      }
    })

    return {
      /** Connects the running server; until then updates only refresh the encoded views. */
      attach: (p: TopicPublisher) =>
        Effect.sync(() => {
          publisher = Option.some(p)
        }),
      detach: Effect.sync(() => {
        publisher = Option.none()
      }),
      /**
       * The frame a socket gets when it connects or switches currency, built synchronously on the
       * socket's callback: the welcome when a snapshot exists, else an error saying when data is expected.
       */
      welcomeFrame: (currency: Currency, now: number): string => {
        const timestamp = new Date(now).toISOString()
        const fresh = state.freshness(now)
        const view = viewOf(currency)
        if (Option.isNone(fresh) || Option.isNone(view)) {
          const status = state.statusNow()
          const retryAfter = Option.match(status.nextAttemptAt, {
            onNone: () => 1,
            onSome: (at) => Math.max(1, Math.ceil((at - now) / 1000))
          })
          return encodeServerMessage({
            type: "error",
            error: Option.getOrElse(status.lastError, () => "No market data yet: the first fetch is in progress"),
            timestamp,
            retry_after: retryAfter
          })
        }
        return welcomeFrame(view.value, timestamp, fresh.value.ageSeconds, fresh.value.old)
      },
      /** The latest snapshot as an update to one socket (answer to `request_update`). */
      latestUpdateFrame: (currency: Currency, now: number, source: UpdateSource): Option.Option<string> =>
        Option.map(viewOf(currency), (view) => updateFrame(view, source, new Date(now).toISOString())),
      /** The update frame last published in `currency`, for a socket that may have missed it. */
      lastPublishedFrame: (currency: Currency): Option.Option<string> => Option.fromNullable(lastFrames.get(currency)),
      /**
       * Publishes a frame that is not market data (an alert firing) on `currency`'s topic, as
       * updates are published, so that every transport following the topics carries it.
       */
      publishOnTopic: (currency: Currency, frame: string): void => {
        const topic = topicOf(currency)
        Metrics.frameSent(publish(topic, frame), frame, subscribers(topic))
      },
      /** Sockets subscribed to any currency's topic. */
      subscriberCount: (): number => topics.reduce((sum, [, topic]) => sum + subscribers(topic), 0)
    }
  }),
  dependencies: [AppConfig.Default]
}) {}
