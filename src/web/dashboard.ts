/**
 * The watchlist page's script: asks the server what it watches, picks the currency and asset to show
 * (address, then this browser's last choice, then the server's first), connects with the client SDK
 * and writes every snapshot into the list (price, 24h change, a small chart of the last 24 hours) and
 * into the selected asset's detail (big price, chart over 24h / 7d / 30d from `/api/history`, kept
 * live, RSI-14), the market totals and the Fear & Greed gauge. The currency switch moves the open
 * connection to another currency (`subscribe`), without reconnecting. It keeps the "updated … ago"
 * clock, the connection badge (which names the fallback transport when WebSockets are blocked) and
 * the stale/upstream banner, and speaks through one polite live region at most once a minute unless
 * something significant changes.
 */
import { DateTime } from "effect"
import type { HistoryRange } from "../history/HistoryPoint.js"
import { RANGES } from "../history/Tiers.js"
import type { AssetQuote } from "../market/Watchlist.js"
import { alertToasts } from "./AlertToast.js"
import { type ChartPoint, extendSeries, layoutChart, sparklinePath } from "./Chart.js"
import {
  callApi,
  connect,
  type DashcastClient,
  dashboardSocketUrl,
  type DashcastStatus,
  fetchHistory,
  fetchSparklines,
  type MarketEvent
} from "./DashcastClient.js"
import {
  currencyCode,
  direction,
  FEAR_GREED_BANDS,
  fearGreedBand,
  formatAge,
  formatChange,
  formatClock,
  formatCompactMoney,
  formatCountdown,
  formatDay,
  formatPrice,
  formatPriceShort,
  formatRsi,
  RSI_ZONE_LABEL,
  rsiZone
} from "./Format.js"
import { addressOf, chooseSelection, parseStored, type Selection, STORAGE_KEY } from "./Selection.js"

type Point = readonly [number, number]

const SVG = "http://www.w3.org/2000/svg"
/** Routine announcements at most this often; significant changes sooner, but not in bursts. */
const ANNOUNCE_EVERY = 60_000
const ANNOUNCE_SIGNIFICANT_EVERY = 10_000
const SIGNIFICANT_MOVE = 0.01
const SPARK_WIDTH = 64
const SPARK_HEIGHT = 28
/** The rows' small charts: the last 24 hours, hourly, as `/api/sparklines` serves them. */
const SPARK_STEP = 3_600_000
const SPARK_SPAN = 24 * 3_600_000

const byId = <E extends Element = HTMLElement>(id: string): E => {
  const element = document.getElementById(id)
  if (element === null) throw new Error(`dashboard markup is missing #${id}`)
  return element as unknown as E
}

