/**
 * The compiled binary's cache from outside (docs/ARCHITECTURE.md "Data flow" and "Freshness"): a
 * warm start after a crash serves the last snapshot at once, to every currency's clients; a broken
 * SQLite file or a Redis outage degrades to memory without stopping anything; and a burst of
 * connections to stale data makes one upstream round trip.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { RedisClient } from "bun"
import { Effect, Exit, Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import type { ServerMessage } from "../../src/realtime/Protocol.js"
import { ensureBinary, isType, openWs, startBinary, stopAllBinaries, tempDir, waitFor, type WsClient } from "../support/Binary.js"
import { Fault, startFakeUpstream } from "../support/FakeUpstream.js"
import { makeRedisServer } from "../support/RedisServer.js"
import { hasTool } from "../support/SystemTools.js"
import { assetOf, ENDPOINTS, expectedAsset, expectedMarket, isUpdate, marketOf } from "./Market.js"

const SNAPSHOT_KEY = "dashcast:cache:market:snapshot"

/** The seed's summary of a welcome or update: it must be there (bitcoin is watched). */
const dataOf = (message: ServerMessage) => {
  if ((message.type !== "welcome" && message.type !== "dashboard_update") || message.data === undefined) {
    throw new Error(`expected a frame with the seed's data, got ${JSON.stringify(message)}`)
  }
  return message.data
}

const isWarning = (pattern: RegExp) => (log: { logLevel: string; message: unknown }) =>
  log.logLevel === "WARN" && pattern.test(String(log.message))

beforeAll(() => ensureBinary(), 120_000)
afterAll(stopAllBinaries)

