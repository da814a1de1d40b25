/**
 * The client SDK without a network or real time: the pure timing rules, then the client itself
 * over a scripted fake WebSocket, run under `TestClock` with a seeded `Random`, so every delay is
 * known exactly and a test of minutes of backoff takes milliseconds.
 */
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect, Fiber, Random, Schedule, TestClock } from "effect"
import { DashboardSummary } from "../../src/market/DashboardSummary.js"
import {
  type AlertEvent,
  backoffDelay,
  classifySeq,
  connect,
  dashboardSocketUrl,
  dashboardStreamUrl,
  type DashcastStatus,
  type EventSourceConstructor,
  type EventSourceLike,
  heartbeatStep,
  makeDashcastClient,
  type MarketEvent,
  type PageSignals,
  type SummaryEvent,
  type WebSocketConstructor,
  type WebSocketLike
} from "../../src/web/DashcastClient.js"
import * as TestServer from "../support/TestServer.js"
import { makeSummary, summaryView, watchlistView } from "../support/TestServer.js"

// The global WebSocket (browser, Bun, Node 22) must fit the option's type as it is.
const _globalFits: WebSocketConstructor = WebSocket
void _globalFits

const POLICY = { initialDelay: 1_000, maxDelay: 30_000 }
const SEED = 20_250_820

// ---------------------------------------------------------------------------------------------
// A scripted server side: each socket the client opens is a FakeSocket the test drives.

class FakeSocket implements WebSocketLike {
  readyState = 0
  readonly sent: Array<string> = []
  closedWith: { readonly code: number | undefined; readonly reason: string | undefined } | undefined
  private readonly listeners = new Map<string, Array<(event: unknown) => void>>()

  constructor(readonly url: string) {}

  addEventListener(type: "open" | "error", listener: () => void): void
  addEventListener(type: "message", listener: (event: { readonly data: unknown }) => void): void
  addEventListener(type: "close", listener: (event: { readonly code: number; readonly reason: string }) => void): void
  addEventListener(type: string, listener: (event: never) => void): void {
    const list = this.listeners.get(type) ?? []
    list.push(listener as (event: unknown) => void)
    this.listeners.set(type, list)
  }

  send(data: string) {
    this.sent.push(data)
  }

  close(code?: number, reason?: string) {
    if (this.readyState === 3) return
    this.readyState = 3
    this.closedWith = { code, reason }
  }

  private emit(type: string, event?: unknown) {
    for (const listener of this.listeners.get(type) ?? []) listener(event)
  }

  // The server's side of the socket.
  accept() {
    this.readyState = 1
    this.emit("open")
  }
  push(message: unknown) {
    this.emit("message", { data: typeof message === "string" ? message : JSON.stringify(message) })
  }
  drop(code = 1006, reason = "") {
    this.readyState = 3
    this.emit("error")
    this.emit("close", { code, reason })
  }
  refuse() {
    this.readyState = 3
    this.emit("error")
    this.emit("close", { code: 1006, reason: "" })
  }
  /** Types of the frames the client sent. */
  sentTypes(): Array<string> {
    return this.sent.map((s) => (JSON.parse(s) as { type: string }).type)
  }
}

const fakeSockets = () => {
  const sockets: Array<FakeSocket> = []
  const Ctor: WebSocketConstructor = class extends FakeSocket {
    constructor(url: string) {
      super(url)
      sockets.push(this)
    }
  }
  return { sockets, Ctor }
}

/** A scripted event stream: the server's side of one `EventSource` the client opens. */
class FakeSource implements EventSourceLike {
  readyState = 0
  closed = false
  private readonly listeners = new Map<string, Array<(event: { readonly data?: unknown }) => void>>()

  constructor(readonly url: string) {}

  addEventListener(type: string, listener: (event: { readonly data?: unknown }) => void): void {
    const list = this.listeners.get(type) ?? []
    list.push(listener)
    this.listeners.set(type, list)
  }

  close() {
    this.readyState = 2
    this.closed = true
  }

  private emit(type: string, event: { readonly data?: unknown }) {
    for (const listener of this.listeners.get(type) ?? []) listener(event)
  }

  // The server's side.
  accept() {
    this.readyState = 1
    this.emit("open", {})
  }
  /** One event, named after the frame's type as the server names it. */
  push(message: { readonly type: string; readonly [member: string]: unknown }) {
    this.emit(message.type, { data: JSON.stringify(message) })
  }
  heartbeat() {
    this.emit(":", {})
  }
  /** The connection fails (refused, or ended): an `error` event without data. */
  fail() {
    this.readyState = 2
    this.emit("error", {})
  }
  /** Names of the events the client listens to. */
  listened(): Array<string> {
    return [...this.listeners.keys()]
  }
}

const fakeSources = () => {
  const sources: Array<FakeSource> = []
  const Ctor: EventSourceConstructor = class extends FakeSource {
    constructor(url: string) {
      super(url)
      sources.push(this)
    }
  }
  return { sources, Ctor }
}

const fakePage = () => {
  const state = { hidden: false, offline: false }
  const listeners = new Set<() => void>()
  const signals: PageSignals = {
    hidden: () => state.hidden,
    offline: () => state.offline,
    subscribe: (onChange) => {
      listeners.add(onChange)
      return () => listeners.delete(onChange)
    }
  }
  const set = (next: Partial<typeof state>) => {
    Object.assign(state, next)
    for (const listener of listeners) listener()
  }
  return { signals, set, listeners }
}

const wireSummary = (price: number, at = "2025-08-20T12:00:00.000Z") => ({
  btc_price: price,
  btc_change_24h: -1.25,
  market_cap: 2.3e12,
  volume_24h: 8.5e10,
  fear_greed_index: 61,
  rsi_14: 55.3,
  last_updated: at
})
const wireAsset = (id: string, symbol: string, price: number, rsi: number | null = 48.5) => ({
  id,
  symbol,
  name: id[0]!.toUpperCase() + id.slice(1),
  price,
  change_24h: -1.25,
  market_cap: price * 1e7,
  volume_24h: null,
  rsi_14: rsi,
  last_updated: "2025-08-20T11:59:30.000Z"
})
const wireMarket = { total_market_cap: 2.3e12, total_volume: 8.5e10, fear_greed_index: 61, fear_greed_label: "Greed" }
/** What every welcome and update of `currency` carries: bitcoin (and the seed's summary of it) and ethereum. */
const view = (price: number, currency = "usd") => ({
  currency,
  assets: [wireAsset("bitcoin", "btc", price, 55.3), wireAsset("ethereum", "eth", price / 20)],
  market: wireMarket,
  data: wireSummary(price)
})
const welcome = (seq: number, price: number, extra: Record<string, unknown> = {}) => ({
  type: "welcome",
  ...view(price),
  timestamp: "2025-08-20T12:00:00.000Z",
  message: "Connected to real-time dashboard updates",
  seq,
  age_seconds: 12.5,
  stale: false,
  ...extra
})
const update = (seq: number, price: number, extra: Record<string, unknown> = {}) => ({
  type: "dashboard_update",
  ...view(price),
  timestamp: "2025-08-20T12:00:00.000Z",
  source: "scheduled_update",
  seq,
  ...extra
})
/** Lets the client's fiber handle whatever the fake sockets and page have signalled. */
const settle = Effect.repeatN(Effect.yieldNow(), 20)
/** Moves the test clock and lets the client react. */
const advance = (millis: number) => Effect.zipRight(TestClock.adjust(millis), settle)

