/**
 * The dashboard page's script: connects with the client SDK, writes each summary into the page,
 * keeps the price chart (history from `/api/history`, then live points), the "updated … ago" clock,
 * the connection badge and the stale/upstream banner, and speaks through one polite live region
 * at most once a minute unless something significant changes.
 */
import { DateTime } from "effect"
import { type ChartPoint, layoutChart } from "./Chart.js"
import {
  connect,
  dashboardSocketUrl,
  type DashcastStatus,
  fetchHistory,
  type SummaryEvent
} from "./DashcastClient.js"
import {
  direction,
  FEAR_GREED_BANDS,
  fearGreedBand,
  formatAge,
  formatChange,
  formatClock,
  formatCompactUsd,
  formatCountdown,
  formatPrice,
  formatPriceShort,
  formatRsi,
  RSI_ZONE_LABEL,
  rsiZone
} from "./Format.js"

const SVG = "http://www.w3.org/2000/svg"
const DAY = 24 * 60 * 60 * 1000
/** Routine announcements at most this often; significant changes sooner, but not in bursts. */
const ANNOUNCE_EVERY = 60_000
const ANNOUNCE_SIGNIFICANT_EVERY = 10_000
const SIGNIFICANT_MOVE = 0.01
/** The server keeps 2,880; a page open for days keeps a little more of its own. */
const MAX_POINTS = 5_000

const byId = <E extends Element = HTMLElement>(id: string): E => {
  const element = document.getElementById(id)
  if (element === null) throw new Error(`dashboard markup is missing #${id}`)
  return element as unknown as E
}

const ui = {
  main: byId("dashboard"),
  price: byId("price"),
  change: byId("change"),
  changeText: byId("change-text"),
  marketCap: byId("market-cap"),
  volume: byId("volume"),
  fng: byId("fng"),
  fngClass: byId("fng-class"),
  fngMeter: byId("fng-meter"),
  gaugeBands: byId<SVGGElement>("gauge-bands"),
  gaugeDot: byId<SVGCircleElement>("gauge-dot"),
  rsi: byId("rsi"),
  rsiZone: byId("rsi-zone"),
  rsiMeter: byId("rsi-meter"),
  rsiMarker: byId("rsi-marker"),
  updated: byId("updated"),
  updatedAt: byId<HTMLTimeElement>("updated-at"),
  exact: byId("last-updated-exact"),
  badge: byId("connection"),
  badgeText: byId("connection-text"),
  banner: byId("banner"),
  bannerTitle: byId("banner-title"),
  bannerDetail: byId("banner-detail"),
  chart: byId<SVGSVGElement>("chart"),
  chartTitle: byId<SVGTitleElement>("chart-title"),
  chartGrid: byId<SVGGElement>("chart-grid"),
  chartLine: byId<SVGPathElement>("chart-line"),
  chartArea: byId<SVGPathElement>("chart-area"),
  chartDot: byId<SVGCircleElement>("chart-dot"),
  chartHalo: byId<SVGCircleElement>("chart-halo"),
  chartX: byId<SVGGElement>("chart-x"),
  chartCaption: byId("chart-caption"),
  announcer: byId("announcer")
}

const base = new URL(location.href)
let latest: SummaryEvent | undefined
let status: DashcastStatus | undefined
let points: Array<ChartPoint & { readonly seq: number }> = []

// --- Summary ------------------------------------------------------------------------------------

const setValue = (element: HTMLElement, text: string, raw: number | string) => {
  element.textContent = text
  element.dataset["value"] = String(raw)
}

const markStale = (element: HTMLElement, stale: boolean) => {
  const card = element.closest<HTMLElement>(".card")
  if (card !== null) card.dataset["stale"] = String(stale)
}

const flash = (element: HTMLElement, up: boolean) => {
  element.classList.remove("flash-up", "flash-down")
  // Restart the animation on the next frame so that consecutive updates each flash.
  requestAnimationFrame(() => element.classList.add(up ? "flash-up" : "flash-down"))
}

