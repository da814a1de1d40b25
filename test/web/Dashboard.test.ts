/**
 * The watchlist page and the embedded card in a real browser against the compiled binary
 * (`dist/dashcast`, built when missing; test/support/Binary.ts). A fake upstream with five assets
 * in three currencies makes the values known in advance: the page must show every asset exactly as
 * the server has it, a full 7-day chart from the first load, switch currency on the open connection,
 * keep its chart across a `kill -9` of the server, and take force updates and upstream failures
 * live. `/embed` is framed by pages served from other loopback ports: shown to the origin that
 * `FRAME_ANCESTORS` lists, refused by the browser to the other. Every page loads without one failed
 * request and without console errors. DEMO binaries (five assets, and one) make the screenshots,
 * written to `docs/screenshots/` when `UPDATE_SCREENSHOTS=1`, else to a temporary folder.
 */
import type { Server } from "bun"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { Frame, Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { REPO_ROOT, type RunningBinary, startBinary, stopAllBinaries, waitFor } from "../support/Binary.js"
import {
  chromiumRequired,
  type ConsoleEntry,
  findChromium,
  launchBrowser,
  MISSING_CHROMIUM,
  type TestBrowser
} from "../support/Browser.js"
import { assetAt, defaultValues, Fault, type FakeUpstream, startFakeUpstream } from "../support/FakeUpstream.js"
import { startWebhookReceiver } from "../support/WebhookReceiver.js"

const ADMIN_TOKEN = "browser-test-token-6d2a"
const ASSETS = ["bitcoin", "ethereum", "solana", "tether", "dogecoin"]
const SHOTS = process.env["UPDATE_SCREENSHOTS"] === "1"
  ? path.join(REPO_ROOT, "docs", "screenshots")
  : path.join(os.tmpdir(), "dashcast-screenshots")
const HOUR = 3_600_000

const chromiumPath = findChromium()
if (chromiumPath === undefined && !chromiumRequired) console.warn(MISSING_CHROMIUM)

// --- The binaries, and pages of other origins that frame the card ----------------------------------

/** Starts the binary and waits until it has data (`/readyz`), the moment a dashboard makes sense. */
const startReady = async (env: Readonly<Record<string, string>>): Promise<RunningBinary> => {
  const binary = await startBinary({ env })
  await waitFor(() => binary.fetch("/readyz").then((r) => (r.ok ? true : undefined), () => undefined), "GET /readyz answers 200", 15_000)
  return binary
}

/** A page on another loopback port whose only content is an iframe of `?src=`: another origin framing the card. */
const startFramer = (): { readonly server: Server<undefined>; readonly origin: string; readonly framing: (src: string) => string } => {
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: (request) => {
      const src = new URL(request.url).searchParams.get("src") ?? ""
      const html = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>a home dashboard</title>` +
        `<link rel="icon" href="data:,"></head><body style="margin:0;background:#777">` +
        `<iframe id="frame" title="dashcast" src="${src.replaceAll("\"", "&quot;")}" width="360" height="200" style="border:0;display:block"></iframe>` +
        `</body></html>`
      return new Response(html, { headers: { "content-type": "text/html; charset=utf-8" } })
    }
  })
  const origin = `http://127.0.0.1:${server.port}`
  return { server, origin, framing: (src) => `${origin}/?src=${encodeURIComponent(src)}` }
}

const api = async (server: RunningBinary, route: string, init?: RequestInit) => {
  const response = await server.fetch(route, init)
  return { status: response.status, body: (await response.json()) as Record<string, unknown> }
}
const forceUpdate = (server: RunningBinary) =>
  api(server, "/api/dashboard/refresh", { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })

interface ApiAsset {
  readonly id: string
  readonly price: number
  readonly rsi_14: number | null
}
const dashboard = async (server: RunningBinary, currency: string) => {
  const { body } = await api(server, `/api/dashboard?currency=${currency}`)
  return { seq: Number(body["seq"]), assets: body["assets"] as ReadonlyArray<ApiAsset>, market: body["market"] as Record<string, unknown> }
}
const historyOf = async (server: RunningBinary, query: string) =>
  (await api(server, `/api/history?${query}`)).body["points"] as ReadonlyArray<readonly [number, number]>

/** Sets bitcoin's US dollar price (and 24 h change) at the fake upstream. */
const setBitcoin = (fake: FakeUpstream, usd: number, change24h?: number) => {
  const bitcoin = fake.values().assets["bitcoin"]
  if (bitcoin === undefined) throw new Error("the fake upstream does not know bitcoin")
  fake.setAsset("bitcoin", { prices: { ...bitcoin.prices, usd }, ...(change24h === undefined ? {} : { change24h }) })
}

// --- Reading the page ---------------------------------------------------------------------------