/** The client under test: its fiber runs with a seeded Random; everything it reports is recorded. */
const start = (options: Parameters<typeof makeDashcastClient>[1] = {}) =>
  Effect.gen(function*() {
    const { Ctor, sockets } = fakeSockets()
    const page = fakePage()
    const sources = fakeSources()
    // WebSocket only unless a test asks for the fallback: these tests are about the socket.
    const { client, run } = makeDashcastClient("ws://dashcast.test/ws", {
      WebSocket: Ctor,
      EventSource: sources.Ctor,
      signals: page.signals,
      transports: "websocket",
      ...options
    })
    const summaries: Array<SummaryEvent> = []
    const markets: Array<MarketEvent> = []
    const statuses: Array<DashcastStatus> = []
    client.onSummary((event) => summaries.push(event))
    client.onMarket((event) => markets.push(event))
    client.onStatus((status) => statuses.push(status))
    const fiber = yield* Effect.fork(Effect.withRandom(run, Random.make(SEED)))
    yield* settle
    /** The same draws the client makes, in order, to predict its delays exactly. */
    const draws = Random.make(SEED)
    const socket = (i: number) => {
      const s = sockets[i]
      if (s === undefined) throw new Error(`the client opened ${sockets.length} sockets, not ${i + 1}`)
      return s
    }
    const last = () => socket(sockets.length - 1)
    const source = (i: number) => {
      const s = sources.sources[i]
      if (s === undefined) throw new Error(`the client opened ${sources.sources.length} event streams, not ${i + 1}`)
      return s
    }
    const lastSource = () => source(sources.sources.length - 1)
    return { client, fiber, sockets, socket, last, sources: sources.sources, source, lastSource, page, summaries, markets, statuses, draws }
  })

// ---------------------------------------------------------------------------------------------

describe("backoffDelay (full jitter, capped)", () => {
  it("draws uniformly below min(max, initial * 2^(attempt-1))", () => {
    expect(backoffDelay(1, POLICY, 0)).toBe(0)
    expect(backoffDelay(1, POLICY, 0.5)).toBe(500)
    expect(backoffDelay(2, POLICY, 0.5)).toBe(1_000)
    expect(backoffDelay(3, POLICY, 0.5)).toBe(2_000)
    expect(backoffDelay(5, POLICY, 0.999)).toBe(15_984)
    // Capped from attempt 6 on (1 s * 2^5 = 32 s > 30 s), forever.
    expect(backoffDelay(6, POLICY, 0.5)).toBe(15_000)
    expect(backoffDelay(1_000, POLICY, 0.999)).toBe(29_970)
    expect(backoffDelay(Number.MAX_SAFE_INTEGER, POLICY, 0.999)).toBe(29_970)
    // Nonsense in, sensible out: attempt 0 or below is the first, random is clamped to [0, 1].
    expect(backoffDelay(0, POLICY, 0.5)).toBe(500)
    expect(backoffDelay(-3, POLICY, 2)).toBe(1_000)
  })

  it.effect("stays in [0, bound) for 10,000 seeded draws; the bound doubles up to the cap", () =>
    Effect.gen(function*() {
      for (let attempt = 1; attempt <= 40; attempt++) {
        const bound = Math.min(POLICY.maxDelay, POLICY.initialDelay * 2 ** (attempt - 1))
        for (let i = 0; i < 250; i++) {
          const delay = backoffDelay(attempt, POLICY, yield* Random.next)
          expect(delay).toBeGreaterThanOrEqual(0)
          expect(delay).toBeLessThan(bound)
          expect(Number.isInteger(delay)).toBe(true)
        }
      }
    }).pipe(Effect.withRandom(Random.make(SEED))))
})

describe("classifySeq", () => {
  it("tells the next update, a gap, and duplicates or older ones", () => {
    expect(classifySeq(undefined, 7)).toBe("first")
    expect(classifySeq(7, 8)).toBe("next")
    expect(classifySeq(7, 10)).toBe("gap")
    expect(classifySeq(7, 7)).toBe("old")
    expect(classifySeq(7, 3)).toBe("old")
  })
})

describe("heartbeatStep", () => {
  const hb = { pingInterval: 15_000, deadAfter: 40_000 }
  it("pings every interval, waits in between, and declares silence past the limit dead", () => {
    expect(heartbeatStep(0, 0, 0, hb)).toEqual({ _tag: "Wait", until: 15_000 })
    expect(heartbeatStep(15_000, 0, 0, hb)).toEqual({ _tag: "Ping" })
    expect(heartbeatStep(20_000, 0, 15_000, hb)).toEqual({ _tag: "Wait", until: 30_000 })
    // The death deadline comes before the next ping.
    expect(heartbeatStep(31_000, 0, 30_000, hb)).toEqual({ _tag: "Wait", until: 40_000 })
    expect(heartbeatStep(40_000, 0, 30_000, hb)).toEqual({ _tag: "Dead", silentFor: 40_000 })
    // Any frame moves the deadline.
    expect(heartbeatStep(40_000, 39_000, 30_000, hb)).toEqual({ _tag: "Wait", until: 45_000 })
  })
})

describe("dashboardSocketUrl", () => {
  it("maps a page address to its WebSocket", () => {
    expect(dashboardSocketUrl("http://127.0.0.1:8080/")).toBe("ws://127.0.0.1:8080/ws")
    expect(dashboardSocketUrl("https://dash.example.com/some/page?x=1")).toBe("wss://dash.example.com/ws")
  })
})

