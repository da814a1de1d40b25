/**
 * The compiled binary against the fake upstream (docs/ARCHITECTURE.md "Upstream calls" and "The
 * schedule"): it shows exactly what upstream serves, survives every kind of upstream failure without
 * inventing a value, tells clients the real time of the next attempt, and spaces its attempts by
 * the rule. The watchlist is today's default (bitcoin in usd); Watchlist.e2e.test.ts has the big one.
 * Each test runs its own binary and fake, so the tests run concurrently.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { DateTime } from "effect"
import type { SummaryField } from "../../src/market/DashboardSummary.js"
import type { Endpoint } from "../../src/market/MarketData.js"
import type { ServerMessage } from "../../src/realtime/Protocol.js"
import { VERSION } from "../../src/Version.js"
import { ensureBinary, isType, openWs, type ReceivedFrame, startBinary, stopAllBinaries, waitFor, type WsClient } from "../support/Binary.js"
import { Fault, fearGreedLabel, startFakeUpstream } from "../support/FakeUpstream.js"
import { assetOf, ENDPOINTS, expectedAsset, expectedMarket, isUpdate, type Market, marketOf, roundsSeen } from "./Market.js"

/** Short settings, so that a failure, a backoff and a recovery fit in seconds. */
const SCHEDULE = {
  UPDATE_INTERVAL: "2 seconds",
  MAX_CONSECUTIVE_FAILURES: "1",
  MAX_BACKOFF: "8 seconds",
  UPSTREAM_TIMEOUT: "500 millis"
} as const
const INTERVAL_MS = 2_000

/** How far a measured delay may be from the schedule's: a real process on a busy machine, not a benchmark. */
const TOLERANCE_MS = 400

type Summarizing = Extract<ServerMessage, { type: "welcome" | "dashboard_update" }>
const carriesSummary = (m: ServerMessage): m is Summarizing => m.type === "welcome" || m.type === "dashboard_update"

/** Every seed summary a client was sent, as market fields (a frame without `data` would fail here). */
const summariesSeen = (...clients: ReadonlyArray<WsClient>) =>
  clients.flatMap((c) =>
    c.messages().filter(carriesSummary).map((m) => {
      if (m.data === undefined) throw new Error(`a ${m.type} without the seed's data: ${JSON.stringify(m)}`)
      return { type: m.type, seq: m.seq, market: marketOf(m.data) }
    })
  )

const dataOf = (m: Summarizing): Market => {
  if (m.data === undefined) throw new Error(`a ${m.type} without the seed's data: ${JSON.stringify(m)}`)
  return marketOf(m.data)
}

/** When each attempt started, as upstream saw it (its rounds are 2 s apart here). */
const attemptTimes = (fake: ReturnType<typeof startFakeUpstream>) => roundsSeen(fake.requests()).map((round) => round[0]!.time)

beforeAll(() => ensureBinary(), 120_000)
afterAll(stopAllBinaries)