const text = async (page: Page | Frame, selector: string) => ((await page.locator(selector).textContent()) ?? "").trim()
const attr = async (page: Page | Frame, selector: string, name: string) => (await page.locator(selector).getAttribute(name)) ?? ""

/** Waits until the page shows `seq` or later (new snapshots arrive over the WebSocket). */
const waitForSeq = (page: Page, seq: number, timeout = 10_000) =>
  page.waitForFunction((s) => Number(document.getElementById("dashboard")?.dataset["seq"] ?? 0) >= s, seq, { timeout })

const waitForState = (page: Page, state: string, timeout = 15_000) =>
  page.waitForFunction((s) => document.getElementById("connection")?.dataset["state"] === s, state, { timeout })

interface Row {
  readonly asset: string
  readonly name: string
  readonly symbol: string
  readonly price: string
  readonly value: number
  readonly change: string
  readonly direction: string
  readonly current: string
  readonly spark: number
}
const rowsOf = (page: Page): Promise<ReadonlyArray<Row>> =>
  page.evaluate(() =>
    [...document.querySelectorAll<HTMLElement>("#watchlist .row")].map((row) => ({
      asset: row.dataset["asset"] ?? "",
      name: row.querySelector(".row-name")?.textContent ?? "",
      symbol: row.querySelector(".row-symbol")?.textContent ?? "",
      price: row.querySelector(".row-price")?.textContent ?? "",
      value: Number(row.querySelector<HTMLElement>(".row-price")?.dataset["value"]),
      change: row.querySelector(".change-value")?.textContent ?? "",
      direction: row.querySelector<HTMLElement>(".row-change")?.dataset["direction"] ?? "",
      current: row.getAttribute("aria-current") ?? "",
      spark: Number(row.querySelector<SVGPathElement>(".spark")?.dataset["count"] ?? 0)
    }))
  )

interface ChartShown {
  readonly asset: string
  readonly currency: string
  readonly range: string
  readonly state: string
  readonly count: number
  /** Points in the drawn line. */
  readonly drawn: number
}
const chartOf = (page: Page): Promise<ChartShown> =>
  page.evaluate(() => {
    const chart = document.getElementById("chart")
    return {
      asset: chart?.dataset["asset"] ?? "",
      currency: chart?.dataset["currency"] ?? "",
      range: chart?.dataset["range"] ?? "",
      state: chart?.dataset["state"] ?? "",
      count: Number(chart?.dataset["count"] ?? 0),
      drawn: (document.getElementById("chart-line")?.getAttribute("d")?.match(/[ML]/g) ?? []).length
    }
  })
const waitForChart = (page: Page, wanted: { asset: string; currency: string; range: string }, timeout = 10_000) =>
  page.waitForFunction((w) => {
    const chart = document.getElementById("chart")
    return chart?.dataset["state"] === "ready" && chart.dataset["asset"] === w.asset && chart.dataset["currency"] === w.currency &&
      chart.dataset["range"] === w.range
  }, wanted, { timeout })

/** WebSocket and fetch failures Chromium logs itself while the server is down. */
const isOutageNoise = (entry: ConsoleEntry) =>
  /WebSocket connection to .* failed|ERR_CONNECTION_REFUSED|Failed to load resource|ERR_EMPTY_RESPONSE|could not load/.test(entry.text)

/** Counts the WebSockets the page opens (before any script of it runs). */
const countSockets = (page: Page) =>
  page.addInitScript(() => {
    const Native = window.WebSocket
    Object.assign(window, { __sockets: 0 })
    window.WebSocket = class extends Native {
      constructor(url: string | URL, protocols?: string | Array<string>) {
        super(url, protocols)
        ;(window as unknown as { __sockets: number }).__sockets++
      }
    }
  })
const socketsOpened = (page: Page) => page.evaluate(() => (window as unknown as { __sockets: number }).__sockets)

// --- The tests ----------------------------------------------------------------------------------

describe.runIf(chromiumPath === undefined && chromiumRequired)("dashboard in Chromium", () => {
  it("needs Chromium under CI", () => {
    throw new Error(`CI=true but ${MISSING_CHROMIUM}`)
  })
})

