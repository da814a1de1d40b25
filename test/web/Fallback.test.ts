/**
 * WebSockets blocked, in a real browser against the compiled binary: the page is served through a
 * proxy on loopback that refuses every upgrade (test/support/BlockingProxy.ts), so its client falls
 * back to Server-Sent Events, shows live data and says so in its badge. And Chromium's own
 * `EventSource` against the binary: every update with its seq, and after a real restart of the
 * server it resumes by itself with `Last-Event-ID`.
 */
import type { Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ensureBinary, type RunningBinary, startBinary, stopAllBinaries, tempDir, waitFor } from "../support/Binary.js"
import { type BlockingProxy, startBlockingProxy } from "../support/BlockingProxy.js"
import { chromiumRequired, findChromium, launchBrowser, MISSING_CHROMIUM, type TestBrowser } from "../support/Browser.js"
import { type FakeUpstream, startFakeUpstream } from "../support/FakeUpstream.js"
import * as path from "node:path"

const ADMIN_TOKEN = "fallback-test-token-91c3"
const chromiumPath = findChromium()
if (chromiumPath === undefined && !chromiumRequired) console.warn(MISSING_CHROMIUM)

const forceUpdate = async (server: RunningBinary): Promise<number> => {
  const response = await server.fetch("/api/dashboard/refresh", { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  expect(response.status).toBe(200)
  return ((await response.json()) as { seq: number }).seq
}

/** Sample values of the binary's `/metrics`, by series. */
const metrics = async (server: RunningBinary) =>
  new Map(
    (await (await server.fetch("/metrics")).text()).split("\n").filter((l) => l !== "" && !l.startsWith("#"))
      .map((l) => [l.slice(0, l.lastIndexOf(" ")), Number(l.slice(l.lastIndexOf(" ") + 1))] as const)
  )

const setBitcoin = (fake: FakeUpstream, usd: number) => {
  const bitcoin = fake.values().assets["bitcoin"]
  if (bitcoin === undefined) throw new Error("the fake upstream does not know bitcoin")
  fake.setAsset("bitcoin", { prices: { ...bitcoin.prices, usd } })
}

const badge = async (page: Page) => ({
  state: await page.locator("#connection").getAttribute("data-state"),
  transport: await page.locator("#connection").getAttribute("data-transport"),
  text: ((await page.locator("#connection-text").textContent()) ?? "").trim()
})

describe.runIf(chromiumPath === undefined && chromiumRequired)("WebSocket fallback in Chromium", () => {
  it("needs Chromium under CI", () => {
    throw new Error(`CI=true but ${MISSING_CHROMIUM}`)
  })
})

describe.skipIf(chromiumPath === undefined)("WebSockets blocked, in Chromium against the compiled binary", () => {
  let browser: TestBrowser
  let fake: FakeUpstream
  let proxy: BlockingProxy | undefined

  beforeAll(async () => {
    await ensureBinary()
    fake = startFakeUpstream()
    browser = await launchBrowser(chromiumPath ?? "")
  }, 120_000)

  afterAll(async () => {
    await browser?.close()
    await proxy?.stop()
    await stopAllBinaries()
    await fake?.stop()
  })

  it("behind a proxy that refuses upgrades the page shows live data over the event stream, and its badge says so", async () => {
    await using server = await startBinary({
      env: { ...fake.env, ADMIN_TOKEN, LOG_LEVEL: "warn", UPDATE_INTERVAL: "1 hour", MIN_FETCH_GAP: "0 millis" }
    })
    await server.ready()
    proxy = startBlockingProxy(server.url)
    const { page, console } = await browser.newPage()
    await page.goto(proxy.url + "/")
    await page.waitForFunction(() => document.getElementById("connection")?.dataset["state"] === "live", undefined, { timeout: 15_000 })
    expect(await badge(page)).toEqual({ state: "live", transport: "sse", text: "Live · HTTP stream" })
    expect(await page.locator("#connection").getAttribute("title")).toMatch(/WebSockets are blocked/)
    // It did try the WebSocket, and the proxy refused it; the stream went through the proxy. (The
    // watchlist page asks for the currency it shows, the server's first here.)
    expect(proxy.refusedUpgrades()).toContain("/ws?currency=usd")
    expect(proxy.passed()).toContain("/api/stream?currency=usd")

    const initial = Number(await page.locator("#dashboard").getAttribute("data-seq"))
    expect(initial).toBeGreaterThanOrEqual(1)
    expect(await page.locator("#price").textContent()).toBe("$67,187.34")
    setBitcoin(fake, 72_345.67)
    const seq = await forceUpdate(server)
    await page.waitForFunction((s) => Number(document.getElementById("dashboard")?.dataset["seq"] ?? 0) >= s, seq, { timeout: 10_000 })
    expect(await page.locator("#price").textContent()).toBe("$72,345.67")
    expect(await badge(page)).toEqual({ state: "live", transport: "sse", text: "Live · HTTP stream" })

    // The server sees one event stream and no WebSocket.
    const counted = await metrics(server)
    expect(counted.get("dashcast_connections_active{transport=\"sse\"}")).toBe(1)
    expect(counted.get("dashcast_connections_active{transport=\"websocket\"}")).toBe(0)
    // Chromium logs the refused handshake itself; nothing else may be logged as an error.
    expect(console.errors().filter((e) => !/WebSocket connection to .* failed/.test(e.text))).toEqual([])
    await page.close()
    await proxy.stop()
    proxy = undefined
  }, 60_000)

  it("Chromium's EventSource gets every update with its seq, and resumes with Last-Event-ID after a restart", async () => {
    const env = {
      ...fake.env,
      ADMIN_TOKEN,
      LOG_LEVEL: "warn",
      UPDATE_INTERVAL: "1 hour",
      MIN_FETCH_GAP: "0 millis",
      CACHE_PATH: path.join(tempDir(), "cache.sqlite")
    }
    const first = await startBinary({ env })
    await first.ready()
    const { page } = await browser.newPage()
    // Any page of the server's origin: the stream is same-origin.
    await page.goto(first.url + "/healthz")
    await page.evaluate(() => {
      const seen: Array<{ type: string; id: string; seq: number }> = []
      const opened: Array<number> = []
      const source = new EventSource("/api/stream")
      for (const type of ["welcome", "dashboard_update"]) {
        source.addEventListener(type, (event) => {
          const message = event as MessageEvent<string>
          seen.push({ type, id: message.lastEventId, seq: (JSON.parse(message.data) as { seq: number }).seq })
        })
      }
      source.addEventListener("open", () => opened.push(Date.now()))
      Object.assign(window, { __seen: seen, __opened: opened })
    })
    const seen = () => page.evaluate(() => (window as unknown as { __seen: Array<{ type: string; id: string; seq: number }> }).__seen)
    const opened = () => page.evaluate(() => (window as unknown as { __opened: Array<number> }).__opened.length)
    const welcome = await waitFor(async () => (await seen())[0], "the welcome", 10_000)
    const seqs = [await forceUpdate(first), await forceUpdate(first)]
    await waitFor(async () => ((await seen()).length === 3 ? true : undefined), "two updates", 10_000)
    expect(await seen()).toEqual([
      { type: "welcome", id: String(welcome.seq), seq: welcome.seq },
      { type: "dashboard_update", id: String(seqs[0]), seq: seqs[0] },
      { type: "dashboard_update", id: String(seqs[1]), seq: seqs[1] }
    ])

    // A real restart on the same port and cache; an update is published before the browser is back.
    expect(await first.stop()).toBe(0)
    await using second = await startBinary({ env: first.env })
    await second.ready()
    const missed = await forceUpdate(second)
    // EventSource reconnects by itself after the stream's retry hint (3 to 10 s), sending Last-Event-ID.
    await waitFor(async () => ((await opened()) === 2 ? true : undefined), "EventSource reconnects", 20_000, 100)
    await waitFor(async () => ((await seen()).length === 4 ? true : undefined), "the event after the restart", 5_000)
    expect((await seen())[3]).toEqual({ type: "dashboard_update", id: String(missed), seq: missed })
    const next = await forceUpdate(second)
    await waitFor(async () => ((await seen()).length === 5 ? true : undefined), "the next update", 5_000)
    expect((await seen())[4]).toEqual({ type: "dashboard_update", id: String(next), seq: next })
    await page.close()
  }, 60_000)
})