const ui = {
  main: byId("dashboard"),
  pair: byId("pair"),
  currencySwitch: byId("currency-switch"),
  currency: byId<HTMLSelectElement>("currency"),
  watchlistCard: byId("watchlist-card"),
  watchlist: byId<HTMLUListElement>("watchlist"),
  watchlistCount: byId("watchlist-count"),
  priceCard: byId("price-label").closest<HTMLElement>(".card") ?? byId("dashboard"),
  priceLabel: byId("price-label"),
  price: byId("price"),
  change: byId("change"),
  changeText: byId("change-text"),
  assetStats: byId("asset-stats"),
  ranges: [...document.querySelectorAll<HTMLButtonElement>(".range")],
  marketCap: byId("market-cap"),
  capNote: byId("cap-note"),
  volume: byId("volume"),
  volumeNote: byId("volume-note"),
  fng: byId("fng"),
  fngClass: byId("fng-class"),
  fngMeter: byId("fng-meter"),
  gaugeBands: byId<SVGGElement>("gauge-bands"),
  gaugeDot: byId<SVGCircleElement>("gauge-dot"),
  rsi: byId("rsi"),
  rsiHint: byId("rsi-hint"),
  rsiZone: byId("rsi-zone"),
  rsiMeter: byId("rsi-meter"),
  rsiMarker: byId("rsi-marker"),
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

/** What the server watches: its currencies, and the assets it quotes (ids, with names once known). */
let currencies: ReadonlyArray<string> = []
const names = new Map<string, { readonly name: string; readonly symbol: string }>()
let assetIds: ReadonlyArray<string> = []
let selection: Selection = { currency: "", asset: "" }
let range: HistoryRange = "24h"
let latest: MarketEvent | undefined
let status: DashcastStatus | undefined
let client: DashcastClient | undefined
/** The rows' small charts, in the selected currency. */
const sparks = new Map<string, ReadonlyArray<Point>>()
/** The detail chart: whose, in what, over which range, and its points. */
let chart: { readonly asset: string; readonly currency: string; readonly range: HistoryRange; readonly points: ReadonlyArray<Point> } | undefined
let chartState: "loading" | "ready" | "failed" = "loading"

const nameOf = (id: string) => names.get(id)?.name ?? id
const symbolOf = (id: string) => names.get(id)?.symbol ?? ""
const quoteOf = (id: string): AssetQuote | undefined => latest?.assets.find((a) => a.id === id)
const timeOf = (quote: AssetQuote) => DateTime.toEpochMillis(quote.last_updated)

// --- Choosing what to show ----------------------------------------------------------------------

const storage = (): Storage | undefined => {
  try {
    return window.localStorage
  } catch {
    // A sandboxed frame or a browser that forbids storage: the address still carries the choice.
    return undefined
  }
}

/** The choice goes into the address (so a link shows the same) and into local storage. */
const remember = () => {
  history.replaceState(history.state, "", addressOf(location.href, selection))
  try {
    storage()?.setItem(STORAGE_KEY, JSON.stringify(selection))
  } catch {
    // Storage full or forbidden: the address is enough.
  }
}

/** `GET /api/assets`, retried until the server answers: what it watches decides what may be shown. */
const loadAssets = async () => {
  for (let attempt = 0; ; attempt++) {
    try {
      return await callApi(base, (api) => api.assets())
    } catch {
      await new Promise((resolve) => setTimeout(resolve, Math.min(15_000, 1_000 * 2 ** attempt)))
    }
  }
}

// --- The list -----------------------------------------------------------------------------------

const rows = new Map<string, {
  readonly button: HTMLButtonElement
  readonly name: HTMLElement
  readonly symbol: HTMLElement
  readonly price: HTMLElement
  readonly change: HTMLElement
  readonly changeText: HTMLElement
  readonly spark: SVGPathElement
}>()

const svg = <K extends keyof SVGElementTagNameMap>(name: K, attributes: Record<string, string | number>, text?: string) => {
  const element = document.createElementNS(SVG, name)
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value))
  if (text !== undefined) element.textContent = text
  return element
}

const element = <K extends keyof HTMLElementTagNameMap>(name: K, className: string, text = "") => {
  const e = document.createElement(name)
  e.className = className
  e.textContent = text
  return e
}

const buildRows = (missing: ReadonlyArray<string>) => {
  ui.watchlist.replaceChildren()
  rows.clear()
  for (const id of assetIds) {
    const button = element("button", "row")
    button.type = "button"
    button.dataset["asset"] = id
    const name = element("span", "row-name", nameOf(id))
    const symbol = element("span", "row-symbol", symbolOf(id))
    const sparkSvg = svg("svg", {
      class: "row-spark",
      viewBox: `0 0 ${SPARK_WIDTH} ${SPARK_HEIGHT}`,
      preserveAspectRatio: "none",
      "aria-hidden": "true",
      focusable: "false"
    })
    const spark = svg("path", { class: "spark", d: "" })
    sparkSvg.append(spark)
    const price = element("span", "row-price", "—")
    const change = element("span", "change row-change")
    change.dataset["direction"] = "flat"
    const arrow = element("span", "arrow")
    arrow.setAttribute("aria-hidden", "true")
    const changeText = element("span", "change-value", "—")
    change.append(arrow, changeText)
    button.append(name, symbol, sparkSvg, price, change)
    button.addEventListener("click", () => select(id))
    const item = document.createElement("li")
    item.append(button)
    ui.watchlist.append(item)
    rows.set(id, { button, name, symbol, price, change, changeText, spark })
  }
  for (const id of missing) {
    ui.watchlist.append(element("li", "row-missing", `${id}: not known to the provider`))
  }
  ui.watchlistCount.textContent = `${assetIds.length} ${assetIds.length === 1 ? "asset" : "assets"}`
  markSelected()
}

