/**
 * Backward compatibility (issue 12, "a client of today gets exactly the frames it gets now"): with
 * the default configuration (bitcoin in usd), a client that knows nothing of currencies reads every
 * frame with the protocol of before the watchlist (test/support/LegacyProtocol.ts), and `data` is
 * exactly the seed's seven fields with the seed's values, partial failures included.
 */
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect, Either, Option } from "effect"
import type { DashboardSummary } from "../../src/market/DashboardSummary.js"
import type { MarketSnapshot } from "../../src/market/Watchlist.js"
import { decodeLegacyServerMessage, LEGACY_SUMMARY_FIELDS, type LegacyServerMessage } from "../support/LegacyProtocol.js"
import * as TestServer from "../support/TestServer.js"
import { makeSummary, makeUpstreamError, marketFields, summaryView } from "../support/TestServer.js"
import { type AlertEvent, connect } from "../../src/web/DashcastClient.js"
import { startWebhookReceiver } from "../support/WebhookReceiver.js"
import * as WsClient from "../support/WsClient.js"
import { isType } from "../support/WsClient.js"

const ADMIN_TOKEN = "legacy-admin-token"

/** Decodes a frame with the old Schemas; a frame they reject fails the test with the reason. */
const legacy = (raw: string): LegacyServerMessage =>
  Either.getOrElse(decodeLegacyServerMessage(raw), (error) => expect.fail(`an old client cannot read ${raw}:\n${error.message}`))

/** The old client's view of a frame that carries data: exactly the seven fields, with the seed's values. */
const expectSeedData = (raw: string, summary: DashboardSummary, snapshot: MarketSnapshot) => {
  const json = JSON.parse(raw) as { data: Record<string, unknown> }
  expect(Object.keys(json.data).sort()).toEqual([...LEGACY_SUMMARY_FIELDS].sort())
  expect(json.data).toEqual({ ...marketFields(summary), last_updated: DateTime.formatIso(snapshot.fetched_at) })
}

const forceUpdate = (server: TestServer.TestServer) =>
  server.fetch("/api/dashboard/refresh", { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })

