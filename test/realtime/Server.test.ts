/**
 * The realtime server end to end: the real stack on a real port (test/support/TestServer.ts),
 * real WebSocket clients, and the contracts of DESIGN.md ("WebSocket" and "HTTP") as assertions.
 */
import { describe, expect, it } from "@effect/vitest"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { DateTime, Effect, Exit, Option, Schedule, Scope } from "effect"
import type { DashboardSummary } from "../../src/market/DashboardSummary.js"
import type { MarketSnapshot } from "../../src/market/Watchlist.js"
import { REQUEST_RULE } from "../../src/realtime/Server.js"
import * as TestServer from "../support/TestServer.js"
import { makeSummary, makeUpstreamError, marketFields, summaryView } from "../support/TestServer.js"
import * as WsClient from "../support/WsClient.js"
import { isType } from "../support/WsClient.js"

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/
const SUMMARY_FIELDS = ["btc_change_24h", "btc_price", "fear_greed_index", "last_updated", "market_cap", "rsi_14", "volume_24h"]
const ADMIN_TOKEN = "test-admin-token-4f1c"

const readJson = (response: Response) => Effect.promise(() => response.json() as Promise<Record<string, unknown>>)
const bearer = (token: string) => ({ authorization: `Bearer ${token}` })
const refresh = (server: TestServer.TestServer, headers: Record<string, string> = bearer(ADMIN_TOKEN)) =>
  server.fetch("/api/dashboard/refresh", { method: "POST", headers })

/** Repeats `self` until `done` holds of its result, failing the test after 5 seconds. */
const pollUntil = <A>(done: (a: A) => boolean) => <E, R>(self: Effect.Effect<A, E, R>) =>
  self.pipe(
    Effect.filterOrFail(done, () => "not yet"),
    Effect.retry(Schedule.spaced("10 millis")),
    Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("condition not met within 5 seconds") })
  )

/**
 * The wire form of a summary as the JSON of a frame carries it: its market fields, and as
 * `last_updated` the time dashcast fetched the snapshot (as the seed's server did).
 */
const wire = (summary: DashboardSummary, snapshot: MarketSnapshot) => ({
  ...marketFields(summary),
  last_updated: DateTime.formatIso(snapshot.fetched_at)
})

