/**
 * The price chart's geometry: from `{t, price}` points and a box in pixels to SVG path data and
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
const TIME_STEPS = [
  SECOND, 2 * SECOND, 5 * SECOND, 10 * SECOND, 15 * SECOND, 30 * SECOND,
  MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE,
  HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, 24 * HOUR
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
