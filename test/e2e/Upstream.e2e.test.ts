/**
 * The compiled binary against the fake upstream (DESIGN.md "Upstream calls" and "The schedule"):
 * it shows exactly what upstream serves, survives every kind of upstream failure without inventing
 * a value, tells clients the real time of the next attempt, and spaces its attempts by the rule.
 * Each test runs its own binary and fake, so the tests run concurrently.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { DateTime } from "effect"
import type { SummaryField } from "../../src/market/DashboardSummary.js"
import type { Endpoint } from "../../src/market/MarketData.js"
import type { ServerMessage } from "../../src/realtime/Protocol.js"
import { VERSION } from "../../src/Version.js"
import { ensureBinary, isType, openWs, type ReceivedFrame, startBinary, stopAllBinaries, waitFor, type WsClient } from "../support/Binary.js"
import { Fault, startFakeUpstream } from "../support/FakeUpstream.js"
import { ENDPOINTS, expectedMarket, isUpdate, type Market, marketOf } from "./Market.js"

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

/** Every summary a client was sent, as market fields. */
const summariesSeen = (...clients: ReadonlyArray<WsClient>) =>
  clients.flatMap((c) => c.messages().filter(carriesSummary).map((m) => ({ type: m.type, seq: m.seq, market: marketOf(m.data) })))