const markSelected = () => {
  for (const [id, row] of rows) row.button.setAttribute("aria-current", String(id === selection.asset))
}

// Arrow keys move between the rows; Home and End go to the first and the last.
ui.watchlist.addEventListener("keydown", (event) => {
  const buttons = [...rows.values()].map((r) => r.button)
  const at = buttons.findIndex((b) => b === document.activeElement)
  if (at < 0) return
  const target = event.key === "ArrowDown"
    ? buttons[Math.min(buttons.length - 1, at + 1)]
    : event.key === "ArrowUp"
    ? buttons[Math.max(0, at - 1)]
    : event.key === "Home"
    ? buttons[0]
    : event.key === "End"
    ? buttons[buttons.length - 1]
    : undefined
  if (target === undefined) return
  event.preventDefault()
  target.focus()
})

const renderRow = (quote: AssetQuote, stale: boolean) => {
  const row = rows.get(quote.id)
  if (row === undefined) return
  row.name.textContent = quote.name
  row.symbol.textContent = quote.symbol
  row.price.textContent = formatPrice(quote.price, selection.currency)
  row.price.dataset["value"] = String(quote.price)
  row.button.dataset["stale"] = String(stale)
  row.button.dataset["pending"] = "false"
  const change = quote.change_24h
  row.changeText.textContent = change === null ? "—" : formatChange(change)
  row.change.dataset["direction"] = change === null ? "flat" : direction(change)
  row.button.setAttribute(
    "aria-label",
    `${quote.name}, ${formatPrice(quote.price, selection.currency)}${stale ? " (not refreshed)" : ""}${
      change === null ? "" : `, ${spokenChange(change)} in 24 hours`
    }`
  )
  renderSpark(quote.id)
}

const renderSpark = (id: string) => {
  const row = rows.get(id)
  if (row === undefined) return
  const points = sparks.get(id) ?? []
  row.spark.setAttribute("d", sparklinePath(points.map(([t, price]) => ({ t, price })), SPARK_WIDTH, SPARK_HEIGHT))
  const first = points[0]
  const last = points[points.length - 1]
  row.spark.dataset["direction"] = first === undefined || last === undefined ? "flat" : last[1] > first[1] ? "up" : last[1] < first[1] ? "down" : "flat"
  row.spark.dataset["count"] = String(points.length)
}

let sparkRequest: AbortController | undefined

/** Every row's last 24 hours in the selected currency, in one request. */
const loadSparklines = async () => {
  sparkRequest?.abort()
  const controller = new AbortController()
  sparkRequest = controller
  const currency = selection.currency
  try {
    const answer = await fetchSparklines(base, currency, { signal: controller.signal })
    if (controller.signal.aborted || currency !== selection.currency) return
    for (const series of answer.series) {
      let points: ReadonlyArray<Point> = series.points
      const quote = latest?.currency === currency ? quoteOf(series.asset) : undefined
      if (quote !== undefined) points = extendSeries(points, [timeOf(quote), quote.price], SPARK_STEP, SPARK_SPAN)
      sparks.set(series.asset, points)
      renderSpark(series.asset)
    }
  } catch (error) {
    // The rows still show prices; their small charts grow from live prices.
    if (!controller.signal.aborted) console.warn("dashcast: could not load the small charts", error)
  }
}

// --- The selected asset -------------------------------------------------------------------------

const setValue = (target: HTMLElement, text: string, raw: number | string) => {
  target.textContent = text
  target.dataset["value"] = String(raw)
}

const markStale = (target: HTMLElement, stale: boolean) => {
  const card = target.closest<HTMLElement>(".card")
  if (card !== null) card.dataset["stale"] = String(stale)
}

