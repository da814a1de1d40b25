/**
 * Recent prices for the dashboard's chart: a bounded ring of `{t, price, seq}` points, one per
 * published summary, served oldest first by `GET /api/history`. In memory only: after a restart the
 * chart starts again from the cached summary, which is enough for a view of the last hours.
 */
import { HttpServerResponse } from "@effect/platform"
import { Effect, Layer, Schema } from "effect"
import type { SummarySnapshot } from "../market/DashboardSummary.js"

/** 24 hours at a 30 second cadence; 20 days at the default 10 minute interval. */
export const HISTORY_CAPACITY = 2_880

/** One point of the chart: the price's own time (`last_updated`), the price and its sequence number. */
export const HistoryPoint = Schema.Struct({
  t: Schema.DateTimeUtc,
  price: Schema.Number.pipe(Schema.finite(), Schema.positive()),
  seq: Schema.Int.pipe(Schema.positive())
})
export type HistoryPoint = typeof HistoryPoint.Type

/** The body of `GET /api/history`, decoded by the client SDK with this same Schema. */
export const HistoryResponse = Schema.Struct({ points: Schema.Array(HistoryPoint) })
export type HistoryResponse = typeof HistoryResponse.Type

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

  const append = (snapshot: SummarySnapshot): boolean => {
    if (snapshot.seq <= lastSeq) return false
    lastSeq = snapshot.seq
    const point: HistoryPoint = { t: snapshot.summary.last_updated, price: snapshot.summary.btc_price, seq: snapshot.seq }
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
      /** Records a published snapshot; false when it was not newer than the last one recorded. */
      append: (snapshot: SummarySnapshot) => Effect.sync(() => ring.append(snapshot)),
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
