/**
 * What the compiled binary refuses to believe or to do (README, "Market data"): implausible values,
 * bodies past the size cap, calls inside a provider's Retry-After. And what a force update answers
 * when only part of it worked. Each test runs its own binary and fake upstream.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import { ensureBinary, isType, openWs, startBinary, stopAllBinaries, waitFor } from "../support/Binary.js"
import { Fault, type MarketValues, startFakeUpstream } from "../support/FakeUpstream.js"
import { expectedMarket, isUpdate, marketOf } from "./Market.js"

const ADMIN_TOKEN = "e2e-admin-token-0123456789"
const bearer = { authorization: `Bearer ${ADMIN_TOKEN}` }

beforeAll(() => ensureBinary(), 120_000)
afterAll(stopAllBinaries)

/** Kibibytes of a process's resident memory: now (`VmRSS`) and at its peak (`VmHWM`). */
const memoryOf = (pid: number) => {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8")
  const read = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN)
  return { rssKiB: read("VmRSS"), peakKiB: read("VmHWM") }
}

describe.concurrent("the binary keeps implausible upstream values away from clients", () => {
  const cases: ReadonlyArray<readonly [string, Partial<MarketValues>, RegExp, ReadonlyArray<string>]> = [
    ["a price of 1e308", { btcPrice: 1e308 }, /simple_price: unexpected response: bitcoin\.usd: 1e\+308 is above the plausible price maximum/, ["btc_price", "btc_change_24h"]],
    ["a 24h change of 1e6 %", { btcChange24h: 1e6 }, /bitcoin\.usd_24h_change: 1000000 % is above the plausible maximum 10000 %/, ["btc_price", "btc_change_24h"]],
    ["a 24h change of -100 %", { btcChange24h: -100 }, /bitcoin\.usd_24h_change: -100 % is not above -100 %/, ["btc_price", "btc_change_24h"]],
    ["a market cap of 1e19", { totalMarketCap: 1e19 }, /global: unexpected response: data\.total_market_cap\.usd: 10000000000000000000 is above/, ["market_cap", "volume_24h"]],
    ["a negative volume", { totalVolume: -5 }, /global: unexpected response: data\.total_volume\.usd: Expected a non-negative number, actual -5/, ["market_cap", "volume_24h"]]
  ]
  for (const [name, bad, error, stale] of cases) {
    it(`${name}: the call fails, its fields keep their last good values, the value is logged`, async () => {
      const fake = startFakeUpstream()
      try {
        await using app = await startBinary({ env: { ...fake.env, ADMIN_TOKEN, MIN_FETCH_GAP: "0 seconds", UPDATE_INTERVAL: "1 hour" } })
        await app.ready()
        using client = openWs(app.wsUrl)
        await client.waitFor(isType("welcome"), { label: "welcome" })
        const good = expectedMarket(fake.values())
        fake.setValues(bad)

        // A force update publishes what is good, keeps the rest, and says what was refused.
        const response = await app.fetch("/api/dashboard/refresh", { method: "POST", headers: bearer })
        expect(response.status).toBe(200)
        const body = (await response.json()) as { stale_fields: ReadonlyArray<string>; error: string; data: Record<string, number> }
        expect(body.stale_fields).toEqual(stale)
        expect(body.error).toMatch(error)
        const update = await client.waitFor(isUpdate("force_update"), { label: "the force update" })
        expect(update.message.stale_fields).toEqual(stale)
        for (const field of stale) expect(marketOf(update.message.data)[field as keyof typeof good]).toBe(good[field as keyof typeof good])
        const warning = await app.waitForLog(
          (log) => log.logLevel === "WARN" && error.test(String(log.annotations["errors"])),
          "the warning naming the refused value"
        )
        expect(warning.message).toMatch(/some upstream calls failed/)
        // Nothing implausible reached anyone.
        for (const frame of client.messages()) expect(JSON.stringify(frame)).not.toMatch(/e\+308|1000000[,}]|1e\+19|10000000000000000000/)
      } finally {
        await fake.stop()
      }
    })
  }
})

describe.concurrent("the binary caps upstream bodies", () => {
  for (const declareLength of [false, true]) {
    it(`refuses a 300 MB body${declareLength ? " with Content-Length" : ", streamed"} after 2 MiB, with memory near idle`, async () => {
      const fake = startFakeUpstream()
      try {
        await using app = await startBinary({ env: { ...fake.env, ADMIN_TOKEN, MIN_FETCH_GAP: "0 seconds", UPDATE_INTERVAL: "1 hour" } })
        await app.ready()
        const idle = memoryOf(app.pid)
        fake.fail("simple_price", Fault.Huge({ bytes: 300 * 1024 * 1024, declareLength }))
        const response = await app.fetch("/api/dashboard/refresh", { method: "POST", headers: bearer, signal: AbortSignal.timeout(20_000) })
        const body = (await response.json()) as { error: string; stale_fields: ReadonlyArray<string> }
        expect(response.status).toBe(200)
        expect(body.stale_fields).toEqual(["btc_price", "btc_change_24h"])
        expect(body.error).toMatch(/simple_price: body larger than 2097152 bytes/)
        // It stopped reading: the fake produced a small part of the body (what socket buffers took).
        await Bun.sleep(200)
        expect(fake.sentBytes()).toBeLessThan(32 * 1024 * 1024)
        const after = memoryOf(app.pid)
        expect(after.peakKiB - idle.rssKiB, `idle ${idle.rssKiB} KiB, peak ${after.peakKiB} KiB`).toBeLessThan(50 * 1024)
        expect((await app.fetch("/healthz")).status).toBe(200)
      } finally {
        await fake.stop()
      }
    }, 30_000)
  }
})