describe("DashcastClient", () => {
  it.effect("connects, goes live on open and delivers the welcome decoded, with its age", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(1_000_000)
      const t = yield* start()
      expect(t.sockets).toHaveLength(1)
      expect(t.last().url).toBe("ws://dashcast.test/ws")
      expect(t.client.status().state).toBe("connecting")
      t.last().accept()
      yield* settle
      expect(t.client.status()).toMatchObject({ state: "live", attempt: 0, reconnectAt: undefined })
      t.last().push(welcome(42, 64_123.45))
      yield* settle
      expect(t.summaries).toHaveLength(1)
      const [event] = t.summaries
      expect(event?.summary).toBeInstanceOf(DashboardSummary)
      expect(event?.summary.btc_price).toBe(64_123.45)
      expect(event && DateTime.formatIso(event.summary.last_updated)).toBe("2025-08-20T12:00:00.000Z")
      expect(event).toMatchObject({ seq: 42, source: "welcome", stale: false, receivedAt: 1_000_000, fetchedAt: 987_500 })
      expect(t.statuses.map((s) => s.state)).toEqual(["connecting", "live"])
      // A listener added later gets the latest at once.
      const late: Array<number> = []
      t.client.onSummary((e) => late.push(e.seq))
      expect(late).toEqual([42])
      t.client.close()
      yield* Fiber.join(t.fiber)
    }))

  it.effect("applies the next seq, ignores duplicates and older ones, and asks for the latest after a gap", () =>
    Effect.gen(function*() {
      const t = yield* start()
      t.last().accept()
      t.last().push(welcome(10, 100))
      t.last().push(update(11, 101))
      t.last().push(update(11, 101))
      t.last().push(update(9, 99))
      yield* settle
      expect(t.summaries.map((s) => s.seq)).toEqual([10, 11])
      expect(t.last().sentTypes()).toEqual([])
      t.last().push(update(14, 104))
      yield* settle
      expect(t.summaries.map((s) => s.seq)).toEqual([10, 11, 14])
      expect(t.last().sentTypes()).toEqual(["request_update"])
      // The answer repeats 14: nothing new, nothing delivered.
      t.last().push(update(14, 104, { source: "request_update" }))
      t.last().push(update(15, 105, { stale_fields: ["rsi_14"] }))
      yield* settle
      expect(t.summaries.map((s) => s.seq)).toEqual([10, 11, 14, 15])
      expect(t.summaries.at(-1)).toMatchObject({ stale: true, staleFields: ["rsi_14"] })
      t.client.close()
    }))

  it.effect("reports upstream failures with retry_after until a new summary arrives", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(5_000)
      const t = yield* start()
      t.last().accept()
      t.last().push({ type: "error", error: "No market data yet", timestamp: "2025-08-20T12:00:00.000Z", retry_after: 30 })
      yield* settle
      expect(t.client.status().upstream).toEqual({ error: "No market data yet", retryAfter: 30, receivedAt: 5_000 })
      expect(t.client.status().state).toBe("live")
      t.last().push(update(1, 100))
      yield* settle
      expect(t.client.status().upstream).toBeUndefined()
      // A complaint about our own frame is not an upstream failure.
      t.last().push({ type: "error", error: "unknown message type: x", timestamp: "2025-08-20T12:00:00.000Z" })
      // Nor is a frame that breaks the contract: it is reported and the connection stays.
      t.last().push({ type: "dashboard_update", seq: 2 })
      yield* settle
      expect(t.client.status().upstream).toBeUndefined()
      expect(t.client.status().lastError).toMatch(/^unreadable frame/)
      expect(t.client.status().state).toBe("live")
      expect(t.summaries.map((s) => s.seq)).toEqual([1])
      t.client.close()
    }))

  it.effect("pings every 15 s; a silent connection is closed after 40 s and replaced after a jittered delay", () =>
    Effect.gen(function*() {
      const t = yield* start()
      t.last().accept()
      t.last().push(welcome(1, 100))
      yield* settle
      yield* advance(14_999)
      expect(t.last().sentTypes()).toEqual([])
      yield* advance(1)
      expect(t.last().sentTypes()).toEqual(["ping"])
      // The server answers: the connection is alive as long as frames come.
      t.last().push({ type: "pong", timestamp: "2025-08-20T12:00:15.000Z" })
      yield* settle
      yield* advance(15_000)
      expect(t.last().sentTypes()).toEqual(["ping", "ping"])
      // Then silence: 40 s after the pong (at 15 s) the connection is dead.
      yield* advance(24_999)
      expect(t.last().closedWith).toBeUndefined()
      yield* advance(1)
      expect(t.socket(0).closedWith).toEqual({ code: 4000, reason: "heartbeat timeout" })
      // It lived longer than 5 s, so backoff starts over at attempt 1.
      const delay = backoffDelay(1, POLICY, yield* t.draws.next)
      expect(t.client.status()).toMatchObject({ state: "reconnecting", attempt: 1, reconnectAt: 55_000 + delay })
      expect(t.client.status().lastError).toBe("no frame from the server for 40 s")
      if (delay > 0) {
        yield* advance(delay - 1)
        expect(t.sockets).toHaveLength(1)
      }
      yield* advance(1)
      expect(t.sockets).toHaveLength(2)
      t.client.close()
    }))

  it.effect("never gives up: delays follow the seeded full jitter, grow to the cap, and the state turns offline", () =>
    Effect.gen(function*() {
      const t = yield* start()
      let now = 0
      for (let attempt = 1; attempt <= 25; attempt++) {
        t.last().refuse()
        yield* settle
        const delay = backoffDelay(attempt, POLICY, yield* t.draws.next)
        expect(delay).toBeLessThan(Math.min(30_000, 1_000 * 2 ** (attempt - 1)))
        expect(t.client.status()).toMatchObject({
          state: attempt >= 5 ? "offline" : "reconnecting",
          attempt,
          reconnectAt: now + delay,
          lastError: "could not connect"
        })
        if (delay > 0) {
          yield* advance(delay - 1)
          expect(t.sockets).toHaveLength(attempt)
        }
        yield* advance(delay > 0 ? 1 : 0)
        expect(t.sockets).toHaveLength(attempt + 1)
        now += delay
      }
      // Once a connection greets us, the next failure starts again from the first delay.
      t.last().accept()
      t.last().push(welcome(3, 100))
      yield* settle
      expect(t.client.status()).toMatchObject({ state: "live", attempt: 0 })
      t.client.close()
    }))

  it.effect("keeps backing off from a server that accepts and drops at once", () =>
    Effect.gen(function*() {
      const t = yield* start()
      for (let attempt = 1; attempt <= 6; attempt++) {
        t.last().accept()
        t.last().push(welcome(attempt, 100))
        yield* settle
        expect(t.client.status()).toMatchObject({ state: "live", attempt: 0 })
        t.last().drop(1011, "bye")
        yield* settle
        const delay = backoffDelay(attempt, POLICY, yield* t.draws.next)
        expect(t.client.status()).toMatchObject({ attempt })
        yield* advance(delay)
        expect(t.sockets).toHaveLength(attempt + 1)
      }
      t.client.close()
    }))

  it.effect("gives up on a connection that does not open within the timeout", () =>
    Effect.gen(function*() {
      const t = yield* start({ connectTimeout: 2_000 })
      yield* advance(1_999)
      expect(t.socket(0).closedWith).toBeUndefined()
      yield* advance(1)
      expect(t.socket(0).closedWith).toBeDefined()
      expect(t.client.status()).toMatchObject({ state: "reconnecting", attempt: 1, lastError: "no connection after 2 s" })
      t.client.close()
    }))

  it.effect("accepts the welcome of a restarted server even when its seq starts over", () =>
    Effect.gen(function*() {
      const t = yield* start()
      t.last().accept()
      t.last().push(welcome(50, 100))
      yield* settle
      t.last().drop(1001, "server shutting down")
      yield* settle
      expect(t.client.status()).toMatchObject({ state: "reconnecting", lastError: "connection closed (1001: server shutting down)" })
      yield* advance(1_000)
      t.last().accept()
      t.last().push(welcome(1, 200))
      t.last().push(update(2, 201))
      yield* settle
      expect(t.summaries.map((s) => [s.seq, s.summary.btc_price])).toEqual([[50, 100], [1, 200], [2, 201]])
      t.client.close()
    }))

  it.effect("while hidden: no pings, no death, summaries held; when shown: latest delivered and a resync requested", () =>
    Effect.gen(function*() {
      const t = yield* start()
      t.last().accept()
      t.last().push(welcome(1, 100))
      yield* settle
      t.page.set({ hidden: true })
      yield* settle
      t.last().push(update(2, 102))
      t.last().push(update(3, 103))
      yield* settle
      expect(t.summaries.map((s) => s.seq)).toEqual([1])
      expect(t.client.latest()?.seq).toBe(3)
      // A background tab for ten minutes: the heartbeat sleeps with it.
      yield* advance(600_000)
      expect(t.last().sentTypes()).toEqual([])
      expect(t.last().closedWith).toBeUndefined()
      t.page.set({ hidden: false })
      yield* settle
      expect(t.summaries.map((s) => s.seq)).toEqual([1, 3])
      expect(t.last().sentTypes()).toEqual(["request_update"])
      // The silence count starts again from the moment it was shown.
      yield* advance(39_999)
      expect(t.last().closedWith).toBeUndefined()
      expect(t.client.status().state).toBe("live")
      t.client.close()
    }))

  it.effect("while hidden it does not reconnect; shown again it connects at once", () =>
    Effect.gen(function*() {
      const t = yield* start()
      t.last().accept()
      yield* settle
      t.page.set({ hidden: true })
      t.last().drop()
      yield* settle
      yield* advance(3_600_000)
      expect(t.sockets).toHaveLength(1)
      t.page.set({ hidden: false })
      yield* settle
      expect(t.sockets).toHaveLength(2)
      t.client.close()
    }))

  it.effect("the network coming back wakes a waiting reconnect; going offline shows offline", () =>
    Effect.gen(function*() {
      const t = yield* start({ initialDelay: 60_000, maxDelay: 60_000 })
      t.page.set({ offline: true })
      t.last().refuse()
      yield* settle
      expect(t.client.status().state).toBe("offline")
      expect(t.sockets).toHaveLength(1)
      t.page.set({ offline: false })
      yield* settle
      expect(t.sockets).toHaveLength(2)
      expect(t.client.status().state).toBe("reconnecting")
      t.client.close()
    }))

  it.effect("requestUpdate asks the server; close() closes with 1000, ends the fiber and stops callbacks", () =>
    Effect.gen(function*() {
      const t = yield* start()
      t.last().accept()
      t.last().push(welcome(1, 100))
      yield* settle
      t.client.requestUpdate()
      yield* settle
      expect(t.last().sentTypes()).toEqual(["request_update"])
      const statusesBefore = t.statuses.length
      t.client.close()
      yield* Fiber.join(t.fiber)
      expect(t.last().closedWith).toEqual({ code: 1000, reason: "client closed" })
      expect(t.page.listeners.size).toBe(0)
      t.last().push(update(2, 102))
      yield* advance(120_000)
      expect(t.summaries.map((s) => s.seq)).toEqual([1])
      expect(t.statuses).toHaveLength(statusesBefore)
      expect(t.sockets).toHaveLength(1)
    }))

  it.effect("a throwing listener does not stop the others or the client", () =>
    Effect.gen(function*() {
      const errors: Array<unknown> = []
      const original = globalThis.reportError
      globalThis.reportError = (error: unknown) => errors.push(error)
      const t = yield* start()
      t.client.onSummary(() => {
        throw new Error("listener bug")
      })
      const seen: Array<number> = []
      t.client.onSummary((e) => seen.push(e.seq))
      t.last().accept()
      t.last().push(welcome(1, 100))
      t.last().push(update(2, 101))
      yield* settle
      globalThis.reportError = original
      expect(seen).toEqual([1, 2])
      expect(errors).toHaveLength(2)
      t.client.close()
    }))
})