const renderSummary = (event: SummaryEvent, previous: SummaryEvent | undefined) => {
  const s = event.summary
  const stale = new Set<string>(event.staleFields)
  setValue(ui.price, formatPrice(s.btc_price), s.btc_price)
  if (previous !== undefined && previous.summary.btc_price !== s.btc_price) flash(ui.price, s.btc_price > previous.summary.btc_price)
  ui.changeText.textContent = formatChange(s.btc_change_24h)
  ui.change.dataset["value"] = String(s.btc_change_24h)
  ui.change.dataset["direction"] = direction(s.btc_change_24h)
  setValue(ui.marketCap, formatCompactUsd(s.market_cap), s.market_cap)
  setValue(ui.volume, formatCompactUsd(s.volume_24h), s.volume_24h)

  const band = fearGreedBand(s.fear_greed_index)
  setValue(ui.fng, String(s.fear_greed_index), s.fear_greed_index)
  ui.fngClass.textContent = band.label
  ui.fngClass.dataset["band"] = band.key
  ui.fngMeter.setAttribute("aria-valuenow", String(s.fear_greed_index))
  ui.fngMeter.setAttribute("aria-valuetext", `${s.fear_greed_index}, ${band.label}`)
  const dot = gaugePoint(s.fear_greed_index)
  ui.gaugeDot.setAttribute("cx", dot.x.toFixed(2))
  ui.gaugeDot.setAttribute("cy", dot.y.toFixed(2))
  ui.gaugeDot.style.fill = `var(--band-${band.key})`
  for (const arc of ui.gaugeBands.querySelectorAll<SVGPathElement>(".band")) {
    arc.classList.toggle("dim", arc.dataset["band"] !== band.key)
  }

  const zone = rsiZone(s.rsi_14)
  setValue(ui.rsi, formatRsi(s.rsi_14), s.rsi_14)
  ui.rsiZone.textContent = RSI_ZONE_LABEL[zone]
  ui.rsiZone.dataset["zone"] = zone
  ui.rsiMeter.setAttribute("aria-valuenow", String(s.rsi_14))
  ui.rsiMeter.setAttribute("aria-valuetext", `${formatRsi(s.rsi_14)}, ${RSI_ZONE_LABEL[zone]}`)
  ui.rsiMeter.dataset["ready"] = ""
  ui.rsiMarker.style.left = `${Math.min(100, Math.max(0, s.rsi_14))}%`

  markStale(ui.price, stale.has("btc_price") || stale.has("btc_change_24h"))
  markStale(ui.marketCap, stale.has("market_cap"))
  markStale(ui.volume, stale.has("volume_24h"))
  markStale(ui.fng, stale.has("fear_greed_index"))
  markStale(ui.rsi, stale.has("rsi_14"))

  const lastUpdated = DateTime.toEpochMillis(s.last_updated)
  ui.updatedAt.dateTime = DateTime.formatIso(s.last_updated)
  ui.exact.textContent = `Last price update ${new Date(lastUpdated).toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "medium" })}.`
  ui.main.dataset["seq"] = String(event.seq)
  ui.main.setAttribute("aria-busy", "false")
  const arrow = { up: " ▲", down: " ▼", flat: "" }[direction(s.btc_change_24h)]
  document.title = `${formatPriceShort(s.btc_price)}${arrow} · dashcast`
}

// --- Chart --------------------------------------------------------------------------------------

const svg = <K extends keyof SVGElementTagNameMap>(name: K, attributes: Record<string, string | number>, text?: string) => {
  const element = document.createElementNS(SVG, name)
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value))
  if (text !== undefined) element.textContent = text
  return element
}

const GAUGE_RADIUS = 80

/** Where `value` (0-100) sits on the gauge's half circle, left to right over the top. */
const gaugePoint = (value: number) => {
  const angle = Math.PI - (Math.min(100, Math.max(0, value)) / 100) * Math.PI
  return { x: 100 + GAUGE_RADIUS * Math.cos(angle), y: 100 - GAUGE_RADIUS * Math.sin(angle) }
}

const drawGaugeBands = () => {
  const radius = GAUGE_RADIUS
  const at = (value: number) => {
    const p = gaugePoint(value)
    return `${p.x.toFixed(2)} ${p.y.toFixed(2)}`
  }
  const gap = 1.2
  for (const band of FEAR_GREED_BANDS) {
    const from = band.from === 0 ? 0 : band.from - 0.5 + gap / 2
    const to = band.to === 100 ? 100 : band.to + 0.5 - gap / 2
    const arc = svg("path", { d: `M ${at(from)} A ${radius} ${radius} 0 0 1 ${at(to)}`, class: "band", "data-band": band.key })
    arc.style.stroke = `var(--band-${band.key})`
    ui.gaugeBands.append(arc)
  }
}

const visiblePoints = (): Array<ChartPoint> => {
  const last = points[points.length - 1]
  if (last === undefined) return []
  return points.filter((p) => p.t >= last.t - DAY)
}

