/**
 * The dashboard page in a real browser against the compiled binary (`dist/dashcast`, built when
 * missing; test/support/Binary.ts). A fake upstream makes the
 * values known in advance: the page must show exactly what the server has, take force updates and
 * upstream failures live, and recover by itself from a server restart. A second binary runs the
 * DEMO feed fast, for a chart with history and the screenshots (written to `docs/screenshots/`
 * when `UPDATE_SCREENSHOTS=1`, else to a temporary folder).
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { Page } from "playwright-core"
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
import { Fault, type FakeUpstream, startFakeUpstream } from "../support/FakeUpstream.js"
import { startWebhookReceiver } from "../support/WebhookReceiver.js"

const ADMIN_TOKEN = "browser-test-token-6d2a"
const SHOTS = process.env["UPDATE_SCREENSHOTS"] === "1"
  ? path.join(REPO_ROOT, "docs", "screenshots")
  : path.join(os.tmpdir(), "dashcast-screenshots")

const chromiumPath = findChromium()
if (chromiumPath === undefined && !chromiumRequired) console.warn(MISSING_CHROMIUM)

// --- The binary ---------------------------------------------------------------------------------

/** Starts the binary and waits until it has data (`/readyz`), the moment a dashboard makes sense. */
const startReady = async (env: Readonly<Record<string, string>>): Promise<RunningBinary> => {
  const binary = await startBinary({ env })
  await waitFor(() => binary.fetch("/readyz").then((r) => (r.ok ? true : undefined), () => undefined), "GET /readyz answers 200", 15_000)
  return binary
}

const api = async (server: RunningBinary, route: string, init?: RequestInit) => {
  const response = await server.fetch(route, init)
  return { status: response.status, body: (await response.json()) as Record<string, unknown> }
}
const forceUpdate = (server: RunningBinary) =>
  api(server, "/api/dashboard/refresh", { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })

/** Sets bitcoin's US dollar price (and 24 h change) at the fake upstream. */
const setBitcoin = (fake: FakeUpstream, usd: number, change24h?: number) => {
  const bitcoin = fake.values().assets["bitcoin"]
  if (bitcoin === undefined) throw new Error("the fake upstream does not know bitcoin")
  fake.setAsset("bitcoin", { prices: { ...bitcoin.prices, usd }, ...(change24h === undefined ? {} : { change24h }) })
}

// --- Reading the page ---------------------------------------------------------------------------

const text = async (page: Page, selector: string) => ((await page.locator(selector).textContent()) ?? "").trim()
const attr = async (page: Page, selector: string, name: string) => (await page.locator(selector).getAttribute(name)) ?? ""

/** Waits until the page shows `seq` or later (new summaries arrive over the WebSocket). */
const waitForSeq = (page: Page, seq: number, timeout = 10_000) =>
  page.waitForFunction((s) => Number(document.getElementById("dashboard")?.dataset["seq"] ?? 0) >= s, seq, { timeout })

const waitForState = (page: Page, state: string, timeout = 15_000) =>
  page.waitForFunction((s) => document.getElementById("connection")?.dataset["state"] === s, state, { timeout })

/** Records every (seq, price) the page shows from now on, to prove a given update was displayed. */
const recordShown = (page: Page) =>
  page.evaluate(() => {
    const main = document.getElementById("dashboard")
    const shown: Array<[string, string]> = []
    Object.assign(window, { __shown: shown })
    if (main === null) return
    new MutationObserver(() => {
      shown.push([main.dataset["seq"] ?? "", document.getElementById("price")?.textContent ?? ""])
    }).observe(main, { attributes: true, attributeFilter: ["data-seq"] })
  })
const shownSoFar = (page: Page) =>
  page.evaluate(() => (window as unknown as { __shown: Array<[string, string]> }).__shown)

const pointsInChart = (page: Page) =>
  page.evaluate(() => (document.getElementById("chart-line")?.getAttribute("d")?.match(/[ML]/g) ?? []).length)

/** WebSocket and fetch failures Chromium logs itself while the server is down. */
const isOutageNoise = (entry: ConsoleEntry) =>
  /WebSocket connection to .* failed|ERR_CONNECTION_REFUSED|Failed to load resource/.test(entry.text)

// --- The tests ----------------------------------------------------------------------------------

describe.runIf(chromiumPath === undefined && chromiumRequired)("dashboard in Chromium", () => {
  it("needs Chromium under CI", () => {
    throw new Error(`CI=true but ${MISSING_CHROMIUM}`)
  })
})