const attemptTimes = (fake: ReturnType<typeof startFakeUpstream>) => fake.requestsTo("simple_price").map((r) => r.time)

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
      fake.setValues({ btcPrice: 70_123.45, fearGreed: 71 })
      fake.clearFaults()
      const recovered = await client.waitFor(isUpdate("scheduled_update", 2), { label: "the update after recovery", timeoutMs: 12_000 })
      await client.waitFor(isUpdate("scheduled_update", recovered.message.seq + 1), { label: "the next update", timeoutMs: 5_000 })

      const errors = client.messages().filter(isType("error"))
      expect(errors.map((e) => e.retry_after)).toEqual([2, 4, 8, 8])
      const times = attemptTimes(fake)
      expect(times.length).toBeGreaterThanOrEqual(7)
      const gaps = times.slice(1, 7).map((t, i) => t - times[i]!)
      const expected = [2, 2, 4, 8, 8, 2].map((s) => s * 1000)
      gaps.forEach((gap, i) => expect(Math.abs(gap - expected[i]!), `gap ${i + 1}: ${gaps.join(", ")} ms`).toBeLessThanOrEqual(TOLERANCE_MS))

      // Never an invented summary: the first values until the failures ended, then the new ones.
      const after = expectedMarket(fake.values())
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
    const values = {
      btcPrice: 98_765.43,
      btcChange24h: -2.718,
      totalMarketCap: 3_141_592_653_589.79,
      totalVolume: 123_456_789_012.34,
      fearGreed: 27,
      closes
    }
    const fake = startFakeUpstream({ values })
    try {
      await using app = await startBinary({ env: { ...fake.env, COINGECKO_API_KEY: "CG-e2e-key", UPDATE_INTERVAL: "1 hour" } })
      await app.ready()
      const expected = expectedMarket(fake.values())
      // The RSI is a real computation over the 61 closes, not a default.
      expect(expected.rsi_14).toBeGreaterThan(0)
      expect(expected.rsi_14).toBeLessThan(100)
      expect(expected.rsi_14).not.toBe(50)

      using client = openWs(app.wsUrl)
      const welcome = await client.waitFor(isType("welcome"), { label: "welcome" })
      expect(client.frames()[0]).toBe(welcome)
      expect(marketOf(welcome.message.data)).toEqual(expected)
      expect(welcome.message.seq).toBe(1)

      const response = await app.fetch("/api/dashboard")
      expect(response.status).toBe(200)
      const body = (await response.json()) as { data: Market & { last_updated: string }; seq: number; stale: boolean }
      const { last_updated, ...market } = body.data
      expect(market).toEqual(expected)
      expect(body.seq).toBe(1)
      expect(body.stale).toBe(false)
      expect(last_updated).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/)
      expect(Math.abs(Date.parse(last_updated) - Date.now())).toBeLessThan(10_000)
      expect(DateTime.formatIso(welcome.message.data.last_updated)).toBe(last_updated)

      // The four calls of DESIGN.md, once each, identified, the key to CoinGecko only.
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
    /** The endpoints that fail; the others answer normally (a partial failure). */
    readonly endpoints: ReadonlyArray<Endpoint>
    /** What the error frame says. */
    readonly error: RegExp
    /** Seconds until the next attempt: the rule's 2 after a first failure, or a longer Retry-After. */
    readonly retryAfter: number
  }

  const everywhere = (name: string, fault: Fault, error: RegExp, retryAfter = 2): FaultCase => ({
    name,
    fault,
    endpoints: ENDPOINTS,
    error,
    retryAfter
  })

  const faultCases: ReadonlyArray<FaultCase> = [
    everywhere("HTTP 500", Fault.ServerError({}), /simple_price: HTTP 500$/),
    everywhere("429 with Retry-After longer than the rule", Fault.RateLimited({ retryAfter: "6" }), /rate limited \(HTTP 429, retry after 6s\)/, 6),
    everywhere("429 without Retry-After", Fault.RateLimited({}), /simple_price: rate limited \(HTTP 429\)$/),
    everywhere("plain-text Throttled", Fault.Throttled(), /simple_price: unexpected response: not JSON: "Throttled"/),
    everywhere("an HTML challenge page", Fault.HtmlChallenge({}), /simple_price: HTTP 403$/),
    everywhere("HTTP 200 with {}", Fault.EmptyObject(), /simple_price: unexpected response: bitcoin: is missing/),
    everywhere("malformed JSON", Fault.MalformedJson(), /simple_price: unexpected response: not JSON/),
    everywhere("numbers sent as strings", Fault.WrongTypes(), /simple_price: unexpected response: bitcoin\.usd: Expected number/),
    everywhere("a hang past UPSTREAM_TIMEOUT", Fault.Hang(), /simple_price: timed out after 500ms$/),
    everywhere("a dropped connection", Fault.Drop(), /simple_price: network error/),
    {
      name: "{} from market_chart only (partial)",
      fault: Fault.EmptyObject(),
      endpoints: ["market_chart"],
      error: /market_chart: unexpected response: prices: is missing/,
      retryAfter: 2
    },
    {
      name: "HTTP 500 from fear_greed only (partial)",
      fault: Fault.ServerError({}),
      endpoints: ["fear_greed"],
      error: /fear_greed: HTTP 500$/,
      retryAfter: 2
    }
    // A 429 from one provider binds that provider only: see UpstreamTrust.e2e.test.ts.
  ]

  const staleFieldsOf: Record<Endpoint, ReadonlyArray<SummaryField>> = {
    simple_price: ["btc_price", "btc_change_24h"],
    global: ["market_cap", "volume_24h"],
    market_chart: ["rsi_14"],
    fear_greed: ["fear_greed_index"]
  }

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
        const partial = c.endpoints.length < ENDPOINTS.length

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
        expect(marketOf(welcome.message.data)).toEqual(expected)
        expect(welcome.message.seq).toBe(partial ? 2 : 1)
        expect(welcome.message.stale_fields ?? []).toEqual(partial ? c.endpoints.flatMap((e) => staleFieldsOf[e]) : [])
        const api = (await (await app.fetch("/api/dashboard")).json()) as { data: Market; next_update_at: string }
        expect(marketOf(api.data)).toEqual(expected)
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
        // failure published one (with its stale fields) between the last success and the recovery.
        const seen = summariesSeen(client, newcomer)
        for (const s of seen) expect(s.market).toEqual(expected)
        const updates = client.messages().filter(isType("dashboard_update"))
        expect(updates.map((u) => u.seq)).toEqual(partial ? [2, 3] : [2])
        if (partial) expect(updates[0]!.stale_fields).toEqual(c.endpoints.flatMap((e) => staleFieldsOf[e]))
        expect(recovered.message.stale_fields).toBeUndefined()
        expect(app.exitCode()).toBeNull()
      } finally {
        await fake.stop()
      }
    }, 30_000)
  }
})