const renderChart = () => {
  const width = ui.chart.clientWidth
  const height = ui.chart.clientHeight
  if (width === 0 || height === 0) return
  ui.chart.setAttribute("viewBox", `0 0 ${width} ${height}`)
  const shown = visiblePoints()
  const compact = width < 480
  const plotRight = width - (compact ? 62 : 78)
  const geometry = layoutChart(shown, {
    width,
    height,
    padding: { top: 14, right: width - plotRight, bottom: 26, left: 2 }
  }, {
    yTickCount: height < 240 ? 3 : 4,
    xTickCount: compact ? 3 : 5,
    timeOffset: -new Date().getTimezoneOffset() * 60_000
  })
  ui.chartGrid.replaceChildren()
  ui.chartX.replaceChildren()
  if (geometry === undefined) {
    ui.chartLine.setAttribute("d", "")
    ui.chartArea.setAttribute("d", "")
    for (const dot of [ui.chartDot, ui.chartHalo]) dot.setAttribute("cx", "-20")
    ui.chartCaption.textContent = shown.length === 1 ? "Collecting price history… (1 point so far)" : "Collecting price history…"
    ui.chartTitle.textContent = "Price chart: collecting data"
    return
  }
  for (const tick of geometry.yTicks) {
    ui.chartGrid.append(svg("line", { x1: 0, x2: plotRight + 6, y1: tick.at, y2: tick.at }))
    ui.chartGrid.append(svg("text", { x: width, y: tick.at + 4, "text-anchor": "end" }, formatPriceShort(tick.value)))
  }
  for (const tick of geometry.xTicks) {
    const label = formatClock(tick.value, geometry.xStep < 60_000)
    // A label that would stick out of the card on the left is left out (about 7 px a character).
    if (tick.at < label.length * 3.6) continue
    ui.chartX.append(svg("text", { x: tick.at, y: height - 6, "text-anchor": "middle" }, label))
  }
  ui.chartArea.setAttribute("d", geometry.area)
  ui.chartLine.setAttribute("d", geometry.line)
  for (const dot of [ui.chartDot, ui.chartHalo]) {
    dot.setAttribute("cx", String(geometry.last.x))
    dot.setAttribute("cy", String(geometry.last.y))
  }
  const first = shown[0]
  const last = shown[shown.length - 1]
  if (first !== undefined && last !== undefined) {
    const seconds = last.t - first.t < 10 * 60_000
    // Clock times alone would be ambiguous over a whole day.
    const span = last.t - first.t >= 20 * 3_600_000
      ? "Last 24 h"
      : `${formatClock(first.t, seconds)} to ${formatClock(last.t, seconds)}`
    ui.chartCaption.textContent = `${span} · low ${formatPriceShort(geometry.low)} · high ${formatPriceShort(geometry.high)}`
    ui.chartTitle.textContent =
      `Bitcoin price, ${span.toLowerCase()}: from ${formatPriceShort(first.price)} to ${formatPriceShort(last.price)}, ` +
      `low ${formatPriceShort(geometry.low)}, high ${formatPriceShort(geometry.high)}`
  }
}

const addPoint = (event: SummaryEvent) => {
  const t = DateTime.toEpochMillis(event.summary.last_updated)
  if (points.some((p) => p.t === t)) return
  points.push({ t, price: event.summary.btc_price, seq: event.seq })
  points.sort((a, b) => a.t - b.t)
  if (points.length > MAX_POINTS) points = points.slice(-MAX_POINTS)
}

let historyRequest: AbortController | undefined

/**
 * Merges the server's history into the chart's points. Keyed by time, so points this page saw
 * before a server restart (whose history starts empty again) stay on the chart.
 */
const loadHistory = async () => {
  historyRequest?.abort()
  const controller = new AbortController()
  historyRequest = controller
  try {
    const history = await fetchHistory(base, {}, { signal: controller.signal })
    const byTime = new Map(points.map((p) => [p.t, p]))
    for (const [t, price] of history.points) byTime.set(t, { t, price, seq: 0 })
    points = [...byTime.values()].sort((a, b) => a.t - b.t).slice(-MAX_POINTS)
    renderChart()
  } catch (error) {
    // Without history the chart grows from live updates; a failed load is not worth an alarm.
    if (!controller.signal.aborted) console.warn("dashcast: could not load the price history", error)
  }
}

// --- Status, banner, clock ----------------------------------------------------------------------

const STATE_TEXT = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting", offline: "Offline" } as const

const renderClock = () => {
  const now = Date.now()
  if (latest !== undefined) ui.updatedAt.textContent = formatAge(now - latest.fetchedAt)

  if (status !== undefined) {
    const waiting = status.reconnectAt !== undefined && status.state !== "live" ? ` · retry in ${Math.max(0, Math.ceil((status.reconnectAt - now) / 1000))} s` : ""
    ui.badgeText.textContent = `${STATE_TEXT[status.state]}${status.state === "live" || status.state === "connecting" ? "" : waiting}`
    ui.badge.dataset["state"] = status.state
    ui.main.dataset["connection"] = status.state
  }
  renderBanner(now)
}