const flash = (target: HTMLElement, up: boolean) => {
  target.classList.remove("flash-up", "flash-down")
  // Restart the animation on the next frame so that consecutive updates each flash.
  requestAnimationFrame(() => target.classList.add(up ? "flash-up" : "flash-down"))
}

const spokenChange = (change: number) => formatChange(change).replace("\u2212", "minus ").replace("+", "plus ")

const stalePaths = () => new Set(latest?.stalePaths ?? [])
const quoteIsStale = (id: string) => {
  const paths = stalePaths()
  return paths.has(`currencies.${selection.currency}`) || paths.has(`assets.${id}`)
}

const renderHeader = () => {
  ui.pair.textContent = `${nameOf(selection.asset)} · ${currencyCode(selection.currency)}`
  ui.priceLabel.textContent = `${nameOf(selection.asset)} price`
  ui.rsiHint.textContent = `daily · ${nameOf(selection.asset)}`
}

const renderDetail = (previousPrice: number | undefined) => {
  renderHeader()
  const quote = quoteOf(selection.asset)
  if (quote === undefined) {
    setValue(ui.price, "—", "")
    ui.changeText.textContent = "—"
    ui.change.dataset["direction"] = "flat"
    ui.assetStats.textContent = ""
    return
  }
  const currency = selection.currency
  setValue(ui.price, formatPrice(quote.price, currency), quote.price)
  if (previousPrice !== undefined && previousPrice !== quote.price) flash(ui.price, quote.price > previousPrice)
  const change = quote.change_24h
  ui.changeText.textContent = change === null ? "—" : formatChange(change)
  ui.change.dataset["value"] = String(change)
  ui.change.dataset["direction"] = change === null ? "flat" : direction(change)
  ui.assetStats.replaceChildren(
    ...(quote.market_cap === null ? [] : ["Market cap ", element("strong", "", formatCompactMoney(quote.market_cap, currency))]),
    ...(quote.market_cap !== null && quote.volume_24h !== null ? [" · "] : []),
    ...(quote.volume_24h === null ? [] : ["24h volume ", element("strong", "", formatCompactMoney(quote.volume_24h, currency))])
  )
  markStale(ui.price, quoteIsStale(quote.id))

  const rsi = quote.rsi_14
  if (rsi === null) {
    setValue(ui.rsi, "—", "")
    ui.rsiZone.textContent = "No daily closes yet"
    ui.rsiZone.dataset["zone"] = ""
    ui.rsiMeter.setAttribute("aria-valuetext", "no data yet")
    delete ui.rsiMeter.dataset["ready"]
  } else {
    const zone = rsiZone(rsi)
    setValue(ui.rsi, formatRsi(rsi), rsi)
    ui.rsiZone.textContent = RSI_ZONE_LABEL[zone]
    ui.rsiZone.dataset["zone"] = zone
    ui.rsiMeter.setAttribute("aria-valuenow", String(rsi))
    ui.rsiMeter.setAttribute("aria-valuetext", `${formatRsi(rsi)}, ${RSI_ZONE_LABEL[zone]}`)
    ui.rsiMeter.dataset["ready"] = ""
    ui.rsiMarker.style.left = `${Math.min(100, Math.max(0, rsi))}%`
  }
  markStale(ui.rsi, stalePaths().has(`assets.${quote.id}.rsi_14`))

  const arrow = { up: " ▲", down: " ▼", flat: "" }[change === null ? "flat" : direction(change)]
  document.title = `${formatPriceShort(quote.price, currency)}${arrow} · ${quote.name} · dashcast`
}