describe("DashcastClient: assets and currencies", () => {
  const subscribe = (currency: string) => JSON.stringify({ type: "subscribe", currency })

  it.effect("dashboardSocketUrl and the currency option ask for a currency in the socket URL", () =>
    Effect.gen(function*() {
      expect(dashboardSocketUrl("http://127.0.0.1:8080/", "eur")).toBe("ws://127.0.0.1:8080/ws?currency=eur")
      const t = yield* start({ currency: "eur" })
      expect(t.last().url).toBe("ws://dashcast.test/ws?currency=eur")
      expect(t.client.currency()).toBe("eur")
      t.client.close()
      // The option wins over a currency already in the URL.
      const { Ctor, sockets } = fakeSockets()
      const { client, run } = makeDashcastClient("ws://dashcast.test/ws?currency=usd", {
        WebSocket: Ctor,
        signals: fakePage().signals,
        currency: "gbp"
      })
      const fiber = yield* Effect.fork(run)
      yield* settle
      expect(sockets.map((s) => s.url)).toEqual(["ws://dashcast.test/ws?currency=gbp"])
      client.close()
      yield* Fiber.join(fiber)
    }))

  it.effect("without a currency it asks for none and takes the server's from the first frame", () =>
    Effect.gen(function*() {
      const t = yield* start()
      expect(t.last().url).toBe("ws://dashcast.test/ws")
      expect(t.client.currency()).toBeUndefined()
      t.last().accept()
      // A server without data yet answers the connection with an error, then its first update.
      t.last().push({ type: "error", error: "No market data yet", timestamp: "2025-08-20T12:00:00.000Z", retry_after: 3 })
      t.last().push(update(1, 100, { currency: "jpy" }))
      yield* settle
      expect(t.client.currency()).toBe("jpy")
      expect(t.markets.map((m) => [m.seq, m.currency])).toEqual([[1, "jpy"]])
      expect(t.summaries.map((s) => s.seq)).toEqual([1])
      t.client.close()
    }))

  it.effect("onMarket gets every asset and the market; onSummary only frames with the seed's data", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(1_000_000)
      const t = yield* start()
      t.last().accept()
      t.last().push(welcome(7, 64_000))
      yield* settle
      expect(t.markets).toHaveLength(1)
      const [first] = t.markets
      expect(first).toMatchObject({ currency: "usd", seq: 7, source: "welcome", stale: false, staleFields: [], stalePaths: [], fetchedAt: 987_500 })
      expect(first?.assets.map((a) => [a.id, a.symbol, a.name, a.price, a.rsi_14, a.volume_24h])).toEqual([
        ["bitcoin", "btc", "Bitcoin", 64_000, 55.3, null],
        ["ethereum", "eth", "Ethereum", 3_200, 48.5, null]
      ])
      expect(first?.assets[1] && DateTime.formatIso(first.assets[1].last_updated)).toBe("2025-08-20T11:59:30.000Z")
      expect(first?.market).toEqual(wireMarket)
      expect(first?.summary?.btc_price).toBe(64_000)
      // Bitcoin's summary is incomplete (its RSI was never known): no `data`, so no summary event.
      const { data: _, ...withoutData } = update(8, 64_100)
      t.last().push({ ...withoutData, assets: [wireAsset("bitcoin", "btc", 64_100, null), wireAsset("ethereum", "eth", 3_205)] })
      // One asset's RSI is stale: the market event says so; bitcoin's summary is not stale.
      t.last().push(update(9, 64_200, { stale_paths: ["assets.ethereum.rsi_14"] }))
      yield* settle
      expect(t.markets.map((m) => [m.seq, m.assets.length, m.summary?.btc_price])).toEqual([[7, 2, 64_000], [8, 2, undefined], [9, 2, 64_200]])
      expect(t.markets.at(-1)).toMatchObject({ stale: true, stalePaths: ["assets.ethereum.rsi_14"], staleFields: [] })
      expect(t.summaries.map((s) => [s.seq, s.stale])).toEqual([[7, false], [9, false]])
      expect(t.client.latestMarket()?.seq).toBe(9)
      expect(t.client.latest()?.seq).toBe(9)
      // A late listener gets the latest of each kind at once.
      const late: Array<number> = []
      t.client.onMarket((e) => late.push(e.seq))
      expect(late).toEqual([9])
      t.client.close()
    }))

  it.effect("a frame without data keeps the latest summary, also while hidden; another currency forgets it", () =>
    Effect.gen(function*() {
      const t = yield* start()
      const withoutData = (frame: ReturnType<typeof update> | ReturnType<typeof welcome>) => {
        const { data: _, ...rest } = frame
        return rest
      }
      t.last().accept()
      t.last().push(welcome(1, 100))
      t.last().push(withoutData(update(2, 101)))
      yield* settle
      expect(t.client.latest()?.seq).toBe(1)
      expect(t.client.latestMarket()?.seq).toBe(2)
      const late: Array<number> = []
      t.client.onSummary((e) => late.push(e.seq))
      expect(late).toEqual([1])
      // Hidden: a summary, then a frame without one; shown, each listener gets its newest.
      t.page.set({ hidden: true })
      yield* settle
      t.last().push(update(3, 102))
      t.last().push(withoutData(update(4, 103)))
      yield* settle
      t.page.set({ hidden: false })
      yield* settle
      expect(t.summaries.map((e) => e.seq)).toEqual([1, 3])
      expect(t.markets.map((e) => e.seq)).toEqual([1, 2, 4])
      // In another currency without data there is no latest summary.
      t.client.setCurrency("eur")
      yield* settle
      t.last().push(withoutData(welcome(4, 92, { currency: "eur" })))
      yield* settle
      expect(t.client.latestMarket()).toMatchObject({ seq: 4, currency: "eur" })
      expect(t.client.latest()).toBeUndefined()
      t.client.close()
    }))

  it.effect("ignores frames of another currency (no gap, no resync)", () =>
    Effect.gen(function*() {
      const t = yield* start({ currency: "usd" })
      t.last().accept()
      t.last().push(welcome(1, 100))
      t.last().push(update(2, 92, { currency: "eur" }))
      t.last().push(update(5, 92, { currency: "eur" }))
      t.last().push(welcome(6, 92, { currency: "eur" }))
      yield* settle
      expect(t.markets.map((m) => [m.seq, m.currency])).toEqual([[1, "usd"]])
      expect(t.summaries.map((s) => s.seq)).toEqual([1])
      // The next usd update is the next seq for this client: no request_update.
      t.last().push(update(2, 101))
      yield* settle
      expect(t.markets.map((m) => [m.seq, m.currency])).toEqual([[1, "usd"], [2, "usd"]])
      expect(t.last().sentTypes()).toEqual([])
      expect(t.client.currency()).toBe("usd")
      t.client.close()
    }))

  it.effect("setCurrency subscribes on the open socket; the welcome of the new currency switches currency()", () =>
    Effect.gen(function*() {
      const t = yield* start()
      t.last().accept()
      t.last().push(welcome(5, 100))
      yield* settle
      t.client.setCurrency("eur")
      yield* settle
      expect(t.last().sent).toEqual([subscribe("eur")])
      expect(t.client.currency()).toBe("usd")
      // A usd update the server sent before it switched: the next event is still the eur welcome.
      t.last().push(update(6, 101))
      yield* settle
      expect(t.markets.map((m) => m.seq)).toEqual([5])
      expect(t.client.currency()).toBe("usd")
      t.last().push(welcome(6, 92, { currency: "eur" }))
      yield* settle
      expect(t.client.currency()).toBe("eur")
      expect(t.markets.map((m) => [m.seq, m.currency, m.source])).toEqual([[5, "usd", "welcome"], [6, "eur", "welcome"]])
      expect(t.summaries.map((s) => [s.seq, s.summary.btc_price])).toEqual([[5, 100], [6, 92]])
      // From now on usd frames are another currency's; eur updates follow the welcome's seq.
      t.last().push(update(7, 102))
      t.last().push(update(7, 93, { currency: "eur" }))
      yield* settle
      expect(t.markets.map((m) => [m.seq, m.currency])).toEqual([[5, "usd"], [6, "eur"], [7, "eur"]])
      expect(t.last().sentTypes()).toEqual(["subscribe"])
      expect(t.sockets).toHaveLength(1)
      // Asking for the currency it has already sends nothing.
      t.client.setCurrency("eur")
      yield* settle
      expect(t.last().sent).toEqual([subscribe("eur")])
      t.client.close()
    }))

  it.effect("a switch before the server has data completes with the new currency's first update", () =>
    Effect.gen(function*() {
      const t = yield* start()
      t.last().accept()
      const noData = { type: "error", error: "No market data yet", timestamp: "2025-08-20T12:00:00.000Z", retry_after: 5 }
      // The server answers the connection, then the subscription, with "no data yet" instead of a welcome.
      t.last().push(noData)
      t.client.setCurrency("eur")
      yield* settle
      t.last().push(noData)
      t.last().push(update(1, 92, { currency: "eur" }))
      t.last().push(update(2, 93, { currency: "eur" }))
      yield* settle
      expect(t.client.currency()).toBe("eur")
      expect(t.markets.map((m) => [m.seq, m.currency])).toEqual([[1, "eur"], [2, "eur"]])
      expect(t.last().sentTypes()).toEqual(["subscribe"])
      t.client.close()
    }))

  it.effect("reconnects ask for the chosen currency, also when it was chosen while disconnected or connecting", () =>
    Effect.gen(function*() {
      const t = yield* start()
      t.last().accept()
      t.last().push(welcome(1, 100))
      t.client.setCurrency("eur")
      yield* settle
      t.last().push(welcome(2, 92, { currency: "eur" }))
      yield* settle
      t.last().drop(1001, "server shutting down")
      yield* settle
      yield* advance(1_000)
      expect(t.sockets.map((s) => s.url)).toEqual(["ws://dashcast.test/ws", "ws://dashcast.test/ws?currency=eur"])
      // Chosen while waiting to reconnect: the next connection asks for it.
      t.last().refuse()
      yield* settle
      t.client.setCurrency("gbp")
      yield* settle
      yield* advance(2_000)
      expect(t.last().url).toBe("ws://dashcast.test/ws?currency=gbp")
      expect(t.client.currency()).toBe("eur")
      // Chosen while that connection is still opening (it asked for gbp): it subscribes once open.
      t.client.setCurrency("jpy")
      yield* settle
      t.last().accept()
      yield* settle
      expect(t.last().sent).toEqual([subscribe("jpy")])
      t.last().push(welcome(3, 79, { currency: "gbp" }))
      t.last().push(welcome(3, 15_000, { currency: "jpy" }))
      yield* settle
      expect(t.client.currency()).toBe("jpy")
      expect(t.markets.map((m) => m.currency)).toEqual(["usd", "eur", "jpy"])
      t.client.close()
    }))

  it.effect("a currency the server refuses leaves the client on its currency, now and after a reconnect", () =>
    Effect.gen(function*() {
      const t = yield* start()
      t.last().accept()
      t.last().push(welcome(1, 100))
      t.client.setCurrency("xyz")
      yield* settle
      expect(t.last().sent).toEqual([subscribe("xyz")])
      // Sent before the server read the subscription: skipped while the switch is pending.
      t.last().push(update(2, 101))
      t.last().push({
        type: "error",
        error: "unknown currency \"xyz\"; this server has usd, eur",
        timestamp: "2025-08-20T12:00:00.000Z"
      })
      t.last().push(update(3, 102))
      yield* settle
      expect(t.client.currency()).toBe("usd")
      expect(t.client.status().lastError).toBe("server: unknown currency \"xyz\"; this server has usd, eur")
      expect(t.client.status().upstream).toBeUndefined()
      // Back on usd updates; the one skipped is a gap, so it asks for the latest.
      expect(t.markets.map((m) => [m.seq, m.currency])).toEqual([[1, "usd"], [3, "usd"]])
      expect(t.last().sentTypes()).toEqual(["subscribe", "request_update"])
      t.last().drop()
      yield* settle
      yield* advance(1_000)
      expect(t.last().url).toBe("ws://dashcast.test/ws?currency=usd")
      t.client.close()
    }))
})

