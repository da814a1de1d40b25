/**
 * What the compiled binary refuses to believe or to do (README, "Market data"): implausible values,
 * bodies past the size cap, calls inside a provider's Retry-After. And what a force update answers
 * when only part of it worked. Each test runs its own binary and fake upstream.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import { ensureBinary, isType, openWs, startBinary, stopAllBinaries, waitFor } from "../support/Binary.js"
import { type AssetValues, Fault, type FakeUpstream, startFakeUpstream } from "../support/FakeUpstream.js"
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
  interface Case {
    readonly name: string
    readonly bad: (fake: FakeUpstream) => void
    /** The warning that names the refused value: a refused row is logged alone, a failed call with the round's failures. */
    readonly warning: { readonly message: RegExp } | { readonly errors: RegExp }
    readonly staleFields: ReadonlyArray<string>
    readonly stalePaths: ReadonlyArray<string>
  }
  const bitcoin = (fake: FakeUpstream, change: Partial<AssetValues>) => fake.setAsset("bitcoin", change)
  const usdPrice = (fake: FakeUpstream, price: number) => bitcoin(fake, { prices: { ...fake.values().assets["bitcoin"]!.prices, usd: price } })
  const totals = (fake: FakeUpstream, change: Partial<{ marketCap: number; volume: number }>) =>
    fake.setValues({ totals: { ...fake.values().totals, usd: { ...fake.values().totals["usd"]!, ...change } } })
  // A bad row spoils one quote (the row of bitcoin in usd): the call answered, so the round is no failure.
  const ROW = { staleFields: ["btc_price", "btc_change_24h"], stalePaths: ["assets.bitcoin"] } as const
  const TOTALS = { staleFields: ["market_cap", "volume_24h"], stalePaths: ["market.total_market_cap", "market.total_volume"] } as const
  const cases: ReadonlyArray<Case> = [
    {
      name: "a price of 1e308",
      bad: (fake) => usdPrice(fake, 1e308),
      warning: { message: /^coins_markets\(usd\): the row of bitcoin is not plausible: current_price: 1e\+308 is above the plausible price maximum 1000000000000$/ },
      ...ROW
    },
    {
      name: "a 24h change of 1e6 %",
      bad: (fake) => bitcoin(fake, { change24h: 1e6 }),
      warning: { message: /the row of bitcoin is not plausible: price_change_percentage_24h: 1000000 % is above the plausible maximum 10000 %$/ },
      ...ROW
    },
    {
      name: "a 24h change of -100 %",
      bad: (fake) => bitcoin(fake, { change24h: -100 }),
      warning: { message: /the row of bitcoin is not plausible: price_change_percentage_24h: -100 % is not above -100 %$/ },
      ...ROW
    },
    {
      name: "a market cap of 1e19",
      bad: (fake) => totals(fake, { marketCap: 1e19 }),
      warning: { errors: /^global: unexpected response: data\.usd: total_market_cap: 10000000000000000000 is above the plausible maximum 1000000000000000000$/ },
      ...TOTALS
    },
    {
      name: "a negative volume",
      bad: (fake) => totals(fake, { volume: -5 }),
      warning: { errors: /^global: unexpected response: data\.usd: total_volume: Expected a non-negative number, actual -5$/ },
      ...TOTALS
    }
  ]
  for (const c of cases) {
    it(`${c.name}: only what it feeds keeps its last good values and is named stale, the value is logged`, async () => {
      const fake = startFakeUpstream()
      try {
        await using app = await startBinary({ env: { ...fake.env, ADMIN_TOKEN, MIN_FETCH_GAP: "0 seconds", UPDATE_INTERVAL: "1 hour" } })
        await app.ready()
        using client = openWs(app.wsUrl)
        await client.waitFor(isType("welcome"), { label: "welcome" })
        const good = expectedMarket(fake.values())
        c.bad(fake)

        // A force update publishes what is good, keeps the rest, and says what was refused.
        const response = await app.fetch("/api/dashboard/refresh", { method: "POST", headers: bearer })
        expect(response.status).toBe(200)
        const body = (await response.json()) as { stale_fields: ReadonlyArray<string>; stale_paths: ReadonlyArray<string>; error?: string }
        expect(body.stale_fields).toEqual(c.staleFields)
        expect(body.stale_paths).toEqual(c.stalePaths)
        const update = await client.waitFor(isUpdate("force_update"), { label: "the force update" })
        expect(update.message.stale_fields).toEqual(c.staleFields)
        expect(update.message.stale_paths).toEqual(c.stalePaths)
        // Every value is the last good one: the refused one is not shown, nothing else changed.
        expect(update.message.data && marketOf(update.message.data)).toEqual(good)
        if ("message" in c.warning) {
          // Not a failed call: the answer's other rows were good.
          expect(body.error).toBeUndefined()
          const pattern = c.warning.message
          const warning = await app.waitForLog((log) => log.logLevel === "WARN" && pattern.test(String(log.message)), "the warning naming the refused value")
          expect(warning.annotations).toMatchObject({ currency: "usd", asset: "bitcoin" })
        } else {
          const pattern = c.warning.errors
          expect(body.error).toMatch(new RegExp(`^some upstream calls failed: ${pattern.source.slice(1)}`))
          const warning = await app.waitForLog(
            (log) => log.logLevel === "WARN" && pattern.test(String(log.annotations["errors"])),
            "the warning naming the refused value"
          )
          expect(warning.message).toMatch(/some upstream calls failed/)
        }
        // Nothing implausible reached anyone as data (an error frame may quote the refused value in its text).
        for (const frame of client.frames().filter((f) => f.message.type !== "error")) expect(frame.raw).not.toMatch(/e\+308|1000000[,}]|1e\+19|10000000000000000000|-100[,}]|:-5[,}]/)
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
        fake.fail("coins_markets", Fault.Huge({ bytes: 300 * 1024 * 1024, declareLength }))
        const response = await app.fetch("/api/dashboard/refresh", { method: "POST", headers: bearer, signal: AbortSignal.timeout(20_000) })
        const body = (await response.json()) as { error: string; stale_fields: ReadonlyArray<string>; stale_paths: ReadonlyArray<string> }
        expect(response.status).toBe(200)
        expect(body.stale_fields).toEqual(["btc_price", "btc_change_24h"])
        expect(body.stale_paths).toEqual(["currencies.usd"])
        expect(body.error).toBe("some upstream calls failed: coins_markets(usd): body larger than 2097152 bytes")
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
  /** An hour from now in CoinGecko's `x-ratelimit-reset` format (`2025-07-25 14:54:00 +0000`). */
  const resetInAnHour = () => new Date(Date.now() + 3_600_000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " +0000")
  const waits: ReadonlyArray<readonly [string, () => Fault]> = [
    ["Retry-After", () => Fault.RateLimited({ retryAfter: "3600" })],
    ["x-ratelimit-reset", () => Fault.RateLimited({ rateLimitReset: resetInAnHour() })]
  ]
  for (const [header, fault] of waits) it(`refuses a force update inside CoinGecko's ${header} with 429 and the seconds left, and sends nothing`, async () => {
    const fake = startFakeUpstream()
    try {
      await using app = await startBinary({
        env: { ...fake.env, ADMIN_TOKEN, MIN_FETCH_GAP: "1 seconds", UPDATE_INTERVAL: "2 seconds", INITIAL_FETCH_RETRIES: "1" }
      })
      await app.ready()
      using client = openWs(app.wsUrl)
      await client.waitFor(isType("welcome"), { label: "welcome" })
      fake.fail("coins_markets", fault(), { times: 1 })
      const error = await client.waitFor(isType("error"), { label: "the error after the 429", timeoutMs: 6_000 })
      if (error.message.type !== "error") throw new Error("unreachable")
      // The provider's hour, less the time until the round that got the 429 (up to one 2 s interval,
      // more on a loaded machine) and, for a reset time, its whole seconds.
      expect(error.message.retry_after).toBeGreaterThan(3590)
      expect(error.message.retry_after).toBeLessThanOrEqual(3600)
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
      // A round within the hour asks coins/markets and /global only: both fail, twice.
      for (const endpoint of ["coins_markets", "global"] as const) fake.fail(endpoint, Fault.ServerError({}), { times: 2 })
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

  it("a 429 from alternative.me holds its index only: prices keep their interval, the index comes after the wait", async () => {
    const fake = startFakeUpstream()
    // The index is asked for in the first round and then about hourly: the 429 comes in the first round.
    fake.fail("fear_greed", Fault.RateLimited({ retryAfter: "4" }), { times: 1 })
    try {
      await using app = await startBinary({
        env: { ...fake.env, UPDATE_INTERVAL: "1 seconds", INITIAL_RETRY_DELAY: "1 seconds", MAX_CONSECUTIVE_FAILURES: "5" }
      })
      await app.ready()
      const limitedAt = fake.requestsTo("fear_greed")[0]!.time
      using client = openWs(app.wsUrl)
      const welcome = await client.waitFor(isType("welcome"), { label: "welcome" })
      // Never known yet: absent (not zero, not stale), so the seed's summary is not complete either.
      expect(welcome.message.market).toEqual({
        total_market_cap: fake.values().totals["usd"]?.marketCap,
        total_volume: fake.values().totals["usd"]?.volume
      })
      expect(welcome.message.data).toBeUndefined()
      expect(welcome.message.assets.map((a) => a.id)).toEqual(["bitcoin"])

      const indexed = await client.waitFor((m) => m.type === "dashboard_update" && m.market.fear_greed_index !== undefined, {
        label: "the first update with the index",
        timeoutMs: 8_000
      })
      if (indexed.message.type !== "dashboard_update") throw new Error("unreachable")
      expect(indexed.message.market).toMatchObject({ fear_greed_index: 54, fear_greed_label: "Neutral" })
      expect(indexed.message.data && marketOf(indexed.message.data)).toEqual(expectedMarket(fake.values()))
      expect(indexed.message.stale_fields).toBeUndefined()
      expect(indexed.message.stale_paths).toBeUndefined()
      // alternative.me was asked again only once its 4 s were over (less the round trip of the 429)...
      const [, again, ...more] = fake.requestsTo("fear_greed")
      expect(more).toEqual([])
      expect(again!.time - limitedAt).toBeGreaterThanOrEqual(3_900)
      // ...while CoinGecko was asked every second, and every round was published.
      const pricesBetween = fake.requestsTo("coins_markets").filter((r) => r.time > limitedAt && r.time < again!.time)
      expect(pricesBetween.length).toBeGreaterThanOrEqual(3)
      const indexedSeq = indexed.message.seq
      const updatesBefore = client.messages().filter(isType("dashboard_update")).filter((m) => m.seq < indexedSeq)
      expect(updatesBefore.length).toBeGreaterThanOrEqual(2)
      for (const u of updatesBefore) expect(u.market.fear_greed_index).toBeUndefined()
    } finally {
      await fake.stop()
    }
  })
})