describe.concurrent("dashcast binary: cache", () => {
  it("after kill -9, a restart with upstream down welcomes a new client with the last summary within 500 ms", async () => {
    const fake = startFakeUpstream()
    try {
      const env = { ...fake.env, CACHE_PATH: path.join(tempDir(), "cache.sqlite"), UPDATE_INTERVAL: "1 hour" }
      const first = await startBinary({ env })
      await first.ready()
      const before = await (async () => {
        using client = openWs(first.wsUrl)
        return (await client.waitFor(isType("welcome"), { label: "the first process's welcome" })).message
      })()
      await first.kill9()
      expect(first.proc.signalCode).toBe("SIGKILL")

      for (const endpoint of ENDPOINTS) fake.fail(endpoint, Fault.ServerError({}))
      const requestsBefore = fake.requests().length
      await Bun.sleep(1_200) // so the summary is visibly older than FRESHNESS when it is served
      await using second = await startBinary({ env: { ...env, FRESHNESS: "1 seconds", INITIAL_RETRY_DELAY: "1 seconds" } })

      using client = openWs(second.wsUrl)
      const welcome = await client.waitFor(isType("welcome"), { label: "the warm start's welcome", timeoutMs: 2_000 })
      const connectToWelcomeMs = welcome.at - client.createdAt
      expect(client.frames()[0]).toBe(welcome)
      expect(connectToWelcomeMs, `connect -> welcome took ${connectToWelcomeMs.toFixed(0)} ms`).toBeLessThan(500)
      expect(welcome.message.seq).toBe(before.seq)
      expect(welcome.message.data).toBeDefined()
      expect(welcome.message.data).toEqual(before.data)
      expect(welcome.message.assets).toEqual(before.assets)
      expect(welcome.message.stale).toBe(true)
      const age = (Date.parse(welcome.message.timestamp) - Date.parse(before.timestamp)) / 1000
      expect(welcome.message.age_seconds).toBeGreaterThanOrEqual(1.2)
      expect(welcome.message.age_seconds).toBeLessThanOrEqual(age + 0.5)
      // Operators (and the container check) recognise a warm start by this line.
      const warmLog = await second.waitForLog(
        (log) => String(log.message) === "serving the cached summary until the first fetch",
        "the warm start's log line"
      )
      expect(warmLog.annotations).toMatchObject({ seq: before.seq })
      const api = (await (await second.fetch("/api/dashboard")).json()) as { seq: number; stale: boolean }
      expect(api).toMatchObject({ seq: before.seq, stale: true })
      // Clients also hear that upstream fails, with the time of the next attempt.
      const error = await client.waitFor(isType("error"), { label: "the error of the failing initial load", timeoutMs: 4_000 })
      expect(error.message.retry_after).toBeGreaterThan(0)
      // The restarted process did ask upstream, which only ever failed: the snapshot came from the cache.
      expect(fake.requests().length).toBeGreaterThan(requestsBefore)
    } finally {
      await fake.stop()
    }
  })

  it("after kill -9, a restart with upstream failing welcomes every currency's clients at once with that currency's cached prices", async () => {
    const fake = startFakeUpstream()
    const assets = ["bitcoin", "ethereum"]
    const currencies = ["usd", "eur"]
    try {
      const env = {
        ...fake.env,
        ASSETS: assets.join(","),
        CURRENCIES: currencies.join(","),
        CACHE_PATH: path.join(tempDir(), "cache.sqlite"),
        UPDATE_INTERVAL: "1 hour"
      }
      const first = await startBinary({ env })
      await first.ready()
      const values = fake.values()
      const before = await (async () => {
        using client = openWs(first.wsUrl)
        return (await client.waitFor(isType("welcome"), { label: "the first process's welcome" })).message
      })()
      await first.kill9()

      // Every upstream answer is held (and would fail): nothing the restarted process asks can finish
      // before the welcomes, which must come from the cache alone.
      for (const endpoint of ENDPOINTS) fake.fail(endpoint, Fault.ServerError({}))
      fake.hold()
      const requestsBefore = fake.requests().length
      await using second = await startBinary({ env: { ...env, INITIAL_RETRY_DELAY: "1 seconds" } })
      await fake.waitForRequests(requestsBefore + 1)
      using eur = openWs(`${second.wsUrl}?currency=eur`)
      using usd = openWs(`${second.wsUrl}?currency=usd`)
      const welcomes = {
        eur: await eur.waitFor(isType("welcome"), { label: "the eur welcome", timeoutMs: 2_000 }),
        usd: await usd.waitFor(isType("welcome"), { label: "the usd welcome", timeoutMs: 2_000 })
      }
      // Upstream was asked before the sockets opened, and nothing it was asked has been answered.
      const asked = fake.requests().slice(requestsBefore)
      expect(asked.length).toBeGreaterThan(0)
      for (const currency of currencies) {
        const welcome = welcomes[currency as keyof typeof welcomes]
        expect(welcome.message).toMatchObject({ currency, seq: before.seq })
        expect(welcome.message.assets.map(assetOf), currency).toEqual(assets.map((id) => expectedAsset(values, id, currency)))
        expect(marketOf(dataOf(welcome.message)), currency).toEqual(expectedMarket(values, currency))
        expect(welcome.message.market).toMatchObject({
          total_market_cap: values.totals[currency]?.marketCap,
          total_volume: values.totals[currency]?.volume,
          fear_greed_index: values.fearGreed
        })
      }
      expect(welcomes.eur.message.assets[0]?.price).not.toBe(welcomes.usd.message.assets[0]?.price)
      expect(eur.frames()).toHaveLength(1)
      expect(usd.frames()).toHaveLength(1)
      // Released, every call fails: both currencies' clients hear it, and keep what they have.
      fake.release()
      for (const client of [eur, usd]) {
        const error = await client.waitFor(isType("error"), { label: "the error of the failing initial load", timeoutMs: 4_000 })
        expect(error.message.retry_after).toBeGreaterThan(0)
      }
    } finally {
      await fake.stop()
    }
  })

  it("with CACHE_PATH pointing at a file that is not SQLite, it logs the problem once, serves fresh data and keeps running", async () => {
    const fake = startFakeUpstream()
    try {
      const file = path.join(tempDir(), "not-a-database.sqlite")
      fs.writeFileSync(file, crypto.getRandomValues(new Uint8Array(16_384)))
      await using app = await startBinary({ env: { ...fake.env, CACHE_PATH: file, UPDATE_INTERVAL: "1 seconds" } })

      const unavailable = isWarning(/L2 cache unavailable/)
      const log = await app.waitForLog(unavailable, "the L2 warning")
      expect(log.annotations).toMatchObject({ store: "sqlite", location: file, reason: "Unavailable" })
      expect(String(log.annotations["error"])).toMatch(/not a database/i)

      await app.ready()
      using client = openWs(app.wsUrl)
      const welcome = await client.waitFor(isType("welcome"), { label: "welcome" })
      expect(marketOf(dataOf(welcome.message))).toEqual(expectedMarket(fake.values()))
      // Still running, still updating: two more scheduled updates, one warning for the whole outage.
      const update = await client.waitFor(isUpdate("scheduled_update", welcome.message.seq + 2), { label: "two more updates" })
      expect(marketOf(dataOf(update.message))).toEqual(expectedMarket(fake.values()))
      expect((await app.fetch("/healthz")).status).toBe(200)
      expect(app.exitCode()).toBeNull()
      expect(app.logs().filter(unavailable)).toHaveLength(1)
      expect(app.output().filter((l) => l.stream === "stderr")).toEqual([])
    } finally {
      await fake.stop()
    }
  })

  describe.skipIf(!hasTool("redis-server"))("with REDIS_URL", () => {
    it("survives Redis going away under it and writes the snapshot again once Redis is back, without a restart", async () => {
      const fake = startFakeUpstream()
      const scope = Effect.runSync(Scope.make())
      const readSnapshotKey = async (url: string): Promise<{ seq: number } | undefined> => {
        const redis = new RedisClient(url, { autoReconnect: false, connectionTimeout: 1_000 })
        try {
          const raw = await redis.get(SNAPSHOT_KEY)
          return raw === null ? undefined : (JSON.parse(raw.slice(raw.indexOf(" ") + 1)) as { seq: number })
        } catch {
          return undefined
        } finally {
          redis.close()
        }
      }
      try {
        const redis = await Effect.runPromise(Scope.extend(makeRedisServer, scope))
        const token = "e2e-admin-token"
        await using app = await startBinary({
          env: { ...fake.env, REDIS_URL: redis.url, ADMIN_TOKEN: token, UPDATE_INTERVAL: "2 seconds", MIN_FETCH_GAP: "0 millis" }
        })
        await app.ready()
        const expected = expectedMarket(fake.values())
        using early = openWs(app.wsUrl)
        await early.waitFor(isType("welcome"), { label: "welcome" })
        expect(await waitFor(() => readSnapshotKey(redis.url), "the snapshot key in Redis")).toMatchObject({ seq: 1 })

        await Effect.runPromise(redis.stop)
        // Connected clients keep receiving scheduled updates.
        const afterOutage = early.frames().length
        const scheduled = await early.waitFor(isUpdate("scheduled_update"), {
          label: "a scheduled update with Redis down",
          after: afterOutage,
          timeoutMs: 5_000
        })
        await app.waitForLog(isWarning(/L2 cache unavailable/), "the L2 warning")
        // New clients get a welcome with the latest summary.
        using late = openWs(app.wsUrl)
        const welcome = await late.waitFor(() => true, { label: "the first frame with Redis down" })
        if (welcome.message.type !== "welcome") throw new Error(`expected a welcome, got ${welcome.raw}`)
        expect(welcome.message.seq).toBeGreaterThanOrEqual(scheduled.message.seq)
        expect(marketOf(dataOf(welcome.message))).toEqual(expected)

        // A force update works and reaches everyone (asked right after a scheduled one, so it is not coalesced into it).
        const next = await early.waitFor(isUpdate("scheduled_update", welcome.message.seq + 1), { label: "the next scheduled update" })
        const forced = await app.fetch("/api/dashboard/refresh", { method: "POST", headers: { authorization: `Bearer ${token}` } })
        expect(forced.status).toBe(200)
        const forcedBody = (await forced.json()) as { seq: number }
        expect(forcedBody.seq).toBe(next.message.seq + 1)
        for (const client of [early, late]) {
          const update = await client.waitFor(isUpdate("force_update", forcedBody.seq), { label: "the force update" })
          expect(marketOf(dataOf(update.message))).toEqual(expected)
        }

        // Redis is back (empty, same port): the same process writes the snapshot again.
        await Effect.runPromise(redis.start)
        const written = await waitFor(() => readSnapshotKey(redis.url), "the snapshot key written again", 15_000, 100)
        expect(written.seq).toBeGreaterThan(forcedBody.seq)
        await app.waitForLog((l) => l.logLevel === "INFO" && /L2 cache available again/.test(String(l.message)), "the recovery log")
        expect(app.exitCode()).toBeNull()
        expect(app.logs().filter((l) => /listening on/.test(String(l.message)))).toHaveLength(1)
      } finally {
        await Effect.runPromise(Scope.close(scope, Exit.void))
        await fake.stop()
      }
    })
  })
})