describe.concurrent("dashcast binary against the fake upstream", () => {
  it("spaces attempts by the rule: the interval, then doubling to the cap, then the interval after one success", async () => {
    const fake = startFakeUpstream()
    try {
      await using app = await startBinary({ env: { ...fake.env, ...SCHEDULE } })
      await app.ready()
      using client = openWs(app.wsUrl)
      await client.waitFor(isType("welcome"), { label: "welcome" })
      const before = expectedMarket(fake.values())
      for (const endpoint of ENDPOINTS) fake.fail(endpoint, Fault.ServerError({}))

      // With I = 2 s, T = 1, B = 8 s, failures 1..4 are followed by 2, 4, 8 and 8 (capped) seconds.
      const fourth = await waitFor(
        () => client.messages().filter(isType("error")).length >= 4 ? true : undefined,
        "four error frames",
        (2 + 2 + 4 + 8) * 1000 + 4_000,
        10
      )
      expect(fourth).toBe(true)
      // A new price (the index and the closes are not asked for again within the hour).
      const btc = fake.values().assets["bitcoin"]!
      fake.setAsset("bitcoin", { prices: { ...btc.prices, usd: 70_123.45 } })
      fake.clearFaults()
      const recovered = await client.waitFor(isUpdate("scheduled_update", 2), { label: "the update after recovery", timeoutMs: 12_000 })
      await client.waitFor(isUpdate("scheduled_update", recovered.message.seq + 1), { label: "the next update", timeoutMs: 5_000 })

      const errors = client.messages().filter(isType("error"))
      expect(errors.map((e) => e.retry_after)).toEqual([2, 4, 8, 8])
      expect(errors[0]?.error).toBe("Failed to fetch market data: coins_markets(usd): HTTP 500")
      // Each pause runs from the end of an attempt (when its snapshot was made, or its error
      // announced) to the next attempt's first request at upstream.
      const welcome = client.messages().find(isType("welcome"))
      const ends = [welcome?.data?.last_updated, ...errors.map((e) => e.timestamp), recovered.message.data?.last_updated].map((t) =>
        t === undefined ? Number.NaN : typeof t === "string" ? Date.parse(t) : DateTime.toEpochMillis(t)
      )
      const starts = attemptTimes(fake)
      expect(starts.length).toBeGreaterThanOrEqual(7)
      const gaps = ends.map((end, i) => starts[i + 1]! - end)
      const expected = [2, 2, 4, 8, 8, 2].map((s) => s * 1000)
      gaps.forEach((gap, i) => expect(Math.abs(gap - expected[i]!), `gap ${i + 1}: ${gaps.join(", ")} ms`).toBeLessThanOrEqual(TOLERANCE_MS))

      // Never an invented summary: the first values until the failures ended, then the new ones.
      const after = expectedMarket(fake.values())
      expect(after.btc_price).toBe(70_123.45)
      expect(after.rsi_14).not.toBe(before.rsi_14)
      expect(summariesSeen(client)).toEqual([
        { type: "welcome", seq: 1, market: before },
        { type: "dashboard_update", seq: 2, market: after },
        { type: "dashboard_update", seq: 3, market: after }
      ])
    } finally {
      await fake.stop()
    }
  }, 45_000)

  it("shows exactly the values upstream serves, RSI-14 included, on the welcome and GET /api/dashboard", async () => {
    const closes = Array.from({ length: 61 }, (_, i) => Math.round((71_000 + 2_400 * Math.cos(i / 3) - 22 * i) * 100) / 100)
    const fake = startFakeUpstream({ values: { fearGreed: 27 } })
    fake.setAsset("bitcoin", { prices: { usd: 98_765.43 }, change24h: -2.718, marketCapUsd: 1_945_678_901_234, volumeUsd: 45_678_901_234, closes })
    fake.setValues({ totals: { usd: { marketCap: 3_141_592_653_589.79, volume: 123_456_789_012.34 } } })
    try {
      await using app = await startBinary({ env: { ...fake.env, COINGECKO_API_KEY: "CG-e2e-key", UPDATE_INTERVAL: "1 hour" } })
      await app.ready()
      const v = fake.values()
      const expected = expectedMarket(v)
      // The RSI is a real computation over 60 closes and the live price, not a default.
      expect(expected.rsi_14).toBeGreaterThan(0)
      expect(expected.rsi_14).toBeLessThan(100)
      expect(expected.rsi_14).not.toBe(50)
      const market = { total_market_cap: 3_141_592_653_589.79, total_volume: 123_456_789_012.34, fear_greed_index: 27, fear_greed_label: "Fear" }
      expect(fearGreedLabel(27)).toBe("Fear")

      using client = openWs(app.wsUrl)
      const welcome = await client.waitFor(isType("welcome"), { label: "welcome" })
      expect(client.frames()[0]).toBe(welcome)
      expect(dataOf(welcome.message)).toEqual(expected)
      expect(welcome.message.seq).toBe(1)
      expect(welcome.message.currency).toBe("usd")
      expect(welcome.message.assets.map(assetOf)).toEqual([expectedAsset(v, "bitcoin", "usd")])
      expect(welcome.message.market).toEqual(market)
      expect(welcome.message.stale_fields).toBeUndefined()
      expect(welcome.message.stale_paths).toBeUndefined()

      const response = await app.fetch("/api/dashboard")
      expect(response.status).toBe(200)
      const body = (await response.json()) as {
        currency: string
        assets: ReadonlyArray<{ id: string; last_updated: string } & Record<string, unknown>>
        market: unknown
        data: Market & { last_updated: string }
        seq: number
        stale: boolean
      }
      const { last_updated, ...summary } = body.data
      expect(summary).toEqual(expected)
      expect(body.currency).toBe("usd")
      expect(body.assets.map(assetOf)).toEqual([expectedAsset(v, "bitcoin", "usd")])
      expect(body.market).toEqual(market)
      expect(body.seq).toBe(1)
      expect(body.stale).toBe(false)
      expect(last_updated).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/)
      expect(Math.abs(Date.parse(last_updated) - Date.now())).toBeLessThan(10_000)
      expect(DateTime.formatIso(welcome.message.data!.last_updated)).toBe(last_updated)
      // The asset's time is the provider's (the fake's 30 s before it answered).
      expect(Math.abs(Date.parse(body.assets[0]!.last_updated) - (Date.now() - 30_000))).toBeLessThan(10_000)

      // The four calls, once each, identified, the key to CoinGecko only.
      expect(fake.requests().map((r) => r.endpoint).sort()).toEqual([...ENDPOINTS].sort())
      for (const r of fake.requests()) {
        expect(r.headers["user-agent"]).toBe(`dashcast/${VERSION}`)
        expect(r.headers["x-cg-demo-api-key"]).toBe(r.endpoint === "fear_greed" ? undefined : "CG-e2e-key")
      }
    } finally {
      await fake.stop()
    }
  })

  interface FaultCase {
    readonly name: string
    readonly fault: Fault
    /** The endpoints that fail; the others answer normally. */
    readonly endpoints: ReadonlyArray<Endpoint>
    /** What the error frame says. */
    readonly error: RegExp
    /** Seconds until the next attempt: the rule's 2 after a first failure, or a longer Retry-After. */
    readonly retryAfter: number
    /** A partial failure publishes what answered, with these seed fields (and paths) stale. */
    readonly stale?: { readonly fields: ReadonlyArray<SummaryField>; readonly paths: ReadonlyArray<string> }
  }

  // Within the hour after the first round, a round asks only coins/markets and /global: the closes
  // and the index are not due. "Everywhere" is then those two calls failing: nothing new, no update.
  const everywhere = (name: string, fault: Fault, error: RegExp, retryAfter = 2): FaultCase => ({
    name,
    fault,
    endpoints: ENDPOINTS,
    error,
    retryAfter
  })
  const QUOTE_STALE = { fields: ["btc_price", "btc_change_24h"], paths: ["assets.bitcoin"] } as const
  const TOTALS_STALE = { fields: ["market_cap", "volume_24h"], paths: ["market.total_market_cap", "market.total_volume"] } as const

  const faultCases: ReadonlyArray<FaultCase> = [
    everywhere("HTTP 500", Fault.ServerError({}), /coins_markets\(usd\): HTTP 500$/),
    everywhere("429 with Retry-After longer than the rule", Fault.RateLimited({ retryAfter: "6" }), /coins_markets\(usd\): rate limited \(HTTP 429, retry after 6s\)$/, 6),
    everywhere("429 without Retry-After", Fault.RateLimited({}), /coins_markets\(usd\): rate limited \(HTTP 429\)$/),
    everywhere("plain-text Throttled", Fault.Throttled(), /coins_markets\(usd\): unexpected response: not JSON: "Throttled"$/),
    everywhere("an HTML challenge page", Fault.HtmlChallenge({}), /coins_markets\(usd\): HTTP 403$/),
    everywhere("HTTP 200 with {}", Fault.EmptyObject(), /coins_markets\(usd\): unexpected response: body: Expected ReadonlyArray<unknown>, actual \{\}$/),
    everywhere("malformed JSON", Fault.MalformedJson(), /coins_markets\(usd\): unexpected response: not JSON/),
    everywhere("a hang past UPSTREAM_TIMEOUT", Fault.Hang(), /coins_markets\(usd\): timed out after 500ms$/),
    everywhere("a dropped connection", Fault.Drop(), /coins_markets\(usd\): network error/),
    {
      // Rows are read one by one: the markets call answered (its row is refused), /global's totals did not decode.
      name: "numbers sent as strings (partial: the row and the totals keep their values)",
      fault: Fault.WrongTypes(),
      endpoints: ENDPOINTS,
      error: /global: unexpected response: data\.usd: total_market_cap: Expected number, actual "2721226850772\.63"$/,
      retryAfter: 2,
      stale: { fields: [...QUOTE_STALE.fields, ...TOTALS_STALE.fields], paths: [...QUOTE_STALE.paths, ...TOTALS_STALE.paths] }
    },
    {
      name: "HTTP 500 from coins/markets only (partial)",
      fault: Fault.ServerError({}),
      endpoints: ["coins_markets"],
      error: /coins_markets\(usd\): HTTP 500$/,
      retryAfter: 2,
      stale: { fields: QUOTE_STALE.fields, paths: ["currencies.usd"] }
    },
    {
      name: "{} from /global only (partial)",
      fault: Fault.EmptyObject(),
      endpoints: ["global"],
      error: /global: unexpected response: data: is missing$/,
      retryAfter: 2,
      stale: TOTALS_STALE
    }
    // A chart or index call that fails: Watchlist.e2e.test.ts and UpstreamTrust.e2e.test.ts (their
    // calls are hourly). A 429 from one provider binds that provider only: UpstreamTrust.e2e.test.ts.
  ]

  for (const c of faultCases) {
    it(`upstream fault: ${c.name} -> error with retry_after ${c.retryAfter}, still serving, nothing invented`, async () => {
      const fake = startFakeUpstream()
      try {
        await using app = await startBinary({ env: { ...fake.env, ...SCHEDULE } })
        await app.ready()
        using client = openWs(app.wsUrl)
        await client.waitFor(isType("welcome"), { label: "welcome" })
        const expected = expectedMarket(fake.values())
        for (const endpoint of c.endpoints) fake.fail(endpoint, c.fault)
        const partial = c.stale !== undefined

        const error: ReceivedFrame = await client.waitFor(isType("error"), { label: "the error frame", timeoutMs: INTERVAL_MS + 4_000 })
        if (error.message.type !== "error") throw new Error("unreachable")
        const failedAt = Date.parse(error.message.timestamp)
        fake.clearFaults()
        const attemptStartedAt = attemptTimes(fake).filter((t) => t <= failedAt).at(-1)!
        // The attempt gave up after UPSTREAM_TIMEOUT when upstream hung, and at once otherwise.
        const attemptMs = failedAt - attemptStartedAt
        if (c.fault._tag === "Hang") expect(attemptMs).toBeGreaterThanOrEqual(490)
        expect(attemptMs).toBeLessThan(c.fault._tag === "Hang" ? 500 + TOLERANCE_MS : TOLERANCE_MS)
        expect(error.message.error).toMatch(/^Failed to fetch market data: /)
        expect(error.message.error).toMatch(c.error)
        expect(error.message.retry_after).toBe(c.retryAfter)

        // The process keeps serving: alive, healthy, and a new client gets the last good summary.
        expect((await app.fetch("/healthz")).status).toBe(200)
        expect(app.exitCode()).toBeNull()
        using newcomer = openWs(app.wsUrl)
        const welcome = await newcomer.waitFor(() => true, { label: "the newcomer's first frame" })
        if (welcome.message.type !== "welcome") throw new Error(`expected a welcome first, got ${welcome.raw}`)
        expect(dataOf(welcome.message)).toEqual(expected)
        expect(welcome.message.seq).toBe(partial ? 2 : 1)
        expect(welcome.message.stale_fields).toEqual(c.stale?.fields)
        expect(welcome.message.stale_paths).toEqual(c.stale?.paths)
        expect(welcome.message.stale).toBe(partial)
        const api = (await (await app.fetch("/api/dashboard")).json()) as { data: Market; next_update_at: string; stale_paths?: ReadonlyArray<string> }
        expect(marketOf(api.data)).toEqual(expected)
        expect(api.stale_paths).toEqual(c.stale?.paths)
        // `retry_after` is the real time until the next attempt: the schedule's own deadline agrees...
        expect(Math.abs(Date.parse(api.next_update_at) - failedAt - c.retryAfter * 1000)).toBeLessThanOrEqual(TOLERANCE_MS)

        // ...and so does upstream, which sees the next attempt that much later; it succeeds.
        const recovered = await client.waitFor(isUpdate("scheduled_update", partial ? 3 : 2), {
          label: "the update after recovery",
          timeoutMs: c.retryAfter * 1000 + 4_000
        })
        const nextAttempt = attemptTimes(fake).find((t) => t > failedAt)
        expect(nextAttempt).toBeDefined()
        expect(Math.abs(nextAttempt! - failedAt - c.retryAfter * 1000)).toBeLessThanOrEqual(TOLERANCE_MS)

        // Nothing invented: every summary any client saw has the fake's values, and only a partial
        // failure published one (with what is stale) between the last success and the recovery.
        const seen = summariesSeen(client, newcomer)
        for (const s of seen) expect(s.market).toEqual(expected)
        const updates = client.messages().filter(isType("dashboard_update"))
        expect(updates.map((u) => u.seq)).toEqual(partial ? [2, 3] : [2])
        if (partial) {
          expect(updates[0]!.stale_fields).toEqual(c.stale?.fields)
          expect(updates[0]!.stale_paths).toEqual(c.stale?.paths)
        }
        expect(recovered.message.stale_fields).toBeUndefined()
        expect(recovered.message.stale_paths).toBeUndefined()
        expect(app.exitCode()).toBeNull()
      } finally {
        await fake.stop()
      }
    }, 30_000)
  }
})