describe.skipIf(chromiumPath === undefined)("the watchlist and the embedded card in Chromium, against the compiled binary", () => {
  let browser: TestBrowser
  let fake: FakeUpstream
  let server: RunningBinary
  let demo: RunningBinary
  let demoSingle: RunningBinary
  let allowed: ReturnType<typeof startFramer>
  let refused: ReturnType<typeof startFramer>

  beforeAll(async () => {
    allowed = startFramer()
    refused = startFramer()
    fake = startFakeUpstream({
      values: {
        assets: {
          ...defaultValues.assets,
          dogecoin: assetAt("Dogecoin", "doge", 0.1234, { change24h: -4.2, supply: 146_000_000_000, phase: 5 })
        }
      }
    })
    ;[server, demo, demoSingle] = await Promise.all([
      startReady({
        ...fake.env,
        ASSETS: ASSETS.join(","),
        CURRENCIES: "usd,eur,jpy",
        ADMIN_TOKEN,
        FRAME_ANCESTORS: `'self' ${allowed.origin}`,
        LOG_LEVEL: "warn",
        UPDATE_INTERVAL: "3 seconds",
        MIN_FETCH_GAP: "0 millis",
        INITIAL_RETRY_DELAY: "500 millis",
        // The alert test's receiver is on loopback.
        WEBHOOK_ALLOW_PRIVATE: "true"
      }),
      // The demo feed, fast, so that its charts move while the other tests run.
      startReady({ DEMO: "true", ASSETS: ASSETS.join(","), CURRENCIES: "usd,eur", LOG_LEVEL: "warn", UPDATE_INTERVAL: "300 millis" }),
      startReady({ DEMO: "true", LOG_LEVEL: "warn", UPDATE_INTERVAL: "300 millis" })
    ])
    browser = await launchBrowser(chromiumPath ?? "")
  }, 120_000)

  afterAll(async () => {
    await browser?.close()
    await stopAllBinaries()
    await fake?.stop()
    await allowed?.server.stop(true)
    await refused?.server.stop(true)
  })

  it("serves / and /embed (also at the nested /embed/) with frame-ancestors, and files a browser can load at absolute paths", async () => {
    for (const route of ["/", "/embed", "/embed/"]) {
      const response = await server.fetch(route)
      expect(response.status, route).toBe(200)
      expect(response.headers.get("content-type"), route).toContain("text/html")
      expect(response.headers.get("content-security-policy"), route).toBe(`frame-ancestors 'self' ${allowed.origin}`)
      const html = await response.text()
      const files = [...html.matchAll(/<(?:script|link)[^>]*\s(?:src|href)="([^"]+)"/g)].map((m) => m[1] ?? "").filter((f) => !f.startsWith("data:"))
      expect(files.length, route).toBeGreaterThanOrEqual(2)
      for (const file of files) {
        // Absolute: the same file whatever the page's path (oven-sh/bun#24180, #27465).
        expect(file, `${route} refers to ${file}`).toMatch(/^\/[^/]+$/)
        const asset = await server.fetch(file)
        expect(asset.status, file).toBe(200)
        expect(asset.headers.get("content-type"), file).toMatch(/^(text\/javascript|text\/css)/)
        const code = await asset.text()
        // A browser refuses `import … from "node:fs"` and the page never starts: name the culprits.
        const builtins = [...code.matchAll(/(?:from|import)\s*["']((?:node:|bun:)[^"']+|bun)["']/g)].map((m) => m[1])
        expect(builtins, `${file} imports server-only modules (a server module is reachable from src/web/)`).toEqual([])
      }
    }
    // A page that was loaded before is answered 304 from its ETag.
    const first = await server.fetch("/")
    const again = await server.fetch("/", { headers: { "if-none-match": first.headers.get("etag") ?? "" } })
    expect(again.status).toBe(304)
  })

  it("a 5-asset watchlist shows every asset exactly as the server has it, the first one in detail, and goes live", async () => {
    const { console, network, page } = await browser.newPage()
    await page.goto(server.url + "/")
    await waitForState(page, "live")
    const usd = await dashboard(server, "usd")
    await waitForSeq(page, usd.seq)
    expect(await rowsOf(page)).toEqual([
      expect.objectContaining({ asset: "bitcoin", name: "Bitcoin", symbol: "btc", price: "$67,187.34", change: "+3.64%", direction: "up", current: "true" }),
      expect.objectContaining({ asset: "ethereum", name: "Ethereum", symbol: "eth", price: "$3,512.09", change: "\u22121.84%", direction: "down", current: "false" }),
      expect.objectContaining({ asset: "solana", name: "Solana", symbol: "sol", price: "$151.37", change: "+5.02%", direction: "up" }),
      expect.objectContaining({ asset: "tether", name: "Tether", symbol: "usdt", price: "$1.00", change: "+0.01%", direction: "up" }),
      expect.objectContaining({ asset: "dogecoin", name: "Dogecoin", symbol: "doge", price: "$0.1234", change: "\u22124.20%", direction: "down" })
    ])
    // The raw numbers are the server's, to the last digit, and each row has its last 24 hours (hourly, from the sparkline).
    const rows = await rowsOf(page)
    for (const asset of usd.assets) expect(rows.find((r) => r.asset === asset.id)?.value, asset.id).toBe(asset.price)
    await page.waitForFunction(() => [...document.querySelectorAll<SVGPathElement>("#watchlist .spark")].every((s) => Number(s.dataset["count"]) >= 24))
    // The first asset in detail, the market in the same currency, Fear & Greed in alternative.me's words.
    expect(await text(page, "#price-label")).toBe("Bitcoin price")
    expect(await text(page, "#price")).toBe("$67,187.34")
    expect(await text(page, "#change-text")).toBe("+3.64%")
    expect(await text(page, "#market-cap")).toBe("$2.72T")
    expect(await text(page, "#volume")).toBe("$69.3B")
    expect(await text(page, "#fng")).toBe("54")
    expect(await text(page, "#fng-class")).toBe("Neutral")
    expect(await attr(page, "#fng-meter", "aria-valuetext")).toBe("54, Neutral")
    expect(Number(await attr(page, "#rsi", "data-value"))).toBe(usd.assets[0]?.rsi_14)
    expect(await text(page, "#connection-text")).toBe("Live")
    expect(await page.locator("#banner").isHidden()).toBe(true)
    // The address says what is shown, for a link or a bookmark.
    expect(new URL(page.url()).search).toBe("?currency=usd&asset=bitcoin")
    // One polite live region, and it is not the values themselves.
    expect(await page.locator("[aria-live]").count()).toBe(1)
    await page.waitForFunction(() => (document.getElementById("announcer")?.textContent ?? "").includes("Bitcoin $67,187"))
    expect(console.errors()).toEqual([])
    expect(network.failures()).toEqual([])
    await page.close()
  })

  it("selecting an asset (keyboard too) shows its chart full on the first load: the 7-day chart has the seeded week", async () => {
    const { console, network, page } = await browser.newPage()
    await page.goto(server.url + "/?currency=usd&asset=bitcoin")
    await waitForState(page, "live")
    await waitForChart(page, { asset: "bitcoin", currency: "usd", range: "24h" })
    // Down the list with the arrow keys, and Enter.
    await page.locator('#watchlist .row[data-asset="bitcoin"]').focus()
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("ArrowDown")
    expect(await page.evaluate(() => document.activeElement?.getAttribute("data-asset"))).toBe("solana")
    await page.keyboard.press("Enter")
    await waitForChart(page, { asset: "solana", currency: "usd", range: "24h" })
    expect(await text(page, "#price")).toBe("$151.37")
    expect(await attr(page, '#watchlist .row[data-asset="solana"]', "aria-current")).toBe("true")
    expect(new URL(page.url()).searchParams.get("asset")).toBe("solana")
    // A day: at least the sparkline's hourly points of the last 24 hours, already on the first load.
    expect((await chartOf(page)).count).toBeGreaterThanOrEqual(24)
    await page.getByRole("button", { name: "7d" }).click()
    await waitForChart(page, { asset: "solana", currency: "usd", range: "7d" })
    const week = await chartOf(page)
    expect(week.count).toBeGreaterThanOrEqual(100)
    expect(week.drawn).toBe(week.count)
    const served = await historyOf(server, "asset=solana&currency=usd&range=7d")
    expect(served.length).toBeGreaterThanOrEqual(168)
    expect(Math.abs(week.count - served.length)).toBeLessThanOrEqual(1)
    expect(await attr(page, '.range[data-range="7d"]', "aria-pressed")).toBe("true")
    expect(await text(page, "#chart-caption")).toMatch(/^Last 7 days · low \$\d+\.\d\d · high \$\d+\.\d\d$/)
    // A month in the first currency reaches back with the daily closes.
    await page.getByRole("button", { name: "30d" }).click()
    await waitForChart(page, { asset: "solana", currency: "usd", range: "30d" })
    expect((await chartOf(page)).count).toBeGreaterThanOrEqual(168 + 20)
    expect(console.errors()).toEqual([])
    expect(network.failures()).toEqual([])
    await page.close()
  })

  it("switching currency changes every price without a reconnect; the choice is kept in the address and in local storage", async () => {
    const { console, network, page } = await browser.newPage()
    await countSockets(page)
    await page.goto(server.url + "/?currency=usd&asset=ethereum")
    await waitForState(page, "live")
    await waitForChart(page, { asset: "ethereum", currency: "usd", range: "24h" })
    expect(await socketsOpened(page)).toBe(1)

    await page.locator("#currency").selectOption("eur")
    await page.waitForFunction(() =>
      [...document.querySelectorAll<HTMLElement>("#watchlist .row-price")].every((p) => (p.textContent ?? "").startsWith("€")) &&
      document.getElementById("dashboard")?.dataset["currency"] === "eur"
    )
    expect((await rowsOf(page)).map((r) => r.price)).toEqual(["€61,812.35", "€3,231.12", "€139.26", "€0.9202", "€0.1135"])
    const eur = await dashboard(server, "eur")
    const rows = await rowsOf(page)
    for (const asset of eur.assets) expect(rows.find((r) => r.asset === asset.id)?.value, asset.id).toBe(asset.price)
    expect(await text(page, "#price")).toBe("€3,231.12")
    expect(await text(page, "#market-cap")).toBe("€2.50T")
    expect(await text(page, "#cap-note")).toBe("All coins, in EUR")
    await waitForChart(page, { asset: "ethereum", currency: "eur", range: "24h" })
    // The same connection, moved to another currency with `subscribe`.
    expect(await socketsOpened(page)).toBe(1)
    expect(new URL(page.url()).search).toBe("?currency=eur&asset=ethereum")

    await page.locator("#currency").selectOption("jpy")
    await page.waitForFunction(() =>
      [...document.querySelectorAll<HTMLElement>("#watchlist .row-price")].every((p) => (p.textContent ?? "").startsWith("¥"))
    )
    const jpy = await dashboard(server, "jpy")
    const yenRows = await rowsOf(page)
    for (const asset of jpy.assets) expect(yenRows.find((r) => r.asset === asset.id)?.value, asset.id).toBe(asset.price)
    // The yen has no decimals: a bitcoin is ¥10,094,898, not ¥10,094,897.84.
    expect(yenRows[0]?.price).toBe("¥10,094,898")
    expect(await socketsOpened(page)).toBe(1)
    expect(await page.evaluate(() => localStorage.getItem("dashcast:selection"))).toBe(JSON.stringify({ currency: "jpy", asset: "ethereum" }))

    // Opened again without a choice in the address, the page shows what this browser chose last.
    await page.goto(server.url + "/")
    await waitForState(page, "live")
    await waitForChart(page, { asset: "ethereum", currency: "jpy", range: "24h" })
    expect(new URL(page.url()).search).toBe("?currency=jpy&asset=ethereum")
    expect(await page.locator("#currency").inputValue()).toBe("jpy")
    expect(console.errors()).toEqual([])
    expect(network.failures()).toEqual([])
    await page.close()
  })

  it("/embed in an iframe of another origin: shown when FRAME_ANCESTORS lists it, refused by the browser when not (screenshots)", async () => {
    fs.mkdirSync(SHOTS, { recursive: true })
    const card = `${server.url}/embed?asset=ethereum&currency=eur`
    for (const theme of ["light", "dark"] as const) {
      const { console, network, page } = await browser.newPage({ width: 400, height: 240 })
      await page.goto(allowed.framing(`${card}&theme=${theme}`))
      const frame = page.frameLocator("#frame")
      await frame.locator('#card[data-state="ready"]').waitFor({ timeout: 10_000 })
      expect(await frame.locator("#price").textContent()).toBe("€3,231.12")
      expect(await frame.locator("#name").textContent()).toBe("Ethereum")
      expect((await frame.locator("#symbol").textContent())?.trim()).toBe("ETH · EUR")
      await frame.locator('#connection[data-state="live"]').waitFor({ timeout: 10_000 })
      // The last 24 hours from the history: the seeded hourly points at least.
      await waitFor(async () => (Number(await frame.locator("#spark").getAttribute("data-count")) >= 24 ? true : undefined), "the card's chart")
      expect(await frame.locator("html").getAttribute("data-theme")).toBe(theme)
      await page.locator("#frame").screenshot({ path: path.join(SHOTS, `embed-${theme}.png`) })
      expect(console.errors()).toEqual([])
      expect(network.failures()).toEqual([])
      await page.close()
    }

    // Another origin: the browser refuses to show the card (and says why); nothing of it runs.
    const { console, network, page } = await browser.newPage({ width: 400, height: 240 })
    await page.goto(refused.framing(card))
    await waitFor(() => (console.errors().some((e) => e.text.includes("frame-ancestors")) ? true : undefined), "the browser refuses the frame", 5_000)
    expect(console.errors().map((e) => e.text)).toEqual([
      expect.stringContaining(`violates the following Content Security Policy directive: "frame-ancestors 'self' ${allowed.origin}"`)
    ])
    expect(network.failures()).toEqual([`GET ${card} failed: net::ERR_BLOCKED_BY_RESPONSE`])
    const child = page.frames().find((f) => f !== page.mainFrame())
    expect(child?.url()).toBe("chrome-error://chromewebdata/")
    await page.close()
  })

  it("/embed and /embed/ load on their own without one failed request; an unknown asset is said plainly", async () => {
    for (const route of ["/embed/?asset=dogecoin&currency=jpy", "/embed?asset=tether"]) {
      const { console, network, page } = await browser.newPage({ width: 360, height: 200 })
      await page.goto(server.url + route)
      await page.locator('#card[data-state="ready"]').waitFor({ timeout: 10_000 })
      expect(await text(page, "#price"), route).toMatch(route.includes("jpy") ? /^¥18\.5$/ : /^\$1\.00$/)
      expect(console.errors(), route).toEqual([])
      expect(network.failures(), route).toEqual([])
      await page.close()
    }
    const { console, network, page } = await browser.newPage({ width: 360, height: 200 })
    await page.goto(server.url + "/embed?asset=no-such-coin")
    await page.locator('#card[data-state="error"]').waitFor({ timeout: 10_000 })
    expect(await text(page, "#error")).toBe(`This server does not watch "no-such-coin". It watches: ${ASSETS.join(", ")}.`)
    expect(console.errors()).toEqual([])
    expect(network.failures()).toEqual([])
    await page.close()
  })

  it("takes a force update live, in the list and the detail, without a reload", async () => {
    const { console, network, page } = await browser.newPage()
    await page.goto(server.url + "/?currency=usd&asset=bitcoin")
    await waitForState(page, "live")
    await page.evaluate(() => Object.assign(window, { __sameDocument: true }))
    setBitcoin(fake, 70_123.45, -2.5)
    fake.setValues({ totals: { ...fake.values().totals, usd: { marketCap: 2.9e12, volume: 128.4e9 } } })
    const forced = await forceUpdate(server)
    expect(forced.status).toBe(200)
    await waitForSeq(page, Number(forced.body["seq"]))
    expect(await text(page, "#price")).toBe("$70,123.45")
    expect(await text(page, "#change-text")).toBe("\u22122.50%")
    expect(await attr(page, "#change", "data-direction")).toBe("down")
    expect((await rowsOf(page))[0]).toMatchObject({ price: "$70,123.45", change: "\u22122.50%", direction: "down" })
    expect(await text(page, "#market-cap")).toBe("$2.90T")
    expect(await text(page, "#volume")).toBe("$128B")
    expect(await page.evaluate(() => (window as unknown as { __sameDocument?: boolean }).__sameDocument)).toBe(true)
    // The server's history has it too (what a page loading now, or after a reconnect, draws).
    await waitFor(async () => ((await historyOf(server, "asset=bitcoin")).at(-1)?.[1] === 70_123.45 ? true : undefined), "the history has the forced price")
    expect(console.errors()).toEqual([])
    expect(network.failures()).toEqual([])
    await page.close()
  })

  it("shows an alert firing briefly, without a reload", async () => {
    const receiver = startWebhookReceiver()
    try {
      const { page, console } = await browser.newPage()
      // The rule's currency: a firing reaches the clients of its currency only.
      await page.goto(server.url + "/?currency=usd&asset=bitcoin")
      await waitForState(page, "live")
      const price = fake.values().assets["bitcoin"]?.prices["usd"] ?? 0
      const created = await api(server, "/api/alerts", {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ asset: "bitcoin", currency: "usd", condition: "price_above", threshold: price + 1_000, webhook_url: receiver.url() })
      })
      expect(created.status).toBe(201)
      receiver.expectSecret("/hook", String(created.body["secret"]))
      setBitcoin(fake, price + 1_500.5)
      expect((await forceUpdate(server)).status).toBe(200)
      const notice = page.locator(".dashcast-alert")
      await notice.waitFor({ state: "visible", timeout: 10_000 })
      const threshold = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 }).format(price + 1_000)
      expect(await notice.textContent()).toBe(`Bitcoin price above ${threshold} USD: ${new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 }).format(price + 1_500.5)}`)
      expect(await attr(page, "#alerts", "role")).toBe("status")
      // Briefly: it leaves by itself.
      await notice.waitFor({ state: "detached", timeout: 12_000 })
      expect((await receiver.waitFor(1))[0]?.verified.ok).toBe(true)
      expect(console.errors()).toEqual([])
      await page.close()
      expect((await server.fetch(`/api/alerts/${String(created.body["id"])}`, { method: "DELETE", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).status).toBe(204)
      setBitcoin(fake, price)
    } finally {
      await receiver.stop()
    }
  }, 30_000)

  it("shows a banner with a live countdown while upstream fails, and clears it when data flows", async () => {
    const { console, network, page } = await browser.newPage()
    await page.goto(server.url + "/?currency=usd&asset=bitcoin")
    await waitForState(page, "live")
    // CoinGecko answers the next markets call with 429 and Retry-After: dashcast sends it nothing
    // more until then (not even a force update) and tells the page when it tries again.
    const RETRY_AFTER = 12
    fake.fail("coins_markets", Fault.RateLimited({ retryAfter: String(RETRY_AFTER) }), { times: 1, target: "usd" })
    await page.waitForFunction(() => !(document.getElementById("banner")?.hidden ?? true), undefined, { timeout: 10_000 })
    expect(await text(page, "#banner-title")).toBe("The market data provider is failing.")
    expect(await text(page, "#banner-detail")).toMatch(/^Not refreshed: every price in USD\. Next attempt in \d+:\d\d\.$/)
    const countdown = async () => /Next attempt in (\d+):(\d{2})/.exec(await text(page, "#banner-detail"))
    const seconds = (m: RegExpExecArray | null) => (m === null ? Number.NaN : Number(m[1]) * 60 + Number(m[2]))
    const first = seconds(await countdown())
    expect(first).toBeGreaterThan(RETRY_AFTER / 2)
    expect(first).toBeLessThanOrEqual(RETRY_AFTER)
    await page.waitForFunction((s) => {
      const m = /Next attempt in (\d+):(\d{2})/.exec(document.getElementById("banner-detail")?.textContent ?? "")
      return m !== null && Number(m[1]) * 60 + Number(m[2]) < s
    }, first, { timeout: 3_000 })
    expect(await attr(page, ".price-card", "data-stale")).toBe("true")
    expect(await attr(page, '#watchlist .row[data-asset="solana"]', "data-stale")).toBe("true")
    fs.mkdirSync(SHOTS, { recursive: true })
    await page.screenshot({ path: path.join(SHOTS, "dashboard-upstream-failing.png") })
    // Upstream answers again once the wait is over: the next attempt brings fresh data by itself.
    setBitcoin(fake, 69_000.5)
    await page.waitForFunction(() => document.getElementById("banner")?.hidden === true, undefined, { timeout: (RETRY_AFTER + 8) * 1000 })
    expect(await text(page, "#price")).toBe("$69,000.50")
    expect(await attr(page, ".price-card", "data-stale")).toBe("false")
    expect(console.errors()).toEqual([])
    expect(network.failures()).toEqual([])
    await page.close()
  }, 45_000)

  it("after kill -9 and a restart the 7-day chart has the same points; the page reconnects by itself with new data", async () => {
    const { console, page } = await browser.newPage()
    await page.goto(server.url + "/?currency=usd&asset=ethereum")
    await waitForState(page, "live")
    await page.getByRole("button", { name: "7d" }).click()
    await waitForChart(page, { asset: "ethereum", currency: "usd", range: "7d" })
    const before = await historyOf(server, "asset=ethereum&currency=usd&range=7d")
    expect(before.length).toBeGreaterThanOrEqual(168)
    expect(Math.abs((await chartOf(page)).count - before.length)).toBeLessThanOrEqual(1)

    const killedAt = Date.now()
    await server.kill9()
    await waitForState(page, "reconnecting", 10_000)
    expect(await text(page, "#connection-text")).toMatch(/^Reconnecting( · retry in \d+ s)?$/)
    // The values and the chart stay on screen while the connection is down.
    expect(await text(page, "#price")).toBe("$3,512.09")
    expect((await chartOf(page)).count).toBeGreaterThanOrEqual(168)
    fs.mkdirSync(SHOTS, { recursive: true })
    await page.screenshot({ path: path.join(SHOTS, "dashboard-reconnecting.png") })
    fake.setAsset("ethereum", { prices: { ...fake.values().assets["ethereum"]!.prices, usd: 3_600.5 } })
    // The same port and cache (its `env`), as a supervisor restarting a crashed process would.
    server = await startReady(server.env)
    await waitForState(page, "live", 30_000)
    await page.waitForFunction(() => document.getElementById("price")?.textContent === "$3,600.50", undefined, { timeout: 10_000 })

    // The restarted server serves the same week: every point older than the hour the new price
    // went into is the same, at the same time (the newest hour holds the new price).
    const after = await historyOf(server, "asset=ethereum&currency=usd&range=7d")
    const newestHour = Math.floor((Date.now() - 60_000) / HOUR) * HOUR
    const settled = (points: ReadonlyArray<readonly [number, number]>) =>
      points.filter(([t]) => t >= (after[0]?.[0] ?? 0) && t < newestHour)
    expect(settled(before).length).toBeGreaterThanOrEqual(160)
    expect(settled(after)).toEqual(settled(before))
    expect(after.at(-1)?.[1]).toBe(3_600.5)
    // And the page, which reloaded its chart on reconnecting, draws the server's points.
    await page.waitForFunction((n) => Math.abs(Number(document.getElementById("chart")?.dataset["count"]) - n) <= 1, after.length)
    const recoveredAt = Date.now()
    // Chromium logs the refused connection attempts itself; nothing else may be logged as an error.
    expect(console.errors().filter((e) => !(isOutageNoise(e) && e.time >= killedAt && e.time <= recoveredAt))).toEqual([])
    await page.close()
  }, 60_000)

  it("reads well on a wall screen and a phone, light and dark, with five assets and with one (screenshots)", async () => {
    fs.mkdirSync(SHOTS, { recursive: true })
    const variants = [
      { name: "desktop-light", server: demo, width: 1440, height: 900, colorScheme: "light" },
      { name: "desktop-dark", server: demo, width: 1440, height: 900, colorScheme: "dark" },
      { name: "phone-light", server: demo, width: 360, height: 800, colorScheme: "light" },
      { name: "phone-dark", server: demo, width: 360, height: 800, colorScheme: "dark" },
      { name: "single-desktop-dark", server: demoSingle, width: 1440, height: 900, colorScheme: "dark" },
      { name: "wall-light", server: demo, width: 2560, height: 1440, colorScheme: "light" }
    ] as const
    for (const variant of variants) {
      const { console, network, page } = await browser.newPage(variant)
      await page.goto(`${variant.server.url}/?currency=usd&asset=bitcoin`)
      await waitForState(page, "live")
      await waitForChart(page, { asset: "bitcoin", currency: "usd", range: "24h" })
      // The chart keeps growing from live updates, without a reload.
      const seq = Number(await attr(page, "#dashboard", "data-seq"))
      await waitForSeq(page, seq + 2)
      expect((await chartOf(page)).count).toBeGreaterThanOrEqual(24)
      expect(await page.locator("#watchlist-card").isVisible()).toBe(variant.server === demo)
      // Nothing wider than the screen.
      expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(variant.width)
      // Text contrast (WCAG AA, 4.5:1) against what is behind it.
      expect(await page.evaluate(contrastProblems), variant.name).toEqual([])
      await page.screenshot({ path: path.join(SHOTS, `dashboard-${variant.name}.png`), fullPage: variant.width < 600 })
      expect(console.errors(), variant.name).toEqual([])
      expect(network.failures(), variant.name).toEqual([])
      await page.close()
    }
  }, 90_000)
})