describe("dashcast binary: a burst of connections to stale data", () => {
  const CLIENTS = 1000

  it(`${CLIENTS} clients connecting at once make one upstream round trip; each gets a welcome at once and one refresh`, async () => {
    const fake = startFakeUpstream()
    const clients: Array<WsClient> = []
    try {
      await using app = await startBinary({
        env: { ...fake.env, FRESHNESS: "1 seconds", MIN_FETCH_GAP: "1 seconds", UPDATE_INTERVAL: "1 hour", UPSTREAM_TIMEOUT: "30 seconds" }
      })
      await app.ready()
      await Bun.sleep(1_300) // the snapshot is now older than FRESHNESS and MIN_FETCH_GAP has passed
      // The initial round: every call once (one currency, one asset's chart, Fear & Greed).
      const initial = fake.requests().length
      expect(initial).toBe(ENDPOINTS.length)
      const counts = () => Object.fromEntries(ENDPOINTS.map((e) => [e, fake.requestsTo(e).length - 1]))
      // A refresh round asks for markets and totals; the chart (hourly) and Fear & Greed (when
      // alternative.me has a new value) are not due again yet.
      const oneRefresh = { coins_markets: 1, global: 1, market_chart: 0, fear_greed: 0 }

      // Upstream answers slowly: the refresh is held until every client has its welcome.
      fake.hold()
      for (let i = 0; i < CLIENTS; i++) clients.push(openWs(app.wsUrl))
      const welcomes = await Promise.all(
        clients.map((c) => c.waitFor(isType("welcome"), { label: "welcome", timeoutMs: 20_000 }))
      )
      const latencies = welcomes.map((w, i) => w.at - clients[i]!.createdAt).sort((a, b) => a - b)
      console.log(`${CLIENTS} welcomes: median ${latencies[CLIENTS / 2]!.toFixed(0)} ms, max ${latencies.at(-1)!.toFixed(0)} ms`)
      expect(latencies.at(-1)).toBeLessThan(5_000)
      for (const [i, w] of welcomes.entries()) {
        expect(clients[i]!.frames()[0]).toBe(w)
        expect(w.message).toMatchObject({ seq: 1, stale: true })
      }
      // Every client was welcomed while the one refresh was still waiting on upstream.
      await fake.waitForRequests(initial + 2)
      await Bun.sleep(200)
      expect(counts()).toEqual(oneRefresh)
      fake.release()

      const refreshes = await Promise.all(
        clients.map((c) => c.waitFor(isUpdate("refresh"), { label: "the refresh", timeoutMs: 10_000 }))
      )
      await Bun.sleep(500)
      const expected = expectedMarket(fake.values())
      for (const [i, r] of refreshes.entries()) {
        expect(r.message.seq).toBe(2)
        expect(marketOf(dataOf(r.message))).toEqual(expected)
        expect(clients[i]!.messages().filter(isType("dashboard_update"))).toHaveLength(1)
      }
      expect(counts()).toEqual(oneRefresh)
    } finally {
      for (const c of clients) c.close()
      await fake.stop()
    }
  }, 60_000)
})