const renderBanner = (now: number) => {
  const upstream = status?.upstream
  const show = (kind: "warn" | "error", title: string, detail: string) => {
    ui.banner.hidden = false
    ui.banner.dataset["kind"] = kind
    ui.bannerTitle.textContent = title
    ui.bannerDetail.textContent = detail
  }
  const countdown = (): string => {
    if (upstream?.retryAfter === undefined) return ""
    const left = upstream.receivedAt + upstream.retryAfter * 1000 - now
    return left > 0 ? ` Next attempt in ${formatCountdown(left)}.` : " Retrying now…"
  }
  if (latest === undefined && upstream !== undefined) {
    return show("warn", "Waiting for market data.", `${upstream.error.replace(/\.$/, "")}.${countdown()}`)
  }
  if (status?.state === "offline" && latest !== undefined) {
    return show("error", "Connection to the server lost.", `Showing values from ${formatAge(now - latest.fetchedAt)}; retrying automatically.`)
  }
  const notRefreshed = (latest?.staleFields ?? []).map((f) => FIELD_NAMES[f] ?? f)
  if (upstream !== undefined && latest !== undefined) {
    const what = notRefreshed.length > 0
      ? `Not refreshed: ${notRefreshed.join(", ")}.`
      : `Showing the values from ${formatAge(now - latest.fetchedAt)}.`
    return show("warn", "The market data provider is failing.", `${what}${countdown()}`)
  }
  if (latest?.stale === true) {
    return show(
      "warn",
      "Some data is out of date.",
      notRefreshed.length > 0
        ? `Not refreshed in the last update: ${notRefreshed.join(", ")}.`
        : `The latest summary is ${formatAge(now - latest.fetchedAt).replace(" ago", " old")}; a refresh is on its way.`
    )
  }
  ui.banner.hidden = true
}

const FIELD_NAMES: Record<string, string> = {
  btc_price: "price",
  btc_change_24h: "24h change",
  market_cap: "market cap",
  volume_24h: "volume",
  fear_greed_index: "Fear & Greed",
  rsi_14: "RSI-14"
}

// --- Announcements ------------------------------------------------------------------------------

let lastAnnounced: { at: number; price: number; band: string; state: string; failing: boolean } | undefined

const describe = (event: SummaryEvent): string => {
  const s = event.summary
  const change = formatChange(s.btc_change_24h).replace("\u2212", "minus ").replace("+", "plus ")
  return `Bitcoin ${formatPriceShort(s.btc_price)}, ${change} in 24 hours. Fear and Greed ${s.fear_greed_index}, ${fearGreedBand(s.fear_greed_index).label}.`
}

const announce = () => {
  const now = Date.now()
  const state = status?.state ?? "connecting"
  const failing = status?.upstream !== undefined
  const price = latest?.summary.btc_price ?? 0
  const band = latest === undefined ? "" : fearGreedBand(latest.summary.fear_greed_index).key
  const previous = lastAnnounced
  const connectionNews = previous !== undefined && state !== previous.state && (state === "offline" || (state === "live" && previous.state === "offline"))
  const significant = previous === undefined
    ? latest !== undefined
    : connectionNews || failing !== previous.failing || band !== previous.band ||
      (previous.price > 0 && Math.abs(price - previous.price) / previous.price >= SIGNIFICANT_MOVE)
  const since = previous === undefined ? Number.POSITIVE_INFINITY : now - previous.at
  const due = latest !== undefined && since >= ANNOUNCE_EVERY && price !== previous?.price
  if (!(due || (significant && since >= ANNOUNCE_SIGNIFICANT_EVERY))) return
  const parts: Array<string> = []
  if (connectionNews) parts.push(state === "offline" ? "Connection lost; retrying." : "Connection restored.")
  if (previous !== undefined && failing !== previous.failing) parts.push(failing ? "The market data provider is failing." : "Market data is flowing again.")
  if (latest !== undefined) parts.push(describe(latest))
  ui.announcer.textContent = parts.join(" ")
  lastAnnounced = { at: now, price, band, state, failing }
}

// --- Wiring -------------------------------------------------------------------------------------

drawGaugeBands()

const client = connect(dashboardSocketUrl(base))

client.onSummary((event) => {
  const previous = latest
  latest = event
  renderSummary(event, previous)
  addPoint(event)
  renderChart()
  renderClock()
  announce()
})

let wasLive = false
client.onStatus((next) => {
  status = next
  const live = next.state === "live"
  // On the first connection and after every reconnect the history may have moved on without us.
  if (live && !wasLive) void loadHistory()
  wasLive = live
  renderClock()
  announce()
})

setInterval(() => {
  renderClock()
  announce()
}, 1000)
new ResizeObserver(() => renderChart()).observe(ui.chart)
// Closing on pagehide lets the browser keep the page in its back/forward cache; coming back from
// there starts afresh.
addEventListener("pagehide", () => client.close())
addEventListener("pageshow", (event: PageTransitionEvent) => {
  if (event.persisted) location.reload()
})