describe("WebSocket /ws", () => {
  it.scopedLive("sends a welcome first, with the seven summary fields, seq, age, staleness and the seed's text", () =>
    Effect.gen(function*() {
      const first = makeSummary({ btc_price: 61_234.5, fear_greed_index: 12 })
      const server = yield* TestServer.start({ first: summaryView(first) })
      const client = yield* WsClient.connect(server.wsUrl)

      const welcome = yield* client.next()
      expect(welcome.message.type).toBe("welcome")
      const raw = JSON.parse(welcome.raw)
      expect(Object.keys(raw.data).sort()).toEqual(SUMMARY_FIELDS)
      expect(raw.data).toEqual(wire(first, yield* server.awaitSeq(1)))
      expect(raw.message).toBe("Connected to real-time dashboard updates")
      expect(raw.seq).toBe(1)
      expect(raw.stale).toBe(false)
      expect(raw.age_seconds).toBeGreaterThanOrEqual(0)
      expect(raw.age_seconds).toBeLessThan(5)
      expect(raw.timestamp).toMatch(ISO_UTC)
    }))

  it.scopedLive("marks a welcome older than FRESHNESS stale and refreshes once in the background for everyone", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: summaryView(makeSummary()), config: { FRESHNESS: "1 millis" } })
      yield* Effect.sleep("5 millis")
      const a = yield* WsClient.connect(server.wsUrl)
      const welcome = yield* a.next(isType("welcome"))
      expect(welcome.message.stale).toBe(true)
      yield* server.market.awaitCalls(2)
      // A second connection while that refresh is in flight does not start another fetch.
      const b = yield* WsClient.connect(server.wsUrl)
      yield* b.next(isType("welcome"))
      yield* b.sync()
      expect(yield* server.market.calls).toBe(2)

      const fresh = makeSummary({ btc_price: 70_000 })
      yield* server.market.succeed(summaryView(fresh))
      for (const client of [a, b]) {
        const update = yield* client.next(isType("dashboard_update"))
        expect(update.message.source).toBe("refresh")
        expect(update.message.seq).toBe(2)
        expect(JSON.parse(update.raw).data).toEqual(wire(fresh, yield* server.awaitSeq(2)))
      }
    }))

  it.scopedLive("before any summary sends an error with retry_after first, then the first summary as an update", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start()
      const client = yield* WsClient.connect(server.wsUrl)

      const first = yield* client.next()
      expect(first.message.type).toBe("error")
      if (first.message.type !== "error") return
      expect(first.message.retry_after).toBeGreaterThanOrEqual(1)
      expect(first.message.error.length).toBeGreaterThan(0)

      const summary = makeSummary({ rsi_14: 71.2 })
      yield* server.market.succeed(summaryView(summary))
      const update = yield* client.next()
      expect(update.message).toMatchObject({ type: "dashboard_update", source: "scheduled_update", seq: 1 })
      expect(JSON.parse(update.raw).data).toEqual(wire(summary, yield* server.awaitSeq(1)))
    }))

  it.scopedLive("after a failed attempt tells every client the real seconds until the next one", () =>
    Effect.gen(function*() {
      // INITIAL_RETRY_DELAY is 1 hour in the test defaults.
      const server = yield* TestServer.start()
      const early = yield* WsClient.connect(server.wsUrl)
      yield* early.next(isType("error"))

      yield* server.market.fail(makeUpstreamError(503))
      const broadcast = yield* early.next(isType("error"), { label: "the failure broadcast" })
      expect(broadcast.message.retry_after).toBe(3600)
      expect(broadcast.message.error).toContain("503")

      const late = yield* WsClient.connect(server.wsUrl)
      const greeting = yield* late.next()
      expect(greeting.message.type).toBe("error")
      if (greeting.message.type !== "error") return
      expect(greeting.message.retry_after).toBeGreaterThan(3590)
      expect(greeting.message.retry_after).toBeLessThanOrEqual(3600)
      expect(greeting.message.error).toContain("503")
    }))

  it.scopedLive("answers {\"type\":\"ping\"} and the bare text ping with a pong", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: summaryView(makeSummary()) })
      const client = yield* WsClient.connect(server.wsUrl)
      yield* client.next(isType("welcome"))

      yield* client.send(JSON.stringify({ type: "ping" }))
      const json = yield* client.next()
      expect(json.message.type).toBe("pong")
      expect(json.message.timestamp).toMatch(ISO_UTC)

      yield* client.send("ping")
      expect((yield* client.next()).message.type).toBe("pong")
    }))

  describe("refuses bad frames with an error and keeps the connection", () => {
    const cases: ReadonlyArray<readonly [string, string | Uint8Array, string]> = [
      ["malformed JSON", "{\"type\": ", "json"],
      ["an unknown type", JSON.stringify({ type: "unsubscribe" }), "unsubscribe"],
      ["a subscribe without a currency", JSON.stringify({ type: "subscribe" }), "subscribe needs a currency"],
      ["a binary frame", new Uint8Array([0x7b, 0x7d]), "binary"]
    ]
    for (const [name, frame, mentions] of cases) {
      it.scopedLive(name, () =>
        Effect.gen(function*() {
          const server = yield* TestServer.start({ first: summaryView(makeSummary()) })
          const client = yield* WsClient.connect(server.wsUrl)
          yield* client.next(isType("welcome"))

          yield* client.send(frame)
          const refused = yield* client.next()
          expect(refused.message.type).toBe("error")
          if (refused.message.type !== "error") return
          expect(refused.message.error.toLowerCase()).toContain(mentions)
          expect(refused.message.retry_after).toBeUndefined()

          yield* client.send("ping")
          expect((yield* client.next()).message.type).toBe("pong")
          expect(client.closeInfo()).toBeUndefined()
        }))
    }
  })

  it.scopedLive("closes a client that keeps sending garbage with 1008", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: summaryView(makeSummary()) })
      const client = yield* WsClient.connect(server.wsUrl)
      yield* client.next(isType("welcome"))

      for (let i = 0; i < 30; i++) yield* client.send(`garbage ${i}`)
      const closed = yield* client.closed()
      expect(closed.code).toBe(1008)
      // It was warned before being closed, and not answered for every frame it sent.
      const errors = client.frames().filter((f) => f.message.type === "error").length
      expect(errors).toBeGreaterThan(0)
      expect(errors).toBeLessThan(30)
    }))

  it.scopedLive("closes a client that floods valid pings with 1008", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: summaryView(makeSummary()) })
      const client = yield* WsClient.connect(server.wsUrl)
      yield* client.next(isType("welcome"))

      for (let i = 0; i < 200; i++) yield* client.send("ping")
      expect((yield* client.closed()).code).toBe(1008)
      expect(client.frames().filter((f) => f.message.type === "pong").length).toBeLessThan(200)
    }))

  describe("MAX_MESSAGE_BYTES=1024", () => {
    const config = { MAX_MESSAGE_BYTES: "1024" }
    /** A ping of exactly `bytes` bytes: extra fields are allowed, so the server answers it. */
    const paddedPing = (bytes: number) => {
      const empty = JSON.stringify({ type: "ping", pad: "" })
      return JSON.stringify({ type: "ping", pad: "x".repeat(bytes - empty.length) })
    }

    it.scopedLive("accepts a frame of the limit and one just under it", () =>
      Effect.gen(function*() {
        const server = yield* TestServer.start({ first: summaryView(makeSummary()), config })
        const client = yield* WsClient.connect(server.wsUrl)
        yield* client.next(isType("welcome"))
        for (const bytes of [1023, 1024]) {
          const frame = paddedPing(bytes)
          expect(Buffer.byteLength(frame)).toBe(bytes)
          yield* client.send(frame)
          expect((yield* client.next()).message.type).toBe("pong")
        }
        expect(client.closeInfo()).toBeUndefined()
      }))

    it.scopedLive("closes with 1009 on a frame over the limit", () =>
      Effect.gen(function*() {
        const server = yield* TestServer.start({ first: summaryView(makeSummary()), config })
        const client = yield* WsClient.connect(server.wsUrl)
        yield* client.next(isType("welcome"))
        yield* client.send(paddedPing(1025))
        expect((yield* client.closed()).code).toBe(1009)
        expect(client.frames().some((f) => f.message.type === "pong")).toBe(false)
      }))
  })

  it.scopedLive("answers request_update to the asking client only, from the cache", () =>
    Effect.gen(function*() {
      const summary = makeSummary({ volume_24h: 91_000_000_000 })
      const server = yield* TestServer.start({ first: summaryView(summary) })
      const asker = yield* WsClient.connect(server.wsUrl)
      const bystander = yield* WsClient.connect(server.wsUrl)
      yield* asker.next(isType("welcome"))
      yield* bystander.next(isType("welcome"))

      yield* asker.send(JSON.stringify({ type: "request_update" }))
      const answer = yield* asker.next()
      expect(answer.message).toMatchObject({ type: "dashboard_update", source: "request_update", seq: 1 })
      expect(JSON.parse(answer.raw).data).toEqual(wire(summary, yield* server.awaitSeq(1)))
      expect(yield* bystander.sync()).toEqual([])
      expect(yield* server.market.calls).toBe(1)
    }))

  it.scopedLive("refuses excess request_update with an error about rate limiting and keeps the connection", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: summaryView(makeSummary()) })
      const client = yield* WsClient.connect(server.wsUrl)
      yield* client.next(isType("welcome"))

      for (let i = 0; i <= REQUEST_RULE.capacity; i++) yield* client.send(JSON.stringify({ type: "request_update" }))
      const replies = [...(yield* client.sync())].map((f) => f.message)
      expect(replies.map((m) => m.type)).toEqual([
        ...Array.from({ length: REQUEST_RULE.capacity }, () => "dashboard_update"),
        "error"
      ])
      const refused = replies[REQUEST_RULE.capacity]
      expect(refused?.type === "error" && refused.error).toMatch(/rate limit/i)
      expect(refused?.type === "error" && refused.retry_after).toBeGreaterThanOrEqual(1)
      expect(client.closeInfo()).toBeUndefined()
    }))

  it.scopedLive("delivers each published update once to every client, with increasing seq and its source", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: summaryView(makeSummary()), config: { ADMIN_TOKEN } })
      const clients = [
        yield* WsClient.connect(server.wsUrl),
        yield* WsClient.connect(server.wsUrl),
        yield* WsClient.connect(server.wsUrl)
      ]
      for (const client of clients) yield* client.next(isType("welcome"))

      const second = makeSummary({ btc_price: 65_000 })
      const third = makeSummary({ btc_price: 66_000 })
      const expected: Array<ReturnType<typeof wire>> = []
      for (const summary of [second, third]) {
        yield* server.market.succeed(summaryView(summary))
        expect((yield* refresh(server)).status).toBe(200)
        expected.push(wire(summary, Option.getOrThrow(server.state.current())))
      }

      for (const client of clients) {
        const updates = yield* client.sync()
        expect(updates.map((f) => [f.message.type, "seq" in f.message && f.message.seq])).toEqual([
          ["dashboard_update", 2],
          ["dashboard_update", 3]
        ])
        expect(updates.map((f) => f.message.type === "dashboard_update" && f.message.source)).toEqual([
          "force_update",
          "force_update"
        ])
        expect(updates.map((f) => JSON.parse(f.raw).data)).toEqual(expected)
      }
    }))

  it.scopedLive("closes every socket with 1001 when the server scope closes, and accepts no new ones", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const server = yield* TestServer.start({ first: summaryView(makeSummary()) }).pipe(Scope.extend(scope))
      const clients = [yield* WsClient.connect(server.wsUrl), yield* WsClient.connect(server.wsUrl)]
      for (const client of clients) yield* client.next(isType("welcome"))

      yield* Scope.close(scope, Exit.void)
      for (const client of clients) expect((yield* client.closed()).code).toBe(1001)
      const again = yield* Effect.either(WsClient.connect(server.wsUrl))
      expect(again._tag).toBe("Left")
    }))

  it.scopedLive("answers a plain GET /ws with 426", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: summaryView(makeSummary()) })
      expect((yield* server.fetch("/ws")).status).toBe(426)
    }))
})

