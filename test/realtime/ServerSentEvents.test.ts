/**
 * `GET /api/stream` on the real stack (test/support/TestServer.ts): the same frames as the
 * WebSocket of the same currency, as Server-Sent Events; `Last-Event-ID`; one connection budget
 * with the WebSockets; the metrics' `transport` label; shutdown.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Schedule, Scope } from "effect"
import type { MarketView } from "../../src/market/Watchlist.js"
import { topicOf } from "../../src/realtime/Broadcaster.js"
import * as SseClient from "../support/SseClient.js"
import * as TestServer from "../support/TestServer.js"
import { makeUpstreamError, watchlistView } from "../support/TestServer.js"
import * as WsClient from "../support/WsClient.js"
import { isType } from "../support/WsClient.js"

const ADMIN_TOKEN = "stream-admin-token"
const ASSETS = ["bitcoin", "ethereum"]
const CURRENCIES = ["usd", "eur"]
const config = { ASSETS: ASSETS.join(","), CURRENCIES: CURRENCIES.join(","), ADMIN_TOKEN }
const round = (n: number) => watchlistView(ASSETS, CURRENCIES, { scale: 1 + n / 100 })

const refresh = (server: TestServer.TestServer) =>
  server.fetch("/api/dashboard/refresh", { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })

/** A force update that publishes `view`. */
const publish = (server: TestServer.TestServer, view: MarketView) =>
  Effect.gen(function*() {
    yield* server.market.succeed(view)
    expect((yield* refresh(server)).status).toBe(200)
  })

const streamUrl = (server: TestServer.TestServer, query = "") => new URL(`/api/stream${query}`, server.url)

/** The members of a frame that do not depend on when it was sent. */
const timeless = (frame: string) => {
  const { timestamp: _t, age_seconds: _a, ...rest } = JSON.parse(frame) as Record<string, unknown>
  return rest
}

const pollUntil = <A>(read: Effect.Effect<A>, done: (a: A) => boolean, what: string) =>
  read.pipe(
    Effect.repeat({ until: done, schedule: Schedule.spaced("10 millis") }),
    Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error(`${what}: not within 5 seconds`) }),
    Effect.zipRight(read)
  )

/** Sample values by series, e.g. `dashcast_connections_active{transport="sse"}`. */
const scrape = (server: TestServer.TestServer) =>
  Effect.flatMap(server.fetch("/metrics"), (r) => Effect.promise(() => r.text())).pipe(
    Effect.map((text) =>
      new Map(
        text.split("\n").filter((l) => l !== "" && !l.startsWith("#")).map((l) => [l.slice(0, l.lastIndexOf(" ")), Number(l.slice(l.lastIndexOf(" ") + 1))] as const)
      )
    )
  )
const series = (scrape: ReadonlyMap<string, number>, name: string) => {
  const value = scrape.get(name)
  if (value === undefined) throw new Error(`no series ${name}`)
  return value
}

