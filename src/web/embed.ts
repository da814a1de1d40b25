/**
 * The embedded card (`/embed?asset=ethereum&currency=eur&theme=dark`): one asset's price, 24h change,
 * the last 24 hours as a small chart and how long ago it was updated, live through the same client
 * SDK as the watchlist. Made for an iframe in another dashboard (Home Assistant, Homepage, Grafana);
 * the server lets only the origins in `FRAME_ANCESTORS` frame it.
 */
import { DateTime } from "effect"
import { RANGES } from "../history/Tiers.js"
import type { AssetQuote } from "../market/Watchlist.js"
import { extendSeries, sparklinePath } from "./Chart.js"
import { callApi, connect, type DashcastClient, dashboardSocketUrl, type DashcastStatus, fetchHistory, type MarketEvent } from "./DashcastClient.js"
import { currencyCode, direction, formatAge, formatChange, formatPrice, formatPriceShort } from "./Format.js"
import { addressOf, themeOf } from "./Selection.js"

type Point = readonly [number, number]

const WIDTH = 300
const HEIGHT = 60

const byId = <E extends Element = HTMLElement>(id: string): E => {
  const element = document.getElementById(id)
  if (element === null) throw new Error(`embed markup is missing #${id}`)
  return element as unknown as E
}

const ui = {
  card: byId("card"),
  name: byId("name"),
  symbol: byId("symbol"),
  change: byId("change"),
  changeText: byId("change-text"),
  price: byId("price"),
  spark: byId<SVGSVGElement>("spark"),
  sparkTitle: byId<SVGTitleElement>("spark-title"),
  sparkLine: byId<SVGPathElement>("spark-line"),
  sparkArea: byId<SVGPathElement>("spark-area"),
  connection: byId("connection"),
  connectionText: byId("connection-text"),
  updated: byId<HTMLTimeElement>("updated"),
  open: byId<HTMLAnchorElement>("open"),
  error: byId("error")
}

const base = new URL(location.href)
const theme = themeOf(base.searchParams)
if (theme !== undefined) document.documentElement.dataset["theme"] = theme

const { span, tiers } = RANGES["24h"]
const STEP = tiers[0]?.step ?? 60_000

let asset = ""
let currency = ""
let latest: MarketEvent | undefined
let points: ReadonlyArray<Point> = []
let client: DashcastClient | undefined

const quote = (): AssetQuote | undefined => latest?.assets.find((a) => a.id === asset)

const fail = (message: string) => {
  ui.card.dataset["state"] = "error"
  ui.card.setAttribute("aria-busy", "false")
  ui.error.hidden = false
  ui.error.textContent = message
}

const renderSpark = () => {
  const shown = points.map(([t, price]) => ({ t, price }))
  const line = sparklinePath(shown, WIDTH, HEIGHT, 3)
  ui.sparkLine.setAttribute("d", line)
  ui.sparkArea.setAttribute("d", line === "" ? "" : `${line}L${WIDTH},${HEIGHT}L0,${HEIGHT}Z`)
  ui.spark.dataset["count"] = String(points.length)
  const first = points[0]
  const last = points[points.length - 1]
  ui.sparkLine.dataset["direction"] = first === undefined || last === undefined ? "flat" : last[1] > first[1] ? "up" : last[1] < first[1] ? "down" : "flat"
  if (first !== undefined && last !== undefined && points.length > 1) {
    const prices = points.map(([, p]) => p)
    ui.sparkTitle.textContent = `Price over the last 24 hours: from ${formatPriceShort(first[1], currency)} to ${
      formatPriceShort(last[1], currency)
    }, low ${formatPriceShort(Math.min(...prices), currency)}, high ${formatPriceShort(Math.max(...prices), currency)}`
  }
}

const render = () => {
  const q = quote()
  if (q === undefined) return
  ui.name.textContent = q.name
  ui.symbol.textContent = `${q.symbol.toUpperCase()} · ${currencyCode(currency)}`
  ui.price.textContent = formatPrice(q.price, currency)
  ui.price.dataset["value"] = String(q.price)
  const change = q.change_24h
  ui.changeText.textContent = change === null ? "—" : formatChange(change)
  ui.change.dataset["direction"] = change === null ? "flat" : direction(change)
  const stale = (latest?.stalePaths ?? []).some((p) => p === `currencies.${currency}` || p === `assets.${asset}`)
  ui.card.dataset["stale"] = String(stale)
  ui.card.dataset["state"] = "ready"
  ui.card.setAttribute("aria-busy", "false")
  document.title = `${formatPriceShort(q.price, currency)} · ${q.name} · dashcast`
  renderSpark()
}

const renderClock = () => {
  if (latest !== undefined) {
    ui.updated.textContent = `Updated ${formatAge(Date.now() - latest.fetchedAt)}`
    const q = quote()
    if (q !== undefined) ui.updated.dateTime = DateTime.formatIso(q.last_updated)
  }
}

const STATE_TEXT = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting", offline: "Offline" } as const

const onStatus = (status: DashcastStatus) => {
  ui.connection.dataset["state"] = status.state
  // Where WebSockets are blocked the SDK lives on Server-Sent Events: the card says so, as the page does.
  ui.connectionText.textContent = `${STATE_TEXT[status.state]}${status.state === "live" && status.transport === "sse" ? " · HTTP stream" : ""}`
}

const onMarket = (event: MarketEvent) => {
  if (event.currency !== currency) return
  latest = event
  const q = quote()
  if (q !== undefined && points.length > 0) points = extendSeries(points, [DateTime.toEpochMillis(q.last_updated), q.price], STEP, span)
  ui.card.dataset["seq"] = String(event.seq)
  render()
  renderClock()
}

const loadHistory = async () => {
  try {
    const answer = await fetchHistory(base, { asset, currency, range: "24h" })
    points = answer.points
    const q = latest?.currency === currency ? quote() : undefined
    if (q !== undefined) points = extendSeries(points, [DateTime.toEpochMillis(q.last_updated), q.price], STEP, span)
    renderSpark()
  } catch (error) {
    // The card still shows the live price; the small chart stays empty.
    console.warn("dashcast: could not load the price history", error)
  }
}

const start = async () => {
  let watched: Awaited<ReturnType<typeof loadAssets>>
  try {
    watched = await loadAssets()
  } catch {
    return fail("The dashcast server cannot be reached.")
  }
  const known = watched.assets.filter((a) => !a.missing).map((a) => a.id)
  asset = base.searchParams.get("asset") ?? known[0] ?? ""
  currency = base.searchParams.get("currency") ?? watched.currencies[0] ?? ""
  if (!known.includes(asset)) return fail(`This server does not watch "${asset}". It watches: ${known.join(", ")}.`)
  if (!watched.currencies.includes(currency)) {
    return fail(`This server has no prices in "${currency}". It has: ${watched.currencies.map(currencyCode).join(", ")}.`)
  }
  ui.open.href = addressOf(new URL("/", base).href, { currency, asset })
  ui.name.textContent = watched.assets.find((a) => a.id === asset)?.name ?? asset
  client = connect(dashboardSocketUrl(base), { currency })
  client.onMarket(onMarket)
  client.onStatus(onStatus)
  void loadHistory()
}

const loadAssets = () => callApi(base, (api) => api.assets())

void start()
setInterval(renderClock, 1000)
addEventListener("pagehide", () => client?.close())
addEventListener("pageshow", (event: PageTransitionEvent) => {
  if (event.persisted) location.reload()
})