describe("admission to /ws", () => {
  it.scopedLive("ALLOWED_ORIGINS admits listed browser origins and programs without one, refuses others with 403", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({
        first: summaryView(makeSummary()),
        config: { ALLOWED_ORIGINS: "https://dash.example, https://ops.example" }
      })
      for (const origin of ["https://dash.example", "https://ops.example"]) {
        const client = yield* WsClient.connect(server.wsUrl, { socket: { headers: { origin } } })
        yield* client.next(isType("welcome"))
      }
      const program = yield* WsClient.connect(server.wsUrl)
      yield* program.next(isType("welcome"))

      const refused = yield* Effect.either(WsClient.connect(server.wsUrl, { socket: { headers: { origin: "https://evil.example" } } }))
      expect(refused._tag).toBe("Left")
      const response = yield* server.fetch("/ws", { headers: { origin: "https://evil.example" } })
      expect(response.status).toBe(403)
      expect(server.server.connections()).toBe(3)
    }))

  it.scopedLive("MAX_CONNECTIONS refuses one more socket with 503 until one leaves", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: summaryView(makeSummary()), config: { MAX_CONNECTIONS: "2" } })
      const first = yield* WsClient.connect(server.wsUrl)
      const second = yield* WsClient.connect(server.wsUrl)
      for (const client of [first, second]) yield* client.next(isType("welcome"))

      expect((yield* Effect.either(WsClient.connect(server.wsUrl)))._tag).toBe("Left")
      expect((yield* server.fetch("/ws")).status).toBe(503)

      yield* first.close()
      yield* Effect.sync(() => server.server.connections()).pipe(pollUntil((n) => n === 1))
      const third = yield* WsClient.connect(server.wsUrl)
      yield* third.next(isType("welcome"))
    }))

  it.scopedLive("MAX_CONNECTIONS_PER_IP refuses one more socket from the same address with 429 until one leaves", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: summaryView(makeSummary()), config: { MAX_CONNECTIONS_PER_IP: "1" } })
      const first = yield* WsClient.connect(server.wsUrl)
      yield* first.next(isType("welcome"))

      expect((yield* Effect.either(WsClient.connect(server.wsUrl)))._tag).toBe("Left")
      expect((yield* server.fetch("/ws")).status).toBe(429)

      yield* first.close()
      yield* Effect.sync(() => server.server.connections()).pipe(pollUntil((n) => n === 0))
      const again = yield* WsClient.connect(server.wsUrl)
      yield* again.next(isType("welcome"))
    }))

  it.scopedLive("with TLS_CERT and TLS_KEY serves https and wss", () =>
    Effect.gen(function*() {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => mkdtempSync(join(tmpdir(), "dashcast-tls-"))),
        (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
      )
      const cert = join(dir, "cert.pem")
      const key = join(dir, "key.pem")
      const openssl = Bun.spawnSync([
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
        "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"
      ], { stdout: "ignore", stderr: "pipe" })
      expect(openssl.exitCode, openssl.stderr.toString()).toBe(0)

      const server = yield* TestServer.start({ first: summaryView(makeSummary()), config: { TLS_CERT: cert, TLS_KEY: key } })
      expect(server.url.protocol).toBe("https:")
      expect(server.wsUrl).toMatch(/^wss:/)
      const health = yield* server.fetch("/healthz", { tls: { rejectUnauthorized: false } })
      expect(health.status).toBe(200)
      const client = yield* WsClient.connect(server.wsUrl, { socket: { tls: { rejectUnauthorized: false } } })
      yield* client.next(isType("welcome"))
      yield* client.send("ping")
      expect((yield* client.next()).message.type).toBe("pong")
    }), { skip: Bun.which("openssl") === null })
})

