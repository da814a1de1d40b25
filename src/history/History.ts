/**
 * Recent prices for the dashboard's chart: a bounded ring of `{t, price, seq}` points of the first
 * watched asset in the first currency, one per published snapshot, served oldest first by
 * `GET /api/history`. It reads the market state like every other reader. In memory only: after a
 * restart the chart starts again from the cached snapshot.
 */
import { HttpServerResponse } from "@effect/platform"
import { Effect, Layer, Option, Schema } from "effect"
import { AppConfig } from "../Config.js"
import type { MarketSnapshot } from "../market/Watchlist.js"
import { MarketState } from "../state/MarketState.js"
import { HistoryPoint, HistoryResponse } from "./HistoryPoint.js"

export { HistoryPoint, HistoryResponse }

/** 24 hours at a 30 second cadence; 20 days at the default 10 minute interval. */
export const HISTORY_CAPACITY = 2_880

const encodeResponse = Schema.encodeSync(HistoryResponse)

/**
 * The ring itself, synchronous: at most `capacity` points, the oldest dropped first. A snapshot
 * whose `seq` is not newer than the last one kept (the same summary published again) is ignored,
 * so the points stay in publication order without duplicates.
 */
const makeRing = (capacity: number) => {
  const slots: Array<HistoryPoint | undefined> = new Array(capacity)
  let start = 0
  let size = 0
  let lastSeq = 0

  const append = (point: HistoryPoint): boolean => {
    if (point.seq <= lastSeq) return false
    lastSeq = point.seq
    if (size < capacity) {
      slots[(start + size) % capacity] = point
      size++
    } else {
      slots[start] = point
      start = (start + 1) % capacity
    }
    return true
  }

  const list = (): ReadonlyArray<HistoryPoint> => {
    const points: Array<HistoryPoint> = []
    for (let i = 0; i < size; i++) {
      const point = slots[(start + i) % capacity]
      if (point !== undefined) points.push(point)
    }
    return points
  }

  return { append, list }
}

const make = (capacity: number) =>
  Effect.sync(() => {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`history capacity must be a positive integer, got ${capacity}`)
    const ring = makeRing(capacity)
    const list = Effect.sync(ring.list)
    return {
      capacity,
      /** Records a point; false when it was not newer than the last one recorded. */
      append: (point: HistoryPoint) => Effect.sync(() => ring.append(point)),
      /** The points kept, oldest first. */
      list,
      /** The answer of `GET /api/history`: `{"points":[{"t":ISO,"price":n,"seq":n},...]}`, oldest first. */
      handler: Effect.map(list, (points) =>
        HttpServerResponse.unsafeJson(encodeResponse({ points }), { headers: { "cache-control": "no-store" } }))
    } as const
  })

export class History extends Effect.Service<History>()("dashcast/History", {
  effect: make(HISTORY_CAPACITY)
}) {
  /** A History that keeps at most `capacity` points (tests use small rings). */
  static readonly layerWithCapacity = (capacity: number): Layer.Layer<History> =>
    Layer.effect(History, Effect.map(make(capacity), (service) => History.make(service)))
}

/**
 * Records every snapshot this instance applies (the warm-start one included): the first asset's
 * price in the first currency, at the provider's time.
 */
export const HistoryRecorder: Layer.Layer<never, never, History | MarketState | AppConfig> = Layer.effectDiscard(
  Effect.gen(function*() {
    const history = yield* History
    const state = yield* MarketState
    const config = yield* AppConfig
    const [asset] = config.assets
    const [currency] = config.currencies
    const record = (snapshot: MarketSnapshot) => {
      const quote = snapshot.view.quotes[currency]?.[asset]
      if (quote !== undefined) Effect.runSync(history.append({ t: quote.last_updated, price: quote.price, seq: snapshot.seq }))
    }
    Option.map(state.current(), record)
    yield* state.subscribe((event) => {
      if (event._tag !== "Failed") record(event.snapshot)
    })
  })
)