describe.concurrent("a provider's Retry-After and rounds outside the schedule", () => {
  it("refuses a force update inside CoinGecko's Retry-After with 429 and the seconds left, and sends nothing", async () => {
    const fake = startFakeUpstream()
    try {
      await using app = await startBinary({
        env: { ...fake.env, ADMIN_TOKEN, MIN_FETCH_GAP: "1 seconds", UPDATE_INTERVAL: "2 seconds", INITIAL_FETCH_RETRIES: "1" }
      })
      await app.ready()
      using client = openWs(app.wsUrl)
      await client.waitFor(isType("welcome"), { label: "welcome" })
      fake.fail("simple_price", Fault.RateLimited({ retryAfter: "3600" }), { times: 1 })
      const error = await client.waitFor(isType("error"), { label: "the error after the 429", timeoutMs: 6_000 })
      if (error.message.type !== "error") throw new Error("unreachable")
      expect(error.message.retry_after).toBeGreaterThanOrEqual(3599)
      const sent = fake.requests().length

      await Bun.sleep(1_100) // past MIN_FETCH_GAP: only the provider's wait can refuse now
      const response = await app.fetch("/api/dashboard/refresh", { method: "POST", headers: bearer })
      expect(response.status).toBe(429)
      const retryAfter = Number(response.headers.get("retry-after"))
      expect(retryAfter).toBeGreaterThan(3590)
      expect(retryAfter).toBeLessThanOrEqual(3600)
      expect(((await response.json()) as { error: string }).error).toMatch(/Retry-After/)
      // A connecting client that finds the summary stale does not call either; nor does the schedule.
      await Bun.sleep(2_500)
      expect(fake.requests().length).toBe(sent)
      const dashboard = (await (await app.fetch("/api/dashboard")).json()) as { next_update_at: string }
      expect(Date.parse(dashboard.next_update_at) - Date.now()).toBeGreaterThan(3_500_000)
    } finally {
      await fake.stop()
    }
  })

  it("a force update that succeeds after failures resets the schedule to UPDATE_INTERVAL after it", async () => {
    const fake = startFakeUpstream()
    try {
      await using app = await startBinary({
        env: {
          ...fake.env,
          ADMIN_TOKEN,
          MIN_FETCH_GAP: "0 seconds",
          UPDATE_INTERVAL: "20 seconds",
          MAX_CONSECUTIVE_FAILURES: "0",
          MAX_BACKOFF: "1 hour",
          INITIAL_FETCH_RETRIES: "1"
        }
      })
      await app.ready()
      using client = openWs(app.wsUrl)
      await client.waitFor(isType("welcome"), { label: "welcome" })
      for (const endpoint of ["simple_price", "global", "market_chart", "fear_greed"] as const) fake.fail(endpoint, Fault.ServerError({}), { times: 2 })
      // Two forced failures past a threshold of 0: the schedule backs off to 80 s (20 * 2^2).
      for (let i = 0; i < 2; i++) expect((await app.fetch("/api/dashboard/refresh", { method: "POST", headers: bearer })).status).toBe(502)
      const backedOff = (await (await app.fetch("/api/dashboard")).json()) as { next_update_at: string }
      expect(Date.parse(backedOff.next_update_at) - Date.now()).toBeGreaterThan(70_000)

      const forced = await app.fetch("/api/dashboard/refresh", { method: "POST", headers: bearer })
      expect(forced.status).toBe(200)
      const at = Date.now()
      const next = await waitFor(async () => {
        const body = (await (await app.fetch("/api/dashboard")).json()) as { next_update_at: string }
        const due = Date.parse(body.next_update_at) - at
        return due < 25_000 ? due : undefined
      }, "next_update_at one interval after the success")
      expect(next).toBeGreaterThan(15_000)
    } finally {
      await fake.stop()
    }
  })

  it("a 429 from alternative.me holds Fear & Greed calls only: prices keep their interval", async () => {
    const fake = startFakeUpstream()
    try {
      await using app = await startBinary({ env: { ...fake.env, UPDATE_INTERVAL: "1 seconds", MAX_CONSECUTIVE_FAILURES: "5" } })
      await app.ready()
      using client = openWs(app.wsUrl)
      await client.waitFor(isType("welcome"), { label: "welcome" })
      fake.fail("fear_greed", Fault.RateLimited({ retryAfter: "4" }), { times: 1 })
      const limitedAt = await waitFor(() => fake.requestsTo("fear_greed").length >= 2 ? Date.now() : undefined, "the 429", 5_000)
      const first = await client.waitFor((m) => m.type === "dashboard_update" && (m.stale_fields ?? []).includes("fear_greed_index"), {
        label: "an update with the index stale"
      })
      // Within the 4 s, prices go on every second while alternative.me is not called.
      await Bun.sleep(2_500)
      const firstSeq = first.message.type === "dashboard_update" ? first.message.seq : Number.POSITIVE_INFINITY
      const during = client.messages().filter(isType("dashboard_update")).filter((m) => m.seq > firstSeq)
      expect(during.length).toBeGreaterThanOrEqual(2)
      expect(fake.requestsTo("fear_greed").filter((r) => r.time > limitedAt)).toEqual([])
      // Then the index is fetched again and nothing is stale.
      await client.waitFor((m) => m.type === "dashboard_update" && m.stale_fields === undefined && m.seq > firstSeq, {
        label: "a fresh update after the Retry-After",
        timeoutMs: 6_000
      })
      expect(fake.requestsTo("fear_greed").filter((r) => r.time > limitedAt).length).toBeGreaterThanOrEqual(1)
    } finally {
      await fake.stop()
    }
  })
})