describe("GET /api/stream", () => {
  it.scopedLive("answers an event stream whose first event is the currency's welcome, as the WebSocket's, with id = seq and a retry hint", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: round(0), config })
      const ws = yield* WsClient.connect(`${server.wsUrl}?currency=eur`)
      const wsWelcome = yield* ws.next(isType("welcome"))
      const sse = yield* SseClient.open(streamUrl(server, "?currency=eur"))
      expect(sse.status).toBe(200)
      expect(sse.headers["content-type"]).toBe("text/event-stream")
      expect(sse.headers["cache-control"]).toBe("no-store")
      expect(sse.headers["x-accel-buffering"]).toBe("no")
      expect(sse.headers["transfer-encoding"]).toBe("chunked")

      const welcome = yield* sse.next()
      expect(welcome.event).toBe("welcome")
      expect(welcome.id).toBe("1")
      expect(welcome.message).toMatchObject({ type: "welcome", currency: "eur", seq: 1, stale: false })
      expect(timeless(welcome.data)).toEqual(timeless(wsWelcome.raw))
      const [retry] = sse.retries()
      expect(retry).toBeGreaterThanOrEqual(3_000)
      expect(retry).toBeLessThan(10_000)
      // Without `currency`, the first of CURRENCIES.
      const plain = yield* SseClient.open(streamUrl(server))
      expect((yield* plain.next()).message).toMatchObject({ type: "welcome", currency: "usd" })
    }))

  it.scopedLive("carries every frame published on a currency's topic, once, in order, as the same text the WebSockets get", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: round(0), config: { ...config, MAX_CONSECUTIVE_FAILURES: "5" } })
      const ws = yield* WsClient.connect(`${server.wsUrl}?currency=eur`)
      yield* ws.next(isType("welcome"))
      const eur = yield* SseClient.open(streamUrl(server, "?currency=eur"))
      const usd = yield* SseClient.open(streamUrl(server, "?currency=usd"))
      for (const client of [eur, usd]) yield* client.next(SseClient.isType("welcome"))
      const mark = server.published().length

      yield* publish(server, round(1))
      yield* publish(server, round(2))
      // A failed round: every client is told, on every topic.
      yield* server.market.fail(makeUpstreamError(500))
      expect((yield* refresh(server)).status).toBe(502)
      yield* ws.next(isType("error"), { label: "the failure broadcast" })
      yield* publish(server, round(3))
      yield* ws.sync()

      const frames = (topic: string) => server.published().slice(mark).filter((p) => p.topic === topic).map((p) => p.frame)
      const eurFrames = frames(topicOf("eur"))
      expect(eurFrames.map((f) => (JSON.parse(f) as { type: string }).type)).toEqual(["dashboard_update", "dashboard_update", "error", "dashboard_update"])
      const eurEvents = yield* eur.until((events) => events.length === 1 + eurFrames.length, "every eur frame")
      const usdEvents = yield* usd.until((events) => events.length === 1 + frames(topicOf("usd")).length, "every usd frame")
      expect(eurEvents.slice(1).map((e) => e.data)).toEqual(eurFrames)
      expect(usdEvents.slice(1).map((e) => e.data)).toEqual(frames(topicOf("usd")))
      // The WebSocket of that currency got the very same strings.
      expect(ws.frames().slice(1).filter((f) => f.message.type !== "pong").map((f) => f.raw)).toEqual(eurFrames)
      for (const event of eurEvents.slice(1)) {
        const frame = JSON.parse(event.data) as { type: string; seq?: number; currency?: string }
        expect(event.event).toBe(frame.type)
        expect(event.id).toBe(frame.seq === undefined ? undefined : String(frame.seq))
        if (frame.currency !== undefined) expect(frame.currency).toBe("eur")
      }
      expect(eurEvents.slice(1).map((e) => e.id)).toEqual(["2", "3", undefined, "4"])
    }))

  it.scopedLive("starts with an error with retry_after before any snapshot, then the first snapshot as an update", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ config })
      const sse = yield* SseClient.open(streamUrl(server))
      const first = yield* sse.next()
      expect(first.event).toBe("error")
      expect(first.id).toBeUndefined()
      expect(first.message.type === "error" && first.message.retry_after).toBeGreaterThanOrEqual(1)
      yield* server.market.succeed(round(0))
      const update = yield* sse.next(SseClient.isType("dashboard_update"))
      expect(update.id).toBe("1")
      expect(update.message).toMatchObject({ currency: "usd", seq: 1 })
    }))

  it.scopedLive("refuses an unknown currency with 400 and anything but GET with 405, as JSON", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: round(0), config })
      const unknown = yield* server.fetch("/api/stream?currency=xyz")
      expect(unknown.status).toBe(400)
      expect((yield* Effect.promise(() => unknown.json() as Promise<{ error: string }>)).error).toMatch(/unknown currency "xyz"; this server has usd, eur/)
      const post = yield* server.fetch("/api/stream", { method: "POST" })
      expect(post.status).toBe(405)
      expect(post.headers.get("allow")).toBe("GET")
      expect(server.server.streams()).toBe(0)
    }))

  it.scopedLive("resumes a client whose Last-Event-ID is older with the latest snapshot as a dashboard_update; others get the welcome", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: round(0), config })
      yield* publish(server, round(1))
      yield* publish(server, round(2))
      const behind = yield* SseClient.open(streamUrl(server, "?currency=eur"), { headers: { "Last-Event-ID": "1" } })
      const caughtUp = yield* behind.next()
      expect(caughtUp.event).toBe("dashboard_update")
      expect(caughtUp.id).toBe("3")
      expect(caughtUp.message).toMatchObject({ type: "dashboard_update", currency: "eur", seq: 3, source: "request_update" })
      const ws = yield* WsClient.connect(`${server.wsUrl}?currency=eur`)
      const wsWelcome = yield* ws.next(isType("welcome"))
      const { type: _u, source: _s, ...updateMembers } = timeless(caughtUp.data)
      const { type: _w, message: _m, stale: _st, ...welcomeMembers } = timeless(wsWelcome.raw)
      expect(updateMembers).toEqual(welcomeMembers)

      for (const lastEventId of ["3", "99", "not-a-seq", "-1", ""]) {
        const client = yield* SseClient.open(streamUrl(server, "?currency=eur"), { headers: { "Last-Event-ID": lastEventId } })
        const first = yield* client.next()
        expect(first.event, `Last-Event-ID: ${lastEventId}`).toBe("welcome")
        expect(first.id).toBe("3")
      }
      // Then the stream goes on like any other.
      yield* publish(server, round(3))
      expect((yield* behind.next()).id).toBe("4")
    }))

  it.scopedLive("ends every stream when the server shuts down, and counts them by transport", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const server = yield* TestServer.start({ first: round(0), config }).pipe(Scope.extend(scope))
      const before = yield* scrape(server)
      const streams = [yield* SseClient.open(streamUrl(server)), yield* SseClient.open(streamUrl(server, "?currency=eur"))]
      const gone = yield* SseClient.open(streamUrl(server))
      const ws = yield* WsClient.connect(server.wsUrl)
      for (const s of [...streams, gone]) yield* s.next()
      yield* ws.next()
      yield* gone.close
      yield* pollUntil(Effect.sync(() => server.server.streams()), (n) => n === 2, "the closed stream leaves")

      const during = yield* scrape(server)
      const delta = (after: ReadonlyMap<string, number>, name: string) => series(after, name) - series(before, name)
      expect(delta(during, "dashcast_connections_opened_total{transport=\"sse\"}")).toBe(3)
      expect(delta(during, "dashcast_connections_active{transport=\"sse\"}")).toBe(2)
      expect(delta(during, "dashcast_connections_active{transport=\"websocket\"}")).toBe(1)
      expect(delta(during, "dashcast_connections_closed_total{transport=\"sse\",reason=\"normal\"}")).toBe(1)
      expect(delta(during, "dashcast_sse_sent_bytes_total")).toBeGreaterThan(3 * 500)

      // A broadcast counts every recipient, whatever its transport.
      yield* publish(server, round(1))
      for (const s of streams) yield* s.next(SseClient.isType("dashboard_update"))
      const published = yield* scrape(server)
      expect(delta(published, "dashcast_broadcast_recipients_sum")).toBe(3)

      yield* Scope.close(scope, Exit.void)
      for (const s of streams) yield* s.ended()
      expect((yield* ws.closed()).code).toBe(1001)
    }))
})