/**
 * Runs in the page: every visible text element whose colour has less than 4.5:1 contrast with the
 * (blended) background behind it, as `selector: ratio`.
 */
function contrastProblems(): Array<string> {
  type Rgba = [number, number, number, number]
  const parse = (css: string): Rgba => {
    const srgb = /color\(srgb ([\d.e-]+) ([\d.e-]+) ([\d.e-]+)(?: \/ ([\d.e-]+))?\)/.exec(css)
    if (srgb !== null) return [Number(srgb[1]) * 255, Number(srgb[2]) * 255, Number(srgb[3]) * 255, srgb[4] === undefined ? 1 : Number(srgb[4])]
    const rgb = /rgba?\(([\d.]+),? ([\d.]+),? ([\d.]+)(?:,? \/? ?([\d.]+))?\)/.exec(css)
    if (rgb !== null) return [Number(rgb[1]), Number(rgb[2]), Number(rgb[3]), rgb[4] === undefined ? 1 : Number(rgb[4])]
    return [0, 0, 0, 0]
  }
  const over = (top: Rgba, bottom: Rgba): Rgba => {
    const a = top[3] + bottom[3] * (1 - top[3])
    if (a === 0) return [0, 0, 0, 0]
    const mix = (i: 0 | 1 | 2) => (top[i] * top[3] + bottom[i] * bottom[3] * (1 - top[3])) / a
    return [mix(0), mix(1), mix(2), a]
  }
  const background = (element: Element | null): Rgba => {
    if (element === null) return [255, 255, 255, 1]
    const own = parse(getComputedStyle(element).backgroundColor)
    return own[3] >= 1 ? own : over(own, background(element.parentElement))
  }
  const luminance = ([r, g, b]: Rgba) => {
    const channel = (c: number) => {
      const s = c / 255
      return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4
    }
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)
  }
  const problems: Array<string> = []
  const selectors = [
    ".brand h1", ".pair", ".updated", ".updated time", "#connection-text", ".label", ".value", ".change-value",
    ".classification", ".zone", ".note", ".legend span", ".chart figcaption", ".foot p", "#banner-title", "#banner-detail",
    ".row-name", ".row-symbol", ".row-price", ".watchlist-head span", ".asset-stats", ".range", ".currency-switch label",
    ".currency-switch select"
  ]
  for (const selector of selectors) {
    for (const element of document.querySelectorAll(selector)) {
      if (!(element instanceof HTMLElement) || element.offsetParent === null || element.textContent?.trim() === "") continue
      const style = getComputedStyle(element)
      const bg = background(element)
      const fg = over(parse(style.color), bg)
      const [l1, l2] = [luminance(fg), luminance(bg)].sort((a, b) => b - a) as [number, number]
      const ratio = (l1 + 0.05) / (l2 + 0.05)
      if (ratio < 4.5) problems.push(`${selector}: ${ratio.toFixed(2)}`)
    }
  }
  return problems
}