const renderMarket = (event: MarketEvent) => {
  const { market } = event
  const code = currencyCode(event.currency)
  const paths = stalePaths()
  if (market.total_market_cap !== undefined) setValue(ui.marketCap, formatCompactMoney(market.total_market_cap, event.currency), market.total_market_cap)
  if (market.total_volume !== undefined) setValue(ui.volume, formatCompactMoney(market.total_volume, event.currency), market.total_volume)
  ui.capNote.textContent = `All coins, in ${code}`
  ui.volumeNote.textContent = `All coins, in ${code}`
  markStale(ui.marketCap, paths.has("market.total_market_cap"))
  markStale(ui.volume, paths.has("market.total_volume"))

  const index = market.fear_greed_index
  if (index !== undefined) {
    const band = fearGreedBand(index)
    // alternative.me's own words for the value; the band only colours it.
    const label = market.fear_greed_label ?? band.label
    setValue(ui.fng, String(index), index)
    ui.fngClass.textContent = label
    ui.fngClass.dataset["band"] = band.key
    ui.fngMeter.setAttribute("aria-valuenow", String(index))
    ui.fngMeter.setAttribute("aria-valuetext", `${index}, ${label}`)
    const dot = gaugePoint(index)
    ui.gaugeDot.setAttribute("cx", dot.x.toFixed(2))
    ui.gaugeDot.setAttribute("cy", dot.y.toFixed(2))
    ui.gaugeDot.style.fill = `var(--band-${band.key})`
    for (const arc of ui.gaugeBands.querySelectorAll<SVGPathElement>(".band")) arc.classList.toggle("dim", arc.dataset["band"] !== band.key)
  }
  markStale(ui.fng, paths.has("market.fear_greed_index"))
}

// --- Fear & Greed gauge -------------------------------------------------------------------------

const GAUGE_RADIUS = 80

/** Where `value` (0-100) sits on the gauge's half circle, left to right over the top. */
const gaugePoint = (value: number) => {
  const angle = Math.PI - (Math.min(100, Math.max(0, value)) / 100) * Math.PI
  return { x: 100 + GAUGE_RADIUS * Math.cos(angle), y: 100 - GAUGE_RADIUS * Math.sin(angle) }
}

const drawGaugeBands = () => {
  const at = (value: number) => {
    const p = gaugePoint(value)
    return `${p.x.toFixed(2)} ${p.y.toFixed(2)}`
  }
  const gap = 1.2
  for (const band of FEAR_GREED_BANDS) {
    const from = band.from === 0 ? 0 : band.from - 0.5 + gap / 2
    const to = band.to === 100 ? 100 : band.to + 0.5 - gap / 2
    const arc = svg("path", { d: `M ${at(from)} A ${GAUGE_RADIUS} ${GAUGE_RADIUS} 0 0 1 ${at(to)}`, class: "band", "data-band": band.key })
    arc.style.stroke = `var(--band-${band.key})`
    ui.gaugeBands.append(arc)
  }
}

// --- The chart ----------------------------------------------------------------------------------

const RANGE_WORDS: Record<HistoryRange, string> = { "24h": "Last 24 h", "7d": "Last 7 days", "30d": "Last 30 days" }