describe("one connection budget for WebSockets and event streams", () => {
  it.scopedLive("MAX_CONNECTIONS counts both: one more of either is refused with 503 until one leaves", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: round(0), config: { ...config, MAX_CONNECTIONS: "2" } })
      const ws = yield* WsClient.connect(server.wsUrl)
      yield* ws.next()
      const sse = yield* SseClient.open(streamUrl(server))
      yield* sse.next()

      const refusedStream = yield* SseClient.open(streamUrl(server))
      yield* refusedStream.ended()
      expect(refusedStream.status).toBe(503)
      expect(JSON.parse(refusedStream.body())).toEqual({ error: "server is at its connection limit" })
      expect((yield* Effect.either(WsClient.connect(server.wsUrl)))._tag).toBe("Left")

      yield* sse.close
      yield* pollUntil(Effect.sync(() => server.server.streams()), (n) => n === 0, "the stream leaves")
      const again = yield* WsClient.connect(server.wsUrl)
      yield* again.next(isType("welcome"))
    }))

  it.scopedLive("MAX_CONNECTIONS_PER_IP counts both from one address: 429 until one leaves", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: round(0), config: { ...config, MAX_CONNECTIONS_PER_IP: "1" } })
      const sse = yield* SseClient.open(streamUrl(server))
      yield* sse.next()
      expect((yield* server.fetch("/ws")).status).toBe(429)
      const second = yield* SseClient.open(streamUrl(server))
      yield* second.ended()
      expect(second.status).toBe(429)

      yield* sse.close
      yield* pollUntil(Effect.sync(() => server.server.streams()), (n) => n === 0, "the stream leaves")
      const ws = yield* WsClient.connect(server.wsUrl)
      yield* ws.next(isType("welcome"))
      const refused = yield* SseClient.open(streamUrl(server))
      yield* refused.ended()
      expect(refused.status).toBe(429)
    }))

  it.scopedLive("ALLOWED_ORIGINS: a listed origin may read the stream cross-origin, another gets 403, a program without Origin is let in", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: round(0), config: { ...config, ALLOWED_ORIGINS: "https://dash.example" } })
      const allowed = yield* SseClient.open(streamUrl(server), { headers: { Origin: "https://dash.example" } })
      yield* allowed.next(SseClient.isType("welcome"))
      expect(allowed.headers["access-control-allow-origin"]).toBe("https://dash.example")
      expect(allowed.headers["vary"]).toBe("Origin")

      const evil = yield* SseClient.open(streamUrl(server), { headers: { Origin: "https://evil.example" } })
      yield* evil.ended()
      expect(evil.status).toBe(403)
      expect(JSON.parse(evil.body())).toEqual({ error: "origin https://evil.example is not allowed" })

      const program = yield* SseClient.open(streamUrl(server))
      yield* program.next(SseClient.isType("welcome"))
      expect(program.headers["access-control-allow-origin"]).toBeUndefined()
      expect(server.server.streams()).toBe(2)
    }))
})