describe("HTTP", () => {
  it.scopedLive("/healthz is 200 at once; /readyz and /api/dashboard are 503 until the first summary, then 200", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ config: { UPDATE_INTERVAL: "10 minutes" } })
      expect((yield* server.fetch("/healthz")).status).toBe(200)
      expect((yield* server.fetch("/readyz")).status).toBe(503)
      const none = yield* server.fetch("/api/dashboard")
      expect(none.status).toBe(503)
      expect(none.headers.get("content-type")).toContain("application/json")
      expect(typeof (yield* readJson(none)).error).toBe("string")

      const summary = makeSummary({ market_cap: 2_400_000_000_000 })
      yield* server.market.succeed(summaryView(summary))
      const snapshot = yield* server.awaitSeq(1)
      expect((yield* server.fetch("/readyz")).status).toBe(200)
      expect((yield* server.fetch("/healthz")).status).toBe(200)

      // next_update_at is known once the schedule has decided, just after the summary is published.
      const body = yield* server.fetch("/api/dashboard").pipe(
        Effect.tap((response) => Effect.sync(() => expect(response.status).toBe(200))),
        Effect.flatMap(readJson),
        pollUntil((b) => b.next_update_at !== null)
      )
      expect(body.data).toEqual(wire(summary, snapshot))
      expect(body.seq).toBe(1)
      expect(body.stale).toBe(false)
      expect(body.age_seconds).toBeGreaterThanOrEqual(0)
      expect(body.next_update_at).toMatch(ISO_UTC)
      const untilNext = Date.parse(String(body.next_update_at)) - Date.now()
      expect(untilNext).toBeGreaterThan(9 * 60_000)
      expect(untilNext).toBeLessThanOrEqual(10 * 60_000)
    }))

  describe("POST /api/dashboard/refresh", () => {
    it.scopedLive("is 404 when no ADMIN_TOKEN is configured, whatever the request says", () =>
      Effect.gen(function*() {
        const server = yield* TestServer.start({ first: summaryView(makeSummary()) })
        expect((yield* refresh(server, {})).status).toBe(404)
        expect((yield* refresh(server, bearer(ADMIN_TOKEN))).status).toBe(404)
        expect(yield* server.market.calls).toBe(1)
      }))

    it.scopedLive("is 401 without a token or with a wrong one, and does not fetch", () =>
      Effect.gen(function*() {
        const server = yield* TestServer.start({ first: summaryView(makeSummary()), config: { ADMIN_TOKEN } })
        for (
          const headers of [
            {},
            bearer("wrong"),
            bearer(`${ADMIN_TOKEN}x`),
            bearer(ADMIN_TOKEN.slice(0, -1)),
            { authorization: ADMIN_TOKEN },
            { authorization: `Basic ${ADMIN_TOKEN}` }
          ]
        ) {
          const response = yield* refresh(server, headers)
          expect(response.status, JSON.stringify(headers)).toBe(401)
          expect(typeof (yield* readJson(response)).error).toBe("string")
        }
        expect(yield* server.market.calls).toBe(1)
      }))

    it.scopedLive("with the right token fetches, answers 200 with the summary and broadcasts it as force_update", () =>
      Effect.gen(function*() {
        const server = yield* TestServer.start({ first: summaryView(makeSummary()), config: { ADMIN_TOKEN } })
        const client = yield* WsClient.connect(server.wsUrl)
        yield* client.next(isType("welcome"))

        const forced = makeSummary({ btc_change_24h: 3.5 })
        yield* server.market.succeed(summaryView(forced))
        const response = yield* refresh(server)
        expect(response.status).toBe(200)
        const body = yield* readJson(response)
        const snapshot = yield* server.awaitSeq(2)
        expect(body.data).toEqual(wire(forced, snapshot))
        expect(body.seq).toBe(2)

        const update = yield* client.next(isType("dashboard_update"))
        expect(update.message).toMatchObject({ source: "force_update", seq: 2 })
        expect(JSON.parse(update.raw).data).toEqual(wire(forced, snapshot))
      }))

    it.scopedLive("is 429 with Retry-After inside MIN_FETCH_GAP, and 200 once that time has passed", () =>
      Effect.gen(function*() {
        const server = yield* TestServer.start({ first: summaryView(makeSummary()), config: { ADMIN_TOKEN, MIN_FETCH_GAP: "2 seconds" } })
        // The scheduled fetch that produced the first summary has just called upstream.
        const tooSoon = yield* refresh(server)
        expect(tooSoon.status).toBe(429)
        expect(typeof (yield* readJson(tooSoon)).error).toBe("string")
        const retryAfter = Number(tooSoon.headers.get("retry-after"))
        expect(retryAfter).toBeGreaterThanOrEqual(1)
        expect(retryAfter).toBeLessThanOrEqual(2)

        yield* Effect.sleep(`${retryAfter} seconds`)
        yield* server.market.succeed(summaryView(makeSummary({ btc_price: 65_500 })))
        expect((yield* refresh(server)).status).toBe(200)

        const again = yield* refresh(server)
        expect(again.status).toBe(429)
        expect(Number(again.headers.get("retry-after"))).toBeGreaterThanOrEqual(1)
        expect(yield* server.market.calls).toBe(2)
      }))

    it.scopedLive("answers a partial round with 200, what went stale and an error naming the failed calls", () =>
      Effect.gen(function*() {
        const server = yield* TestServer.start({ first: summaryView(makeSummary()), config: { ADMIN_TOKEN } })
        const summary = makeSummary({ btc_price: 66_600 })
        yield* server.market.partial(summaryView(summary, { stale: { fear_greed: true } }), [
          makeUpstreamError(500, "fear_greed")
        ])
        const response = yield* refresh(server)
        expect(response.status).toBe(200)
        const body = yield* readJson(response)
        expect(body).toMatchObject({ currency: "usd", seq: 2, stale_fields: ["fear_greed_index"], stale_paths: ["market.fear_greed_index"] })
        expect(body.data).toEqual(wire(summary, yield* server.awaitSeq(2)))
        expect(body.fetched_at).toMatch(ISO_UTC)
        expect(String(body.error)).toContain("fear_greed: HTTP 500")
      }))

    it.scopedLive("is 502 with a JSON error when upstream fails, and the last summary stays served", () =>
      Effect.gen(function*() {
        const first = makeSummary()
        const server = yield* TestServer.start({ first: summaryView(first), config: { ADMIN_TOKEN } })
        const client = yield* WsClient.connect(server.wsUrl)
        yield* client.next(isType("welcome"))

        yield* server.market.fail(makeUpstreamError(500))
        const response = yield* refresh(server)
        expect(response.status).toBe(502)
        expect(response.headers.get("content-type")).toContain("application/json")
        expect(String((yield* readJson(response)).error)).toContain("500")

        expect((yield* client.sync()).filter((f) => f.message.type === "dashboard_update")).toEqual([])
        const current = yield* readJson(yield* server.fetch("/api/dashboard"))
        expect(current.seq).toBe(1)
        expect(current.data).toEqual(wire(first, yield* server.awaitSeq(1)))
        expect(Option.map(server.state.current(), (s) => s.seq)).toEqual(Option.some(1))
      }))
  })
})