describe("dashboardStreamUrl", () => {
  it("maps a socket URL to its event stream, keeping the path prefix and the query", () => {
    expect(dashboardStreamUrl("ws://dashcast.test/ws")).toBe("http://dashcast.test/api/stream")
    expect(dashboardStreamUrl("wss://dash.example/app/ws?currency=eur")).toBe("https://dash.example/app/api/stream?currency=eur")
    expect(dashboardStreamUrl(dashboardSocketUrl("https://dash.example/", "gbp"))).toBe("https://dash.example/api/stream?currency=gbp")
  })
})

describe("DashcastClient: falling back to Server-Sent Events", () => {
  const auto = { transports: "auto" } as const
  const errorFrame = { type: "error", error: "No market data yet", timestamp: "2025-08-20T12:00:00.000Z", retry_after: 30 }

  it.effect("a WebSocket refused before it opens: the same events come over an event stream at once, and the status says so", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(1_000_000)
      const t = yield* start(auto)
      t.last().refuse()
      yield* settle
      // No delay and no failure counted: the server answered, only the WebSocket did not get through.
      expect(t.sources).toHaveLength(1)
      expect(t.lastSource().url).toBe("http://dashcast.test/api/stream")
      expect(t.client.status()).toMatchObject({ state: "connecting", attempt: 0, transport: "sse", lastError: "could not connect" })
      expect(t.lastSource().listened()).toEqual(expect.arrayContaining(["open", "welcome", "dashboard_update", "error", "pong", ":"]))
      t.lastSource().accept()
      yield* settle
      expect(t.client.status()).toMatchObject({ state: "live", attempt: 0, transport: "sse", lastError: undefined })
      t.lastSource().push(errorFrame)
      yield* settle
      expect(t.client.status()).toMatchObject({ state: "live", upstream: { error: "No market data yet", retryAfter: 30, receivedAt: 1_000_000 } })
      t.lastSource().push(welcome(7, 64_000))
      t.lastSource().push(update(8, 64_100))
      t.lastSource().push(update(10, 64_300))
      yield* settle
      expect(t.summaries.map((s) => [s.seq, s.source, s.summary.btc_price])).toEqual([[7, "welcome", 64_000], [8, "scheduled_update", 64_100], [10, "scheduled_update", 64_300]])
      expect(t.markets.map((m) => m.assets.map((a) => a.symbol))).toEqual([["btc", "eth"], ["btc", "eth"], ["btc", "eth"]])
      expect(t.summaries[0]).toMatchObject({ receivedAt: 1_000_000, fetchedAt: 987_500 })
      expect(t.client.status().upstream).toBeUndefined()
      expect(t.statuses.map((s) => [s.state, s.transport])).toEqual([
        ["connecting", "websocket"],
        ["connecting", "sse"], // the switch, with the WebSocket's error
        ["connecting", "sse"], // the stream opening
        ["live", "sse"],
        ["live", "sse"],
        ["live", "sse"]
      ])
      // Nothing to send on a stream: the gap was filled by the update itself, and requests are dropped.
      t.client.requestUpdate()
      yield* settle
      expect(t.socket(0).sent).toEqual([])
      t.client.close()
      yield* settle
      expect(t.lastSource().closed).toBe(true)
      yield* Fiber.join(t.fiber)
    }))

  it.effect("a WebSocket that opens but closes before the server's first frame falls back too; one that greeted does not", () =>
    Effect.gen(function*() {
      const t = yield* start(auto)
      t.last().accept()
      t.last().push(welcome(1, 100))
      yield* settle
      t.last().drop(1006)
      yield* settle
      // It had greeted us: an ordinary reconnect, by WebSocket, after a backoff delay.
      const delay = backoffDelay(1, POLICY, yield* t.draws.next)
      expect(t.client.status()).toMatchObject({ state: "reconnecting", attempt: 1, transport: "websocket" })
      yield* advance(delay)
      expect(t.sockets).toHaveLength(2)
      expect(t.sources).toHaveLength(0)
      // This one opens (a proxy let the upgrade through) but is closed before the welcome.
      t.last().accept()
      yield* settle
      t.last().drop(1006)
      yield* settle
      expect(t.sources).toHaveLength(1)
      expect(t.client.status()).toMatchObject({ transport: "sse", attempt: 1 })
      t.client.close()
    }))

  it.effect("with fallbackAfter: 3, falls back after three WebSocket attempts in a row without a frame, each backed off", () =>
    Effect.gen(function*() {
      const t = yield* start({ ...auto, fallbackAfter: 3 })
      for (let attempt = 1; attempt <= 2; attempt++) {
        t.last().refuse()
        yield* settle
        const delay = backoffDelay(attempt, POLICY, yield* t.draws.next)
        expect(t.client.status()).toMatchObject({ attempt, transport: "websocket", reconnectAt: expect.any(Number) })
        yield* advance(delay)
        expect(t.sockets).toHaveLength(attempt + 1)
      }
      t.last().refuse()
      yield* settle
      expect(t.sources).toHaveLength(1)
      expect(t.client.status()).toMatchObject({ attempt: 2, transport: "sse" })
      t.client.close()
    }))

  it.effect("on an event stream it tries the WebSocket in the background after 30 s and moves over once it greets", () =>
    Effect.gen(function*() {
      const t = yield* start(auto)
      t.last().refuse()
      yield* settle
      t.lastSource().accept()
      t.lastSource().push(welcome(1, 100))
      yield* settle
      yield* advance(29_999)
      expect(t.sockets).toHaveLength(1)
      yield* advance(1)
      expect(t.sockets).toHaveLength(2)
      // Opening is not enough: the stream stays live until the socket has the server's first frame.
      t.last().accept()
      t.lastSource().push(update(2, 102))
      yield* settle
      expect(t.client.status().transport).toBe("sse")
      expect(t.lastSource().closed).toBe(false)
      t.last().push(welcome(2, 102))
      yield* settle
      expect(t.client.status()).toMatchObject({ state: "live", transport: "websocket" })
      expect(t.lastSource().closed).toBe(true)
      // The welcome repeats what the stream said; then the socket carries on, pings included.
      t.last().push(update(3, 103))
      yield* settle
      expect(t.summaries.map((s) => [s.seq, s.source])).toEqual([[1, "welcome"], [2, "scheduled_update"], [2, "welcome"], [3, "scheduled_update"]])
      yield* advance(15_000)
      expect(t.last().sentTypes()).toEqual(["ping"])
      expect(t.sources).toHaveLength(1)
      t.client.close()
    }))

  it.effect("a WebSocket try that fails leaves the stream live and the next comes twice as late, up to 30 minutes", () =>
    Effect.gen(function*() {
      const t = yield* start(auto)
      t.last().refuse()
      yield* settle
      t.lastSource().accept()
      t.lastSource().push(welcome(1, 100))
      yield* settle
      const live = t.client.status()
      let wait = 30_000
      for (let attempt = 2; attempt <= 9; attempt++) {
        yield* advance(wait - 1)
        expect(t.sockets).toHaveLength(attempt - 1)
        yield* advance(1)
        expect(t.sockets).toHaveLength(attempt)
        t.last().refuse()
        yield* settle
        expect(t.client.status()).toBe(live)
        wait = Math.min(wait * 2, 1_800_000)
      }
      expect(wait).toBe(1_800_000)
      // A try that neither opens nor fails is given up after the connect timeout.
      yield* advance(wait)
      expect(t.sockets).toHaveLength(10)
      yield* advance(10_000)
      expect(t.last().closedWith).toBeDefined()
      expect(t.client.status()).toBe(live)
      expect(t.lastSource().closed).toBe(false)
      t.client.close()
    }))

  it.effect("a stream that fails before its first event means the server is away: back off, then the WebSocket first again", () =>
    Effect.gen(function*() {
      const t = yield* start(auto)
      t.last().refuse()
      yield* settle
      t.lastSource().fail()
      yield* settle
      const delay = backoffDelay(1, POLICY, yield* t.draws.next)
      expect(t.client.status()).toMatchObject({ state: "reconnecting", attempt: 1, transport: "websocket", lastError: "could not open the event stream" })
      expect(t.lastSource().closed).toBe(true)
      yield* advance(delay)
      expect(t.sockets).toHaveLength(2)
      expect(t.sources).toHaveLength(1)
      t.client.close()
    }))

  it.effect("a stream that ends after its events reconnects as a stream after a backoff delay", () =>
    Effect.gen(function*() {
      const t = yield* start(auto)
      t.last().refuse()
      yield* settle
      t.lastSource().accept()
      t.lastSource().push(welcome(5, 100))
      yield* settle
      t.lastSource().fail()
      yield* settle
      const delay = backoffDelay(1, POLICY, yield* t.draws.next)
      expect(t.client.status()).toMatchObject({ state: "reconnecting", attempt: 1, transport: "sse", lastError: "event stream closed" })
      yield* advance(delay)
      expect(t.sources).toHaveLength(2)
      expect(t.sockets).toHaveLength(1)
      t.lastSource().accept()
      t.lastSource().push(welcome(6, 101))
      yield* settle
      expect(t.summaries.map((s) => s.seq)).toEqual([5, 6])
      expect(t.client.status()).toMatchObject({ state: "live", attempt: 0, transport: "sse" })
      t.client.close()
    }))

  it.effect("setCurrency on a stream reconnects it with the new currency; the welcome in it switches currency()", () =>
    Effect.gen(function*() {
      const t = yield* start({ ...auto, currency: "usd" })
      expect(t.last().url).toBe("ws://dashcast.test/ws?currency=usd")
      t.last().refuse()
      yield* settle
      expect(t.lastSource().url).toBe("http://dashcast.test/api/stream?currency=usd")
      t.lastSource().accept()
      t.lastSource().push(welcome(1, 100))
      yield* settle
      t.client.setCurrency("eur")
      yield* settle
      expect(t.source(0).closed).toBe(true)
      expect(t.lastSource().url).toBe("http://dashcast.test/api/stream?currency=eur")
      expect(t.client.currency()).toBe("usd")
      t.lastSource().accept()
      t.lastSource().push({ ...welcome(1, 92), currency: "eur" })
      yield* settle
      expect(t.client.currency()).toBe("eur")
      expect(t.markets.map((m) => m.currency)).toEqual(["usd", "eur"])
      expect(t.client.status()).toMatchObject({ state: "live", attempt: 0, transport: "sse" })
      // Chosen while the stream opens: it reconnects once open.
      t.client.setCurrency("gbp")
      yield* settle
      expect(t.lastSource().url).toBe("http://dashcast.test/api/stream?currency=gbp")
      t.client.setCurrency("usd")
      yield* settle
      t.lastSource().accept()
      yield* settle
      expect(t.lastSource().url).toBe("http://dashcast.test/api/stream?currency=usd")
      t.client.close()
    }))

  it.effect("a stream that showed heartbeats and then goes silent for 40 s is replaced; one that never showed any is not", () =>
    Effect.gen(function*() {
      const t = yield* start({ ...auto, webSocketRetry: 3_600_000 })
      t.last().refuse()
      yield* settle
      t.lastSource().accept()
      t.lastSource().push(welcome(1, 100))
      yield* settle
      // A browser's EventSource hides comments: only the stream itself can say it ended.
      yield* advance(600_000)
      expect(t.lastSource().closed).toBe(false)
      t.lastSource().heartbeat()
      yield* settle
      yield* advance(15_000)
      t.lastSource().heartbeat()
      yield* settle
      yield* advance(39_999)
      expect(t.lastSource().closed).toBe(false)
      yield* advance(1)
      expect(t.source(0).closed).toBe(true)
      expect(t.client.status()).toMatchObject({ state: "reconnecting", transport: "sse", lastError: "no heartbeat from the server for 40 s" })
      t.client.close()
    }))

  it.effect("transports: sse uses the stream only and never tries the WebSocket", () =>
    Effect.gen(function*() {
      const t = yield* start({ transports: "sse" })
      expect(t.sockets).toHaveLength(0)
      expect(t.client.status()).toMatchObject({ state: "connecting", transport: "sse" })
      t.lastSource().accept()
      t.lastSource().push(welcome(1, 100))
      yield* settle
      yield* advance(3_600_000)
      expect(t.sockets).toHaveLength(0)
      expect(t.summaries.map((s) => s.seq)).toEqual([1])
      t.client.close()
    }))
})