describe.skipIf(chromiumPath === undefined)("dashboard in Chromium against the compiled binary", () => {
  let browser: TestBrowser
  let fake: FakeUpstream
  let server: RunningBinary
  let demo: RunningBinary

  beforeAll(async () => {
    fake = startFakeUpstream()
    ;[server, demo] = await Promise.all([
      startReady({
        ...fake.env,
        ADMIN_TOKEN,
        LOG_LEVEL: "warn",
        UPDATE_INTERVAL: "3 seconds",
        MIN_FETCH_GAP: "0 millis",
        INITIAL_RETRY_DELAY: "500 millis",
        // The alert test's receiver is on loopback.
        WEBHOOK_ALLOW_PRIVATE: "true"
      }),
      // The demo feed, fast, so that its history fills the chart while the other tests run.
      startReady({ DEMO: "true", LOG_LEVEL: "warn", CACHE_PATH: ":memory:", UPDATE_INTERVAL: "200 millis" })
    ])
    const page = await server.fetch("/")
    if (page.status !== 200 || !(page.headers.get("content-type") ?? "").includes("text/html")) {
      throw new Error(`GET / answered ${page.status} ${page.headers.get("content-type")}: is the page mounted in Server.ts (routes: { "/": page })?`)
    }
    browser = await launchBrowser(chromiumPath ?? "")
  }, 120_000)

  afterAll(async () => {
    await browser?.close()
    await stopAllBinaries()
    await fake?.stop()
  })

  it("serves the page with scripts a browser can load (no Node or Bun built-ins bundled in)", async () => {
    const html = await (await server.fetch("/")).text()
    const scripts = [...html.matchAll(/<script[^>]*\ssrc="([^"]+)"/g)].map((m) => m[1] ?? "")
    expect(scripts.length).toBeGreaterThan(0)
    for (const src of scripts) {
      const response = await server.fetch(new URL(src, server.url + "/").pathname)
      expect(response.status, src).toBe(200)
      const code = await response.text()
      // A browser refuses `import … from "node:fs"` and the page never starts: name the culprits.
      const builtins = [...code.matchAll(/(?:from|import)\s*["']((?:node:|bun:)[^"']+|bun)["']/g)].map((m) => m[1])
      expect(builtins, `${src} imports server-only modules (a server module is reachable from src/web/dashboard.ts)`).toEqual([])
    }
  })

  it("shows exactly what the server has, formatted, and goes live", async () => {
    const { page, console } = await browser.newPage()
    await page.goto(server.url + "/")
    await waitForState(page, "live")
    const { body } = await api(server, "/api/dashboard")
    await waitForSeq(page, Number(body["seq"]))
    const data = body["data"] as Record<string, number>
    // The fake's values (defaultValues), written as people read them.
    expect(await text(page, "#price")).toBe("$67,187.34")
    expect(await text(page, "#change-text")).toBe("+3.64%")
    expect(await attr(page, "#change", "data-direction")).toBe("up")
    expect(await text(page, "#market-cap")).toBe("$2.72T")
    expect(await text(page, "#volume")).toBe("$69.3B")
    expect(await text(page, "#fng")).toBe("54")
    expect(await text(page, "#fng-class")).toBe("Neutral")
    expect(await text(page, "#rsi")).toBe(Number(data["rsi_14"]).toFixed(1))
    expect(await text(page, "#rsi-zone")).toMatch(/^(Oversold|Neutral|Overbought)$/)
    // And the raw numbers are the server's, to the last digit.
    for (const [selector, field] of [
      ["#price", "btc_price"],
      ["#change", "btc_change_24h"],
      ["#market-cap", "market_cap"],
      ["#volume", "volume_24h"],
      ["#fng", "fear_greed_index"],
      ["#rsi", "rsi_14"]
    ] as const) {
      expect(Number(await attr(page, selector, "data-value")), field).toBe(data[field])
    }
    expect(await text(page, "#connection-text")).toBe("Live")
    expect(await text(page, "#updated-at")).toMatch(/^(just now|\d+ s ago)$/)
    expect(await page.locator("#banner").isHidden()).toBe(true)
    expect(await attr(page, "#fng-meter", "aria-valuetext")).toBe("54, Neutral")
    // One polite live region, and it is not the values themselves.
    expect(await page.locator("[aria-live]").count()).toBe(1)
    expect(await attr(page, "[aria-live]", "aria-live")).toBe("polite")
    await page.waitForFunction(() => (document.getElementById("announcer")?.textContent ?? "").includes("Bitcoin $67,187"))
    expect(console.errors()).toEqual([])
    await page.close()
  })

  it("takes a force update live, without a reload", async () => {
    const { page, console } = await browser.newPage()
    await page.goto(server.url + "/")
    await waitForState(page, "live")
    await page.evaluate(() => Object.assign(window, { __sameDocument: true }))
    await recordShown(page)
    setBitcoin(fake, 70_123.45, -2.5)
    fake.setValues({ totals: { ...fake.values().totals, usd: { marketCap: 2.9e12, volume: 128.4e9 } } })
    const forced = await forceUpdate(server)
    expect(forced.status).toBe(200)
    const seq = Number(forced.body["seq"])
    await waitForSeq(page, seq)
    expect(await shownSoFar(page)).toContainEqual([String(seq), "$70,123.45"])
    expect(await text(page, "#price")).toBe("$70,123.45")
    expect(await text(page, "#change-text")).toBe("\u22122.50%")
    expect(await attr(page, "#change", "data-direction")).toBe("down")
    expect(await text(page, "#market-cap")).toBe("$2.90T")
    expect(await text(page, "#volume")).toBe("$128B")
    // Fear & Greed is asked for when alternative.me says a new value exists (hours), not on every
    // round: it keeps its value here (a new one is shown after the restart below).
    expect(await text(page, "#fng")).toBe("54")
    expect(await page.evaluate(() => (window as unknown as { __sameDocument?: boolean }).__sameDocument)).toBe(true)
    // The server's history has it too (what a page loading now or after a reconnect draws first).
    const history = (await api(server, "/api/history")).body["points"] as Array<{ t: string; price: number; seq: number }>
    expect(history.find((p) => p.seq === seq)).toMatchObject({ price: 70_123.45 })
    expect(history.map((p) => p.seq)).toEqual([...history.map((p) => p.seq)].sort((a, b) => a - b))
    expect(await pointsInChart(page)).toBeGreaterThanOrEqual(2)
    expect(console.errors()).toEqual([])
    await page.close()
  })

  it("shows an alert firing briefly, without a reload", async () => {
    const receiver = startWebhookReceiver()
    try {
      const { page, console } = await browser.newPage()
      await page.goto(server.url + "/")
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
    const { page, console } = await browser.newPage()
    await page.goto(server.url + "/")
    await waitForState(page, "live")
    // CoinGecko answers the next markets call with 429 and Retry-After: dashcast sends it nothing
    // more until then (not even a force update) and tells the page when it tries again.
    const RETRY_AFTER = 12
    fake.fail("coins_markets", Fault.RateLimited({ retryAfter: String(RETRY_AFTER) }), { times: 1 })
    // The next scheduled attempt (3 s interval) fails: price and change keep their last values.
    await page.waitForFunction(() => !(document.getElementById("banner")?.hidden ?? true), undefined, { timeout: 10_000 })
    expect(await text(page, "#banner-title")).toBe("The market data provider is failing.")
    const countdown = async () => /Next attempt in (\d+):(\d{2})/.exec(await text(page, "#banner-detail"))
    const first = await countdown()
    expect(first).not.toBeNull()
    const seconds = (m: RegExpExecArray | null) => (m === null ? Number.NaN : Number(m[1]) * 60 + Number(m[2]))
    expect(seconds(first)).toBeGreaterThan(RETRY_AFTER / 2)
    expect(seconds(first)).toBeLessThanOrEqual(RETRY_AFTER)
    await page.waitForFunction((s) => {
      const m = /Next attempt in (\d+):(\d{2})/.exec(document.getElementById("banner-detail")?.textContent ?? "")
      return m !== null && Number(m[1]) * 60 + Number(m[2]) < s
    }, seconds(first), { timeout: 3_000 })
    expect(await attr(page, ".price-card", "data-stale")).toBe("true")
    expect(await attr(page, "#banner", "data-kind")).toBe("warn")
    fs.mkdirSync(SHOTS, { recursive: true })
    await page.screenshot({ path: path.join(SHOTS, "dashboard-upstream-failing.png") })
    // A force update inside the provider's wait is refused with the time left; nothing is sent.
    const marketsCalls = fake.requestsTo("coins_markets").length
    const refused = await server.fetch("/api/dashboard/refresh", { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
    expect(refused.status).toBe(429)
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1)
    expect(Number(refused.headers.get("retry-after"))).toBeLessThanOrEqual(RETRY_AFTER)
    expect(fake.requestsTo("coins_markets")).toHaveLength(marketsCalls)
    // Upstream answers again once the wait is over: the next attempt brings fresh data by itself.
    setBitcoin(fake, 69_000.5)
    await page.waitForFunction(() => document.getElementById("banner")?.hidden === true, undefined, { timeout: (RETRY_AFTER + 8) * 1000 })
    expect(await text(page, "#price")).toBe("$69,000.50")
    expect(await attr(page, ".price-card", "data-stale")).toBe("false")
    expect(console.errors()).toEqual([])
    await page.close()
  }, 45_000)

  it("shows reconnecting while the server is down and recovers by itself with new data", async () => {
    const { page, console } = await browser.newPage()
    await page.goto(server.url + "/")
    await waitForState(page, "live")
    const before = Number(await attr(page, "#dashboard", "data-seq"))
    const killedAt = Date.now()
    await server.kill9()
    await waitForState(page, "reconnecting", 10_000)
    expect(await text(page, "#connection-text")).toMatch(/^Reconnecting( · retry in \d+ s)?$/)
    // The values stay on screen while the connection is down.
    expect(await text(page, "#price")).toBe("$69,000.50")
    fs.mkdirSync(SHOTS, { recursive: true })
    await page.screenshot({ path: path.join(SHOTS, "dashboard-reconnecting.png") })
    setBitcoin(fake, 71_234.56)
    fake.setValues({ fearGreed: 80 })
    const askedBefore = fake.requestsTo("fear_greed").length
    // The same port and cache (its `env`), as a supervisor restarting a crashed process would.
    server = await startReady(server.env)
    await waitForState(page, "live", 30_000)
    await page.waitForFunction(() => document.getElementById("price")?.textContent === "$71,234.56", undefined, { timeout: 10_000 })
    // The cached snapshot says alternative.me has no new value yet: the restart does not ask it, the gauge keeps its value.
    expect(fake.requestsTo("fear_greed").length).toBe(askedBefore)
    expect(await text(page, "#fng")).toBe("54")
    expect(await attr(page, "#fng-meter", "aria-valuetext")).toBe("54, Neutral")
    const after = Number(await attr(page, "#dashboard", "data-seq"))
    expect(after).toBeGreaterThan(before)
    const recoveredAt = Date.now()
    // Chromium logs the refused connection attempts itself; nothing else may be logged as an error.
    const errors = console.errors()
    expect(errors.filter((e) => !(isOutageNoise(e) && e.time >= killedAt && e.time <= recoveredAt))).toEqual([])
    await page.close()
  }, 60_000)

  it("keeps a live chart; reads well on a wall screen and a phone, light and dark (screenshots)", async () => {
    fs.mkdirSync(SHOTS, { recursive: true })
    // Enough history for a chart worth looking at (the demo publishes 5 summaries a second).
    await waitFor(async () => {
      const history = await api(demo, "/api/history")
      return (history.body["points"] as Array<unknown>).length >= 60 ? true : undefined
    }, "60 points of demo history", 30_000, 250)
    const variants = [
      { name: "desktop-light", width: 1440, height: 900, colorScheme: "light" },
      { name: "desktop-dark", width: 1440, height: 900, colorScheme: "dark" },
      { name: "phone-light", width: 360, height: 800, colorScheme: "light" },
      { name: "phone-dark", width: 360, height: 800, colorScheme: "dark" }
    ] as const
    for (const variant of variants) {
      const { page, console } = await browser.newPage(variant)
      await page.goto(demo.url + "/")
      await waitForState(page, "live")
      await page.waitForFunction(() => (document.getElementById("chart-line")?.getAttribute("d") ?? "").length > 100)
      // The chart keeps growing from live updates, without a reload.
      const points = await pointsInChart(page)
      await page.waitForFunction((n) => (document.getElementById("chart-line")?.getAttribute("d")?.match(/[ML]/g) ?? []).length > n, points, { timeout: 5_000 })
      // Nothing wider than the screen.
      expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(variant.width)
      // Text contrast (WCAG AA, 4.5:1) against what is behind it.
      const lowContrast = await page.evaluate(contrastProblems)
      expect(lowContrast, variant.name).toEqual([])
      await page.screenshot({ path: path.join(SHOTS, `dashboard-${variant.name}.png`), fullPage: variant.width < 600 })
      expect(console.errors(), variant.name).toEqual([])
      await page.close()
    }
  }, 60_000)
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
    ".classification", ".zone", ".note", ".legend span", ".scale span", ".chart figcaption", ".foot p",
    "#banner-title", "#banner-detail"
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
