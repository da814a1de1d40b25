/**
 * The price charts' geometry: from `{t, price}` points and a box in pixels to SVG path data and
 * axis ticks with round values. Pure, so the page only writes attributes and tests check shapes.
 */

export interface ChartPoint {
  /** Epoch milliseconds. */
  readonly t: number
  readonly price: number
}

export interface ChartBox {
  readonly width: number
  readonly height: number
  /** Room for the axes' labels, in pixels. */
  readonly padding: { readonly top: number; readonly right: number; readonly bottom: number; readonly left: number }
}

export interface Tick {
  readonly value: number
  /** Pixel position along its axis. */
  readonly at: number
}

export interface ChartGeometry {
  readonly line: string
  readonly area: string
  readonly last: { readonly x: number; readonly y: number }
  readonly yTicks: ReadonlyArray<Tick>
  readonly xTicks: ReadonlyArray<Tick>
  /** Milliseconds between time ticks: under a minute, labels need seconds. */
  readonly xStep: number
  readonly low: number
  readonly high: number
}

const SECOND = 1000
const MINUTE = 60 * SECOND
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR
const TIME_STEPS = [
  SECOND, 2 * SECOND, 5 * SECOND, 10 * SECOND, 15 * SECOND, 30 * SECOND,
  MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE,
  HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 3 * DAY, 7 * DAY, 14 * DAY
]

/** A round step (1, 2, 2.5 or 5 times a power of ten) that splits `span` into about `count` parts. */
export const niceStep = (span: number, count: number): number => {
  const raw = span / Math.max(1, count)
  if (!(raw > 0) || !Number.isFinite(raw)) return 1
  const magnitude = 10 ** Math.floor(Math.log10(raw))
  const normalized = raw / magnitude
  const nice = normalized <= 1 ? 1 : normalized <= 2 ? 2 : normalized <= 2.5 ? 2.5 : normalized <= 5 ? 5 : 10
  return nice * magnitude
}

/** Every multiple of `step` within [from, to]. */
const multiples = (from: number, to: number, step: number): Array<number> => {
  const out: Array<number> = []
  for (let v = Math.ceil(from / step) * step; v <= to + step * 1e-9; v += step) out.push(Math.round(v / step) * step)
  return out
}

/**
 * Lays out the points (any order; sorted by time here) in the box. Prices get a margin of 8 % of
 * their range (at least 0.1 % of the price, so a flat line sits in the middle); times span the
 * first to the last point. Undefined with fewer than two points: there is no line to draw yet.
 * `timeOffset` shifts tick times into the viewer's zone so that ticks fall on round local times.
 */
export const layoutChart = (
  input: ReadonlyArray<ChartPoint>,
  box: ChartBox,
  options: { readonly yTickCount?: number; readonly xTickCount?: number; readonly timeOffset?: number } = {}
): ChartGeometry | undefined => {
  const points = [...input].filter((p) => Number.isFinite(p.t) && Number.isFinite(p.price)).sort((a, b) => a.t - b.t)
  const first = points[0]
  const lastPoint = points[points.length - 1]
  if (first === undefined || lastPoint === undefined || points.length < 2) return undefined

  let low = Number.POSITIVE_INFINITY
  let high = Number.NEGATIVE_INFINITY
  for (const p of points) {
    low = Math.min(low, p.price)
    high = Math.max(high, p.price)
  }
  const margin = Math.max((high - low) * 0.08, lastPoint.price * 0.001)
  const yMin = low - margin
  const yMax = high + margin
  const tMin = first.t
  const tMax = Math.max(lastPoint.t, first.t + 1)

  const left = box.padding.left
  const right = box.width - box.padding.right
  const top = box.padding.top
  const bottom = box.height - box.padding.bottom
  const x = (t: number) => left + ((t - tMin) / (tMax - tMin)) * (right - left)
  const y = (price: number) => bottom - ((price - yMin) / (yMax - yMin)) * (bottom - top)
  const round = (n: number) => Math.round(n * 10) / 10

  const coords = points.map((p) => `${round(x(p.t))},${round(y(p.price))}`)
  const line = `M${coords.join("L")}`
  const area = `${line}L${round(x(lastPoint.t))},${round(bottom)}L${round(x(first.t))},${round(bottom)}Z`

  const yStep = niceStep(yMax - yMin, options.yTickCount ?? 4)
  const yTicks = multiples(yMin, yMax, yStep).map((value) => ({ value, at: round(y(value)) }))

  const offset = options.timeOffset ?? 0
  const wanted = (tMax - tMin) / Math.max(1, options.xTickCount ?? 4)
  const tStep = TIME_STEPS.find((s) => s >= wanted) ?? TIME_STEPS[TIME_STEPS.length - 1] ?? HOUR
  const xTicks = multiples(tMin + offset, tMax + offset, tStep).map((local) => ({ value: local - offset, at: round(x(local - offset)) }))

  return { line, area, last: { x: round(x(lastPoint.t)), y: round(y(lastPoint.price)) }, yTicks, xTicks, xStep: tStep, low, high }
}

/**
 * A small chart's line (a watchlist row, the embedded card): the points stretched over the box,
 * the price range filling its height less `inset` pixels above and below. Empty with fewer than
 * two points.
 */
export const sparklinePath = (input: ReadonlyArray<ChartPoint>, width: number, height: number, inset = 2): string => {
  const points = input.filter((p) => Number.isFinite(p.t) && Number.isFinite(p.price))
  const first = points[0]
  const last = points[points.length - 1]
  if (first === undefined || last === undefined || points.length < 2) return ""
  let low = Number.POSITIVE_INFINITY
  let high = Number.NEGATIVE_INFINITY
  for (const p of points) {
    low = Math.min(low, p.price)
    high = Math.max(high, p.price)
  }
  const span = Math.max(high - low, Math.abs(high) * 1e-6)
  const tSpan = Math.max(last.t - first.t, 1)
  const round = (n: number) => Math.round(n * 10) / 10
  return `M${points.map((p) =>
    `${round(((p.t - first.t) / tSpan) * width)},${round(inset + (1 - (p.price - low) / span) * (height - 2 * inset))}`
  ).join("L")}`
}

/**
 * A series extended by a live price, the way the server keeps it: a point in the same `step`
 * bucket as the newest replaces it, a later one is added, an older one changes nothing; points
 * older than `span` before the newest are dropped. So a chart kept live looks as it would if loaded
 * again from the server.
 */
export const extendSeries = (
  points: ReadonlyArray<readonly [number, number]>,
  point: readonly [number, number],
  step: number,
  span: number
): ReadonlyArray<readonly [number, number]> => {
  const last = points[points.length - 1]
  if (last !== undefined && point[0] <= last[0]) return points
  const sameBucket = last !== undefined && Math.floor(last[0] / step) === Math.floor(point[0] / step)
  const next = sameBucket ? [...points.slice(0, -1), point] : [...points, point]
  const from = point[0] - span
  return next[0] !== undefined && next[0][0] >= from ? next : next.filter(([t]) => t >= from)
}