describe("a client of before the watchlist, with the default configuration", () => {
  it.scopedLive("reads every welcome, update, error and pong, and data is the seed's, through partial failures", () =>
    Effect.gen(function*() {
      // No ASSETS, no CURRENCIES: bitcoin in usd.
      const server = yield* TestServer.start({ config: { ADMIN_TOKEN } })
      const client = yield* WsClient.connect(server.wsUrl)

      // No data yet: an error with retry_after.
      expect(legacy((yield* client.next()).raw)).toMatchObject({ type: "error" })
      // The first attempt fails: the failure broadcast.
      yield* server.market.fail(makeUpstreamError(503))
      expect(legacy((yield* client.next(isType("error"))).raw)).toMatchObject({ type: "error", retry_after: 3600 })

      // A full round.
      const full = makeSummary({ btc_price: 65_432.1, fear_greed_index: 33 })
      yield* server.market.succeed(summaryView(full))
      expect((yield* forceUpdate(server)).status).toBe(200)
      const update = yield* client.next(isType("dashboard_update"))
      const decoded = legacy(update.raw)
      expect(decoded).toMatchObject({ type: "dashboard_update", source: "force_update", seq: 1 })
      expect("stale_fields" in decoded).toBe(false)
      expectSeedData(update.raw, full, yield* server.awaitSeq(1))

      // Partial rounds: what failed is named with the seed's names only (the paths are elsewhere).
      const partials: ReadonlyArray<readonly [TestServer.ViewOptions["stale"], ReadonlyArray<string>]> = [
        [{ rsi: ["bitcoin"], fear_greed: true }, ["rsi_14", "fear_greed_index"]],
        [{ currencies: ["usd"], totals: ["usd"] }, ["btc_price", "btc_change_24h", "market_cap", "volume_24h"]],
        [{ quotes: [["usd", "bitcoin"]] }, ["btc_price", "btc_change_24h"]]
      ]
      let seq = 1
      for (const [stale, staleFields] of partials) {
        seq++
        const summary = makeSummary({ btc_price: 60_000 + seq, rsi_14: 40 + seq })
        const view = summaryView(summary, { stale })
        yield* server.market.partial(view, [makeUpstreamError(500, "market_chart", "bitcoin")])
        expect((yield* forceUpdate(server)).status).toBe(200)
        const frame = yield* client.next(isType("dashboard_update"))
        expect(legacy(frame.raw)).toMatchObject({ type: "dashboard_update", seq, stale_fields: staleFields })
        expectSeedData(frame.raw, summary, yield* server.awaitSeq(seq))
        // The schedule counts it as failed: the failure broadcast follows, readable too.
        expect(legacy((yield* client.next(isType("error"))).raw)).toMatchObject({ type: "error" })
      }

      // request_update, ping (JSON and bare), a refused frame.
      yield* client.send(JSON.stringify({ type: "request_update" }))
      const answer = yield* client.next(isType("dashboard_update"))
      expect(legacy(answer.raw)).toMatchObject({ type: "dashboard_update", source: "request_update", seq })
      yield* client.send(JSON.stringify({ type: "ping" }))
      yield* client.send("ping")
      yield* client.send("{not json")
      const replies = [yield* client.next(), yield* client.next(), yield* client.next()]
      expect(replies.map((f) => legacy(f.raw).type)).toEqual(["pong", "pong", "error"])

      // A new client's welcome, of a snapshot with old values: stale, with the seed's names.
      const late = yield* WsClient.connect(server.wsUrl)
      const welcome = yield* late.next()
      expect(legacy(welcome.raw)).toMatchObject({ type: "welcome", seq, stale: true, stale_fields: ["btc_price", "btc_change_24h"] })

      // Every frame either client received, whatever it was, is one the old client reads.
      for (const frame of [...client.frames(), ...late.frames()]) legacy(frame.raw)
      expect(client.frames().length).toBeGreaterThan(10)
    }))

  it.scopedLive("survives an alert frame (issue 15): it is the one frame the old Schemas reject, cleanly, and every frame after it reads as before", () =>
    Effect.gen(function*() {
      const receiver = startWebhookReceiver()
      yield* Effect.addFinalizer(() => Effect.promise(() => receiver.stop()))
      const server = yield* TestServer.start({
        config: { ADMIN_TOKEN, WEBHOOK_ALLOW_PRIVATE: "true" },
        first: summaryView(makeSummary({ btc_price: 64_000 }))
      })
      const created = yield* server.fetch("/api/alerts", {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ asset: "bitcoin", currency: "usd", condition: "price_above", threshold: 65_000, webhook_url: receiver.url() })
      })
      expect(created.status).toBe(201)
      const old = yield* WsClient.connect(server.wsUrl)
      // Today's SDK, on the same server: it gets the firing through onAlert.
      const sdk = connect(server.wsUrl)
      yield* Effect.addFinalizer(() => Effect.sync(() => sdk.close()))
      const alerts: Array<AlertEvent> = []
      sdk.onAlert((event) => alerts.push(event))
      yield* old.next(isType("welcome"))
      yield* Effect.promise(async () => {
        for (let i = 0; i < 250 && sdk.latestMarket() === undefined; i++) await Bun.sleep(20)
      })
      expect(sdk.latestMarket()?.seq).toBe(1)

      yield* server.market.succeed(summaryView(makeSummary({ btc_price: 65_500 })))
      expect((yield* forceUpdate(server)).status).toBe(200)
      const frame = yield* old.next(isType("alert"))
      // The old client's Schemas refuse it without throwing: its rule for an unreadable frame
      // (status.lastError, no event) applies, and the connection goes on.
      expect(Either.isLeft(decodeLegacyServerMessage(frame.raw))).toBe(true)
      expect(JSON.parse(frame.raw)).toMatchObject({ type: "alert", currency: "usd", asset: "bitcoin", threshold: 65_000, value: 65_500, seq: 2 })
      yield* server.market.succeed(summaryView(makeSummary({ btc_price: 65_700 })))
      expect((yield* forceUpdate(server)).status).toBe(200)
      const after = yield* old.next((m) => m.type === "dashboard_update" && m.seq === 3)
      expect(legacy(after.raw)).toMatchObject({ type: "dashboard_update", seq: 3 })
      for (const f of old.frames()) if (f.message.type !== "alert") legacy(f.raw)
      expect(old.frames().filter((f) => f.message.type === "alert").length).toBe(1)
      yield* Effect.promise(async () => {
        for (let i = 0; i < 100 && alerts.length === 0; i++) await Bun.sleep(20)
      })
      expect(alerts.map((a) => [a.alertId, a.value, a.seq])).toEqual([[JSON.parse(frame.raw).alert_id, 65_500, 2]])
      expect(sdk.status().lastError).toBeUndefined()
    }))

  it.scopedLive("GET /api/dashboard still has data, seq, age_seconds, stale, stale_fields and next_update_at", () =>
    Effect.gen(function*() {
      const summary = makeSummary({ volume_24h: 90_000_000_000 })
      const server = yield* TestServer.start({ first: summaryView(summary, { stale: { fear_greed: true } }) })
      const response = yield* server.fetch("/api/dashboard")
      const body = (yield* Effect.promise(() => response.json())) as Record<string, unknown>
      expectSeedData(JSON.stringify(body), summary, yield* server.awaitSeq(1))
      expect(body).toMatchObject({ seq: 1, stale: true, stale_fields: ["fear_greed_index"] })
      expect(typeof body.age_seconds).toBe("number")
      expect("next_update_at" in body).toBe(true)
      expect(Option.isSome(server.state.current())).toBe(true)
    }))
})