const renderChart = () => {
  const width = ui.chart.clientWidth
  const height = ui.chart.clientHeight
  const shown: ReadonlyArray<ChartPoint> = (chart?.points ?? []).map(([t, price]) => ({ t, price }))
  const currency = chart?.currency ?? selection.currency
  ui.chart.dataset["asset"] = chart?.asset ?? ""
  ui.chart.dataset["currency"] = currency
  ui.chart.dataset["range"] = chart?.range ?? range
  ui.chart.dataset["count"] = String(shown.length)
  ui.chart.dataset["state"] = chartState
  if (width === 0 || height === 0) return
  ui.chart.setAttribute("viewBox", `0 0 ${width} ${height}`)
  const compact = width < 480
  const plotRight = width - (compact ? 62 : 78)
  const geometry = layoutChart(shown, { width, height, padding: { top: 14, right: width - plotRight, bottom: 26, left: 2 } }, {
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
    ui.chartCaption.textContent = chartState === "failed"
      ? "The price history could not be loaded; the chart grows from live prices."
      : chartState === "loading"
      ? "Loading the price history…"
      : "No price history yet: the chart grows from live prices."
    ui.chartTitle.textContent = "Price chart: no data yet"
    return
  }
  for (const tick of geometry.yTicks) {
    ui.chartGrid.append(svg("line", { x1: 0, x2: plotRight + 6, y1: tick.at, y2: tick.at }))
    ui.chartGrid.append(svg("text", { x: width, y: tick.at + 4, "text-anchor": "end" }, formatPriceShort(tick.value, currency)))
  }
  const days = geometry.xStep >= 24 * 3_600_000
  for (const tick of geometry.xTicks) {
    const label = days ? formatDay(tick.value, chart?.range === "7d") : formatClock(tick.value, geometry.xStep < 60_000)
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
  if (first === undefined || last === undefined) return
  const wanted = RANGES[chart?.range ?? range].span
  // A series younger than its range (the history grows as dashcast runs) says where it starts.
  const span = last.t - first.t < wanted * 0.9
    ? `Since ${days || last.t - first.t > 20 * 3_600_000 ? formatDay(first.t, false) : formatClock(first.t)}`
    : RANGE_WORDS[chart?.range ?? range]
  const low = formatPrice(geometry.low, currency)
  const high = formatPrice(geometry.high, currency)
  ui.chartCaption.textContent = `${span} · low ${low} · high ${high}`
  ui.chartTitle.textContent = `${nameOf(chart?.asset ?? selection.asset)} price in ${currencyCode(currency)}, ${span.toLowerCase()}: ` +
    `from ${formatPrice(first.price, currency)} to ${formatPrice(last.price, currency)}, low ${low}, high ${high}`
}

let chartRequest: AbortController | undefined

/** The selected asset's history over the selected range, then kept live by every snapshot. */
const loadChart = async () => {
  // A server whose every id is unknown to the provider has no asset to chart.
  if (selection.asset === "") return
  chartRequest?.abort()
  const controller = new AbortController()
  chartRequest = controller
  const wanted = { asset: selection.asset, currency: selection.currency, range }
  chart = { ...wanted, points: [] }
  chartState = "loading"
  renderChart()
  try {
    const answer = await fetchHistory(base, wanted, { signal: controller.signal })
    if (controller.signal.aborted) return
    chart = { ...wanted, points: answer.points }
    chartState = "ready"
    extendChart()
  } catch (error) {
    if (controller.signal.aborted) return
    chartState = "failed"
    console.warn("dashcast: could not load the price history", error)
  }
  renderChart()
}

/** Adds the selected asset's live price to the chart, as the server adds it to its history. */
const extendChart = () => {
  if (chart === undefined || chartState !== "ready" || latest?.currency !== chart.currency) return
  const quote = quoteOf(chart.asset)
  if (quote === undefined) return
  const { span, tiers } = RANGES[chart.range]
  const step = tiers[0]?.step ?? 60_000
  chart = { ...chart, points: extendSeries(chart.points, [timeOf(quote), quote.price], step, span) }
}

// --- Status, banner, clock ----------------------------------------------------------------------

const STATE_TEXT = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting", offline: "Offline" } as const

/**
 * The connection badge's text and attributes: the state, the retry countdown, and, when the
 * WebSocket is blocked and the client lives on Server-Sent Events, that transport.
 */
const renderBadge = (next: DashcastStatus, now: number) => {
  const waiting = next.reconnectAt !== undefined && next.state !== "live" ? ` · retry in ${Math.max(0, Math.ceil((next.reconnectAt - now) / 1000))} s` : ""
  const fallback = next.state === "live" && next.transport === "sse" ? " · HTTP stream" : ""
  ui.badgeText.textContent = `${STATE_TEXT[next.state]}${next.state === "live" || next.state === "connecting" ? fallback : waiting}`
  ui.badge.dataset["state"] = next.state
  ui.badge.dataset["transport"] = next.transport
  ui.badge.title = fallback === "" ? "" : "WebSockets are blocked on this network: live updates come as Server-Sent Events"
  ui.main.dataset["connection"] = next.state
}

const renderClock = () => {
  const now = Date.now()
  if (latest !== undefined) ui.updatedAt.textContent = formatAge(now - latest.fetchedAt)
  if (status !== undefined) renderBadge(status, now)
  renderBanner(now)
}

/** The stale values of the latest snapshot, as words. */
const notRefreshed = (): ReadonlyArray<string> =>
  (latest?.stalePaths ?? []).flatMap((path) => {
    const [kind, id, field] = path.split(".")
    if (kind === "currencies") return [`every price in ${currencyCode(id ?? "")}`]
    if (kind === "assets" && field === "rsi_14") return [`RSI-14 of ${nameOf(id ?? "")}`]
    if (kind === "assets") return [`the price of ${nameOf(id ?? "")}`]
    if (path === "market.total_market_cap") return ["market cap"]
    if (path === "market.total_volume") return ["volume"]
    if (path === "market.fear_greed_index") return ["Fear & Greed"]
    return []
  })

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
  const stale = notRefreshed()
  if (upstream !== undefined && latest !== undefined) {
    const what = stale.length > 0 ? `Not refreshed: ${stale.join(", ")}.` : `Showing the values from ${formatAge(now - latest.fetchedAt)}.`
    return show("warn", "The market data provider is failing.", `${what}${countdown()}`)
  }
  if (latest?.stale === true) {
    return show(
      "warn",
      "Some data is out of date.",
      stale.length > 0
        ? `Not refreshed in the last update: ${stale.join(", ")}.`
        : `The latest snapshot is ${formatAge(now - latest.fetchedAt).replace(" ago", " old")}; a refresh is on its way.`
    )
  }
  ui.banner.hidden = true
}

// --- Announcements ------------------------------------------------------------------------------

let lastAnnounced: { at: number; asset: string; price: number; band: string; state: string; failing: boolean } | undefined

const describe = (quote: AssetQuote): string => {
  const change = quote.change_24h === null ? "" : `, ${spokenChange(quote.change_24h)} in 24 hours`
  const index = latest?.market.fear_greed_index
  const fng = index === undefined ? "" : ` Fear and Greed ${index}, ${latest?.market.fear_greed_label ?? fearGreedBand(index).label}.`
  return `${quote.name} ${formatPriceShort(quote.price, selection.currency)}${change}.${fng}`
}

const announce = () => {
  const now = Date.now()
  const state = status?.state ?? "connecting"
  const failing = status?.upstream !== undefined
  const quote = quoteOf(selection.asset)
  const price = quote?.price ?? 0
  const index = latest?.market.fear_greed_index
  const band = index === undefined ? "" : fearGreedBand(index).key
  const previous = lastAnnounced
  const connectionNews = previous !== undefined && state !== previous.state &&
    (state === "offline" || (state === "live" && previous.state === "offline"))
  const significant = previous === undefined
    ? quote !== undefined
    : connectionNews || failing !== previous.failing || band !== previous.band || previous.asset !== selection.asset ||
      (previous.price > 0 && Math.abs(price - previous.price) / previous.price >= SIGNIFICANT_MOVE)
  const since = previous === undefined ? Number.POSITIVE_INFINITY : now - previous.at
  const due = quote !== undefined && since >= ANNOUNCE_EVERY && price !== previous?.price
  if (!(due || (significant && since >= ANNOUNCE_SIGNIFICANT_EVERY))) return
  const parts: Array<string> = []
  if (connectionNews) parts.push(state === "offline" ? "Connection lost; retrying." : "Connection restored.")
  if (previous !== undefined && failing !== previous.failing) parts.push(failing ? "The market data provider is failing." : "Market data is flowing again.")
  if (quote !== undefined) parts.push(describe(quote))
  ui.announcer.textContent = parts.join(" ")
  lastAnnounced = { at: now, asset: selection.asset, price, band, state, failing }
}

// --- Choices ------------------------------------------------------------------------------------

const select = (asset: string) => {
  if (asset === selection.asset) return
  selection = { ...selection, asset }
  remember()
  markSelected()
  renderDetail(undefined)
  void loadChart()
  announce()
  // On a phone the detail is above the list: bring it into view.
  if (matchMedia("(max-width: 640px)").matches) {
    ui.priceCard.scrollIntoView({ behavior: matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth", block: "start" })
  }
}

const switchCurrency = (currency: string) => {
  if (currency === selection.currency || !currencies.includes(currency)) return
  selection = { ...selection, currency }
  remember()
  // The open connection switches (a `subscribe`); until the welcome in the new currency arrives,
  // the rows say that their prices are on their way.
  client?.setCurrency(currency)
  for (const row of rows.values()) row.button.dataset["pending"] = "true"
  sparks.clear()
  for (const id of rows.keys()) renderSpark(id)
  renderHeader()
  void loadSparklines()
  void loadChart()
}

for (const button of ui.ranges) {
  button.addEventListener("click", () => {
    const wanted = button.dataset["range"]
    const next = wanted === "7d" || wanted === "30d" ? wanted : "24h"
    if (next === range) return
    range = next
    for (const b of ui.ranges) b.setAttribute("aria-pressed", String(b === button))
    void loadChart()
  })
}
ui.currency.addEventListener("change", () => switchCurrency(ui.currency.value))

// --- Wiring -------------------------------------------------------------------------------------

const onMarket = (event: MarketEvent) => {
  if (event.currency !== selection.currency) return
  const previousPrice = latest?.currency === event.currency ? quoteOf(selection.asset)?.price : undefined
  latest = event
  for (const quote of event.assets) {
    names.set(quote.id, { name: quote.name, symbol: quote.symbol })
    const points = sparks.get(quote.id)
    if (points !== undefined) sparks.set(quote.id, extendSeries(points, [timeOf(quote), quote.price], SPARK_STEP, SPARK_SPAN))
    renderRow(quote, quoteIsStale(quote.id))
  }
  renderDetail(previousPrice)
  renderMarket(event)
  extendChart()
  renderChart()
  const selected = quoteOf(selection.asset)
  if (selected !== undefined) {
    ui.updatedAt.dateTime = DateTime.formatIso(selected.last_updated)
    ui.exact.textContent = `Last price update ${
      new Date(timeOf(selected)).toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "medium" })
    }.`
  }
  ui.main.dataset["seq"] = String(event.seq)
  ui.main.dataset["currency"] = event.currency
  ui.main.setAttribute("aria-busy", "false")
  renderClock()
  announce()
}

let wasLive = false
const onStatus = (next: DashcastStatus) => {
  status = next
  const live = next.state === "live"
  // After a reconnect the history may have moved on without us.
  if (live && !wasLive && latest !== undefined) {
    void loadSparklines()
    void loadChart()
  }
  wasLive = live
  renderClock()
  announce()
}

const start = async () => {
  drawGaugeBands()
  renderChart()
  const watched = await loadAssets()
  currencies = watched.currencies
  for (const a of watched.assets) if (a.name !== null && a.symbol !== null) names.set(a.id, { name: a.name, symbol: a.symbol })
  assetIds = watched.assets.filter((a) => !a.missing).map((a) => a.id)
  let stored: Partial<Selection> | undefined
  try {
    stored = parseStored(storage()?.getItem(STORAGE_KEY) ?? null)
  } catch {
    stored = undefined
  }
  selection = chooseSelection({ query: base.searchParams, stored, currencies, assets: assetIds })
  remember()

  ui.currency.replaceChildren(...currencies.map((c) => new Option(currencyCode(c), c, c === selection.currency, c === selection.currency)))
  ui.currencySwitch.hidden = currencies.length < 2
  const list = assetIds.length > 1
  ui.main.dataset["layout"] = list ? "list" : "single"
  ui.watchlistCard.hidden = !list
  buildRows(watched.assets.filter((a) => a.missing).map((a) => a.id))
  renderHeader()

  client = connect(dashboardSocketUrl(base), { currency: selection.currency })
  client.onMarket(onMarket)
  client.onStatus(onStatus)
  // Alert firings, shown briefly in a corner (AlertToast.ts keeps its own element and styles).
  client.onAlert(alertToasts(document))
  void loadSparklines()
  void loadChart()
}

void start()

setInterval(() => {
  renderClock()
  announce()
}, 1000)
new ResizeObserver(() => renderChart()).observe(ui.chart)
// Closing on pagehide lets the browser keep the page in its back/forward cache; coming back from
// there starts afresh.
addEventListener("pagehide", () => client?.close())
addEventListener("pageshow", (event: PageTransitionEvent) => {
  if (event.persisted) location.reload()
})