describe("DashcastClient over a real socket (Bun's WebSocket, the real server)", () => {
  /** Polls `check` every 10 ms until it holds; fails after 5 s. */
  const eventually = (what: string, check: () => boolean) =>
    Effect.sync(check).pipe(
      Effect.repeat({ until: (ok) => ok, schedule: Schedule.spaced("10 millis") }),
      Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error(`not within 5 seconds: ${what}`) }),
      Effect.orDie
    )

  it.scopedLive("connects with the defaults, decodes the welcome and every update, and closes", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ first: summaryView(makeSummary({ btc_price: 61_000.5 })) })
      const client = connect(server.wsUrl)
      yield* Effect.addFinalizer(() => Effect.sync(() => client.close()))
      const seen: Array<SummaryEvent> = []
      client.onSummary((event) => seen.push(event))
      yield* eventually("the welcome", () => seen.length === 1)
      expect(client.status().state).toBe("live")
      expect(seen[0]).toMatchObject({ seq: 1, source: "welcome", stale: false })
      expect(seen[0]?.summary.btc_price).toBe(61_000.5)
      yield* server.market.succeed(summaryView(makeSummary({ btc_price: 61_500 })))
      yield* server.updater.forceUpdate()
      yield* eventually("the force update", () => seen.length === 2)
      expect(seen[1]).toMatchObject({ seq: 2, source: "force_update" })
      expect(seen[1]?.summary.btc_price).toBe(61_500)
    }))

  it.scopedLive("switches currency on the same connection, and stays on its currency when the server refuses one", () =>
    Effect.gen(function*() {
      const assets = ["bitcoin", "ethereum", "solana"]
      const server = yield* TestServer.start({
        config: { ASSETS: assets.join(","), CURRENCIES: "usd,eur" },
        first: watchlistView(assets, ["usd", "eur"])
      })
      const client = connect(server.wsUrl, { currency: "eur" })
      yield* Effect.addFinalizer(() => Effect.sync(() => client.close()))
      const seen: Array<MarketEvent> = []
      client.onMarket((event) => seen.push(event))
      yield* eventually("the eur welcome", () => seen.length === 1)
      const snapshot = yield* server.awaitSeq(1)
      const pricesIn = (currency: string) => assets.map((id) => snapshot.view.quotes[currency]?.[id]?.price)
      expect(seen[0]).toMatchObject({ currency: "eur", seq: 1, source: "welcome" })
      expect(seen[0]?.assets.map((a) => a.price)).toEqual(pricesIn("eur"))
      expect(client.currency()).toBe("eur")

      client.setCurrency("usd")
      yield* eventually("the usd welcome", () => seen.length === 2)
      expect(seen[1]).toMatchObject({ currency: "usd", seq: 1, source: "welcome" })
      expect(seen[1]?.assets.map((a) => a.price)).toEqual(pricesIn("usd"))
      expect(client.currency()).toBe("usd")
      // The next update comes in the new currency only.
      yield* server.market.succeed(watchlistView(assets, ["usd", "eur"], { scale: 1.01 }))
      yield* server.updater.forceUpdate()
      yield* eventually("the force update", () => seen.length === 3)
      const next = yield* server.awaitSeq(2)
      expect(seen[2]).toMatchObject({ currency: "usd", seq: 2, source: "force_update" })
      expect(seen[2]?.assets.map((a) => a.price)).toEqual(assets.map((id) => next.view.quotes["usd"]?.[id]?.price))

      client.setCurrency("chf")
      yield* eventually("the refusal", () => client.status().lastError !== undefined)
      expect(client.status().lastError).toMatch(/^server: unknown currency "chf"/)
      expect(client.currency()).toBe("usd")
      yield* server.market.succeed(watchlistView(assets, ["usd", "eur"], { scale: 1.02 }))
      yield* server.updater.forceUpdate()
      yield* eventually("the update after the refusal", () => seen.length === 4)
      expect(seen[3]).toMatchObject({ currency: "usd", seq: 3 })
      expect(client.status().state).toBe("live")
    }))

  it.scopedLive("falls back to the event stream where the upgrade is refused, with FetchEventSource, and switches currency on it", () =>
    Effect.gen(function*() {
      const assets = ["bitcoin", "ethereum"]
      const server = yield* TestServer.start({
        config: { ASSETS: assets.join(","), CURRENCIES: "usd,eur" },
        first: watchlistView(assets, ["usd", "eur"])
      })
      // The same server refuses this upgrade (404): a WebSocket that cannot be opened.
      const blocked = new URL("/blocked/ws", server.url)
      blocked.protocol = "ws:"
      const client = connect(blocked.href, { streamUrl: new URL("/api/stream", server.url).href, currency: "eur" })
      yield* Effect.addFinalizer(() => Effect.sync(() => client.close()))
      const seen: Array<MarketEvent> = []
      client.onMarket((event) => seen.push(event))
      yield* eventually("the eur welcome over the stream", () => seen.length === 1)
      expect(client.status()).toMatchObject({ state: "live", transport: "sse" })
      expect(seen[0]).toMatchObject({ currency: "eur", seq: 1, source: "welcome" })
      expect(server.server.streams()).toBe(1)
      expect(server.server.connections()).toBe(0)

      yield* server.market.succeed(watchlistView(assets, ["usd", "eur"], { scale: 1.01 }))
      yield* server.updater.forceUpdate()
      yield* eventually("the force update", () => seen.length === 2)
      const next = yield* server.awaitSeq(2)
      expect(seen[1]).toMatchObject({ currency: "eur", seq: 2, source: "force_update" })
      expect(seen[1]?.assets.map((a) => a.price)).toEqual(assets.map((id) => next.view.quotes["eur"]?.[id]?.price))

      client.setCurrency("usd")
      yield* eventually("the usd welcome", () => seen.length === 3)
      expect(seen[2]).toMatchObject({ currency: "usd", seq: 2, source: "welcome" })
      expect(client.currency()).toBe("usd")
      yield* eventually("one stream left", () => server.server.streams() === 1)
    }))
})

describe("DashcastClient: alerts and frames of types it does not know", () => {
  const alert = (extra: Record<string, unknown> = {}) => ({
    type: "alert",
    id: "msg_0a1b_8",
    alert_id: "alr_0a1b",
    asset: "bitcoin",
    currency: "usd",
    condition: "price_above",
    threshold: 70_000,
    value: 70_123.45,
    seq: 8,
    timestamp: "2025-08-20T12:01:00.000Z",
    ...extra
  })

  it.effect("onAlert gets every firing in the client's currency; alerts are neither market events nor errors", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(5_000_000)
      const t = yield* start({ currency: "usd" })
      const alerts: Array<AlertEvent> = []
      const stop = t.client.onAlert((event) => alerts.push(event))
      t.last().accept()
      t.last().push(welcome(7, 69_000))
      t.last().push(alert())
      t.last().push(alert({ id: "msg_ffff_8", currency: "eur" }))
      t.last().push(alert({ id: "msg_fg_8", alert_id: "alr_fg", asset: null, condition: "fear_greed_below", threshold: 25, value: 21 }))
      t.last().push(update(8, 70_123.45))
      yield* settle
      expect(alerts).toEqual([
        {
          id: "msg_0a1b_8",
          alertId: "alr_0a1b",
          asset: "bitcoin",
          currency: "usd",
          condition: "price_above",
          threshold: 70_000,
          value: 70_123.45,
          seq: 8,
          firedAt: Date.parse("2025-08-20T12:01:00.000Z"),
          receivedAt: 5_000_000
        },
        expect.objectContaining({ id: "msg_fg_8", asset: null, condition: "fear_greed_below" })
      ])
      // The update after it is the next seq: an alert is no gap, no market event, no error.
      expect(t.markets.map((m) => m.seq)).toEqual([7, 8])
      expect(t.last().sentTypes()).toEqual([])
      expect(t.client.status().lastError).toBeUndefined()
      stop()
      t.last().push(alert({ id: "msg_0a1b_9", seq: 9 }))
      yield* settle
      expect(alerts.length).toBe(2)
      t.client.close()
    }))

  it.effect("ignores a frame of a type it does not know (a newer server), and still reports a frame of a known type that breaks the protocol", () =>
    Effect.gen(function*() {
      const t = yield* start()
      t.last().accept()
      t.last().push(welcome(1, 100))
      t.last().push({ type: "headline", text: "a newer server's message", seq: 2 })
      t.last().push(update(2, 101))
      yield* settle
      expect(t.markets.map((m) => m.seq)).toEqual([1, 2])
      expect(t.client.status().lastError).toBeUndefined()
      expect(t.last().sentTypes()).toEqual([])
      t.last().push({ type: "dashboard_update", seq: "three" })
      yield* settle
      expect(t.client.status().lastError).toMatch(/^unreadable frame from the server/)
      expect(t.client.status().state).toBe("live")
      t.client.close()
    }))
})
