/**
 * The typed client of dashcast's WebSocket protocol, for the dashboard page, Bun and Node (any
 * global or given `WebSocket`). Frames are decoded with the server's own Schemas. It reconnects
 * forever with capped exponential backoff and full jitter, pings to notice a dead connection, asks
 * for the latest summary after a `seq` gap, and in a browser holds its work while the tab is hidden
 * and resyncs when it shows again. Where the WebSocket cannot be opened (a proxy that refuses the
 * upgrade, or closes it before the welcome) it falls back to the same frames as Server-Sent Events
 * (`GET /api/stream`, with `EventSource` or, in Bun and Node, a reader on `fetch`), and tries the
 * WebSocket again now and then; `status().transport` says which one is live.
 *
 * ```ts
 * const client = connect("wss://dash.example.com/ws")
 * client.onSummary(({ summary, seq }) => console.log(seq, summary.btc_price))
 * client.onStatus((status) => console.log(status.state, status.upstream?.retryAfter))
 * // later
 * client.close()
 *
 * // The whole watchlist, in euros, switching to dollars later without reconnecting.
 * const watch = connect("wss://dash.example.com/ws", { currency: "eur" })
 * watch.onMarket(({ currency, assets }) => console.log(currency, assets.map((a) => `${a.symbol} ${a.price}`)))
 * watch.setCurrency("usd")
 *
 * // Alert rules firing in the client's currency (rules are made over the admin API).
 * watch.onAlert(({ asset, condition, threshold, value }) => console.log(`${asset} ${condition} ${threshold}: ${value}`))
 * ```
 *
 * The timing rules are pure functions (`backoffDelay`, `heartbeatStep`, `classifySeq`) and the
 * client itself is one Effect fiber reading `Clock` and `Random`, so tests drive it with `TestClock`
 * and a seeded `Random` instead of real time.
 */
import { Clock, Effect, Either, Option, Queue, Random } from "effect"
import type { DashboardSummary, SummaryField } from "../market/DashboardSummary.js"
import { decodeServerMessage, ServerMessage, type UpdateSource } from "../realtime/Protocol.js"
import { FetchHttpClient, HttpApiClient } from "@effect/platform"
import type { HistoryRange, HistoryResponse, SparklinesResponse } from "../history/HistoryPoint.js"
import { DashcastApi } from "../http/DashcastApi.js"
import type { AssetQuote, MarketSide } from "../market/Watchlist.js"
import type { Condition } from "../alerts/AlertRule.js"
import { COMMENT_EVENT, FetchEventSource, type StreamEvent } from "./FetchEventSource.js"

// ---------------------------------------------------------------------------------------------
// Public types

export type ConnectionState = "connecting" | "live" | "reconnecting" | "offline"

/** How the client is connected: a WebSocket, or Server-Sent Events (`GET /api/stream`) where WebSockets are blocked. */
export type Transport = "websocket" | "sse"

/** An upstream failure the server reported: its text and the seconds until its next attempt. */
export interface UpstreamProblem {
  readonly error: string
  /** Seconds until the server tries upstream again, counted from `receivedAt`. */
  readonly retryAfter: number | undefined
  readonly receivedAt: number
}

export interface DashcastStatus {
  readonly state: ConnectionState
  /** Failed connection attempts in a row (what the backoff is at); 0 while connected. */
  readonly attempt: number
  /** When the next connection attempt is due (epoch ms), while waiting to reconnect. */
  readonly reconnectAt: number | undefined
  /** Why the last connection failed or what the server last refused, if anything. */
  readonly lastError: string | undefined
  /** Set while the server reports that upstream fails; cleared by the next new summary. */
  readonly upstream: UpstreamProblem | undefined
  /** The transport of the live connection, or of the attempt in progress or due next. */
  readonly transport: Transport
}

export interface SummaryEvent {
  readonly summary: DashboardSummary
  readonly seq: number
  readonly source: "welcome" | UpdateSource
  /** The server marked the summary stale, or some fields kept their last good value. */
  readonly stale: boolean
  readonly staleFields: ReadonlyArray<SummaryField>
  /** When this client received it (epoch ms, this machine's clock). */
  readonly receivedAt: number
  /** When the server fetched it, on this machine's clock (a welcome says how old it is). */
  readonly fetchedAt: number
}

/**
 * Everything a welcome or an update says, in the client's currency: every watched asset, the
 * market, and the seed's `summary` of bitcoin when the server has it.
 */
export interface MarketEvent {
  readonly currency: string
  readonly assets: ReadonlyArray<AssetQuote>
  readonly market: MarketSide
  readonly summary: DashboardSummary | undefined
  readonly seq: number
  readonly source: "welcome" | UpdateSource
  /** The server marked the snapshot old, or some values kept their last good value. */
  readonly stale: boolean
  /** The seed's names of `summary`'s fields that are stale. */
  readonly staleFields: ReadonlyArray<SummaryField>
  /** Paths of every stale value (`assets.ethereum.rsi_14`, `currencies.eur`, `market.fear_greed_index`). */
  readonly stalePaths: ReadonlyArray<string>
  readonly receivedAt: number
  readonly fetchedAt: number
}

/** An alert rule fired in the client's currency (docs/ARCHITECTURE.md, "Alerts"). */
export interface AlertEvent {
  /** The firing's id: its webhook's `webhook-id`. */
  readonly id: string
  /** The rule's id. */
  readonly alertId: string
  /** `null` for Fear & Greed rules. */
  readonly asset: string | null
  readonly currency: string
  readonly condition: Condition
  readonly threshold: number
  /** The value that crossed the threshold. */
  readonly value: number
  /** The snapshot it fired on. */
  readonly seq: number
  /** The snapshot's time (epoch ms). */
  readonly firedAt: number
  readonly receivedAt: number
}

/** The part of `WebSocket` the client uses: the browser's, Bun's, Node 22's or the `ws` package's. */
export interface WebSocketLike {
  readonly readyState: number
  send(data: string): void
  close(code?: number, reason?: string): void
  addEventListener(type: "open" | "error", listener: () => void): void
  addEventListener(type: "message", listener: (event: { readonly data: unknown }) => void): void
  addEventListener(type: "close", listener: (event: { readonly code: number; readonly reason: string }) => void): void
}

export type WebSocketConstructor = new (url: string) => WebSocketLike

/**
 * The part of `EventSource` the client uses: the browser's, or `FetchEventSource` elsewhere. Named
 * events carry `data`; `open` and a connection failure (an `error` without `data`) do not.
 */
export interface EventSourceLike {
  readonly readyState: number
  close(): void
  addEventListener(type: string, listener: (event: { readonly data?: unknown }) => void): void
}

export type EventSourceConstructor = new (url: string) => EventSourceLike

/** What the page tells the client: whether it is hidden and whether the device is offline. */
export interface PageSignals {
  readonly hidden: () => boolean
  readonly offline: () => boolean
  /** Calls `onChange` when either may have changed; returns the function that unsubscribes. */
  readonly subscribe: (onChange: () => void) => () => void
}

export interface ConnectOptions {
  /** First reconnect delay bound in ms (full jitter: the delay is random in [0, bound]); 1,000. */
  readonly initialDelay?: number
  /** Largest reconnect delay bound in ms; 30,000. */
  readonly maxDelay?: number
  /** A ping is sent this often while connected (ms); 15,000. */
  readonly pingInterval?: number
  /** With no frame at all for this long (ms) the connection is dead and replaced; 40,000. */
  readonly deadAfter?: number
  /** A connection that has not opened after this long (ms) is abandoned; 10,000. */
  readonly connectTimeout?: number
  /** After this many failed attempts in a row the state is `offline` (still retrying); 5. */
  readonly offlineAfter?: number
  /** The WebSocket implementation; the global one by default (Node 20: pass `ws`). */
  readonly WebSocket?: WebSocketConstructor
  /** Visibility and network signals; the document's in a browser, none elsewhere. */
  readonly signals?: PageSignals
  /** The currency to ask for (`?currency=` on the socket URL); the server's first by default. */
  readonly currency?: string
  /**
   * `auto` (default): the WebSocket, falling back to Server-Sent Events where it cannot be opened;
   * `websocket` or `sse`: only that one.
   */
  readonly transports?: "auto" | "websocket" | "sse"
  /** WebSocket attempts in a row that end before the server's first frame, before switching to SSE; 1. */
  readonly fallbackAfter?: number
  /** While on SSE, the WebSocket is tried again after this long (ms), doubling up to 30 minutes while it fails; 30,000. */
  readonly webSocketRetry?: number
  /** The stream URL; by default the socket URL's `/ws` as `/api/stream` over http(s) (see `dashboardStreamUrl`). */
  readonly streamUrl?: string
  /** The `EventSource` implementation; the global one in browsers, `FetchEventSource` elsewhere. */
  readonly EventSource?: EventSourceConstructor
}

export interface DashcastClient {
  /** Calls `listener` with every new snapshot in the client's currency (and at once with the latest); returns unsubscribe. */
  readonly onMarket: (listener: (event: MarketEvent) => void) => () => void
  /** Calls `listener` with every new bitcoin summary (and at once with the latest one); returns unsubscribe. */
  readonly onSummary: (listener: (event: SummaryEvent) => void) => () => void
  /**
   * Calls `listener` with every alert firing in the client's currency, as it arrives (also while
   * the page is hidden; firings are not replayed to a listener added later); returns unsubscribe.
   */
  readonly onAlert: (listener: (event: AlertEvent) => void) => () => void
  /** Calls `listener` on every status change (and at once with the current one); returns unsubscribe. */
  readonly onStatus: (listener: (status: DashcastStatus) => void) => () => void
  readonly status: () => DashcastStatus
  /** The newest bitcoin summary (events without the seed's `data` leave it as it was). */
  readonly latest: () => SummaryEvent | undefined
  /** The newest snapshot in the client's currency. */
  readonly latestMarket: () => MarketEvent | undefined
  /**
   * The currency of the events: the one asked for (`undefined`, the server's default, until the
   * first frame names it); after `setCurrency`, the new one once its welcome has arrived.
   */
  readonly currency: () => string | undefined
  /**
   * Switches to another of the server's currencies without reconnecting; the next event is its
   * welcome. A currency the server refuses (an `error` frame, in `status().lastError`) leaves the
   * client in the currency it had.
   */
  readonly setCurrency: (currency: string) => void
  /** Asks the server for the latest summary (ignored while not connected, and over SSE, which always sends the latest). */
  readonly requestUpdate: () => void
  /** Closes the connection for good; no more callbacks are made. */
  readonly close: () => void
}

// ---------------------------------------------------------------------------------------------
// Pure timing rules

export interface BackoffPolicy {
  readonly initialDelay: number
  readonly maxDelay: number
}

/**
 * The delay before reconnect attempt `attempt` (1 for the first retry): "full jitter", a uniform
 * draw in [0, min(maxDelay, initialDelay * 2^(attempt-1))), with `random` in [0, 1). Spreading the
 * whole range keeps a thousand dashboards from reconnecting in step after a server restart.
 */
export const backoffDelay = (attempt: number, policy: BackoffPolicy, random: number): number => {
  const exponent = Math.min(Math.max(attempt, 1) - 1, 30)
  const bound = Math.min(policy.maxDelay, policy.initialDelay * 2 ** exponent)
  return Math.floor(Math.min(Math.max(random, 0), 1) * bound)
}

export interface HeartbeatPolicy {
  readonly pingInterval: number
  readonly deadAfter: number
}

export type HeartbeatStep =
  | { readonly _tag: "Dead"; readonly silentFor: number }
  | { readonly _tag: "Ping" }
  | { readonly _tag: "Wait"; readonly until: number }

/** What the heartbeat does at `now`: give up on a silent connection, ping, or wait until when. */
export const heartbeatStep = (
  now: number,
  lastFrameAt: number,
  lastPingAt: number,
  policy: HeartbeatPolicy
): HeartbeatStep => {
  if (now - lastFrameAt >= policy.deadAfter) return { _tag: "Dead", silentFor: now - lastFrameAt }
  if (now - lastPingAt >= policy.pingInterval) return { _tag: "Ping" }
  return { _tag: "Wait", until: Math.min(lastPingAt + policy.pingInterval, lastFrameAt + policy.deadAfter) }
}

/**
 * How an update's `seq` relates to the last one applied: the next one, one after a gap (some were
 * missed), or a duplicate / older one to ignore. The first update of a connection always applies.
 */
export type SeqOrder = "first" | "next" | "gap" | "old"

export const classifySeq = (last: number | undefined, seq: number): SeqOrder =>
  last === undefined ? "first" : seq === last + 1 ? "next" : seq > last ? "gap" : "old"

// ---------------------------------------------------------------------------------------------
// Helpers for pages and programs

/** `ws(s)://host/ws` for a page or server address such as `location.href` or `http://host:8080/`. */
export const dashboardSocketUrl = (base: string | URL, currency?: string): string => {
  const url = new URL("/ws", base)
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:"
  if (currency !== undefined) url.searchParams.set("currency", currency)
  return url.href
}

/**
 * The event stream's URL for a socket URL: `ws(s)://host/path/ws?…` becomes
 * `http(s)://host/path/api/stream?…` (the query, with its currency, is kept).
 */
export const dashboardStreamUrl = (socketUrl: string): string => {
  if (!URL.canParse(socketUrl)) return socketUrl
  const url = new URL(socketUrl)
  url.protocol = url.protocol === "wss:" || url.protocol === "https:" ? "https:" : "http:"
  url.pathname = url.pathname.replace(/\/ws\/?$/, "") + "/api/stream"
  return url.href
}

/** The socket URL with `currency` asked for, replacing one already there. */
const withCurrency = (url: string, currency: string | undefined): string => {
  if (currency === undefined || !URL.canParse(url)) return url
  const parsed = new URL(url)
  parsed.searchParams.set("currency", currency)
  return parsed.href
}

/**
 * The server's HTTP API, typed by its own declarations (`DashcastApi`): `client.dashboard({ urlParams:
 * { currency } })`, `client.assets()`, `client.history()`, `client.refresh()`. Errors are the declared
 * ones (`BadRequest`, `Unavailable`, …), decoded like the successes.
 */
export const apiClient = (base: string | URL) => HttpApiClient.make(DashcastApi, { baseUrl: new URL("/", base).href })

/** Runs a call of `apiClient(base)` with the platform's `fetch`, as a Promise (for pages and scripts). */
export const callApi = <A, E>(
  base: string | URL,
  call: (client: Effect.Effect.Success<ReturnType<typeof apiClient>>) => Effect.Effect<A, E>,
  init: { readonly signal?: AbortSignal } = {}
): Promise<A> =>
  Effect.runPromise(
    Effect.flatMap(apiClient(base), call).pipe(
      Effect.provide(FetchHttpClient.layer),
      Effect.provideService(FetchHttpClient.RequestInit, { cache: "no-store", ...(init.signal ? { signal: init.signal } : {}) })
    ),
    init.signal ? { signal: init.signal } : {}
  )

/** Which series `fetchHistory` asks for; the server's first asset, first currency and 24h by default. */
export interface HistoryQuery {
  readonly asset?: string
  readonly currency?: string
  readonly range?: HistoryRange
}

/**
 * `GET /api/history` of the server at `base`, decoded: one asset's `[epoch ms, price]` points in
 * one currency over a range, oldest first. An unknown asset, currency or range is a `BadRequest`.
 */
export const fetchHistory = (
  base: string | URL,
  query: HistoryQuery = {},
  init: { readonly signal?: AbortSignal } = {}
): Promise<HistoryResponse> => callApi(base, (client) => client.history({ urlParams: query }), init)

/** `GET /api/sparklines` of the server at `base`: every watched asset's last 24 hours in `currency`, hourly. */
export const fetchSparklines = (
  base: string | URL,
  currency?: string,
  init: { readonly signal?: AbortSignal } = {}
): Promise<SparklinesResponse> =>
  callApi(base, (client) => client.sparklines({ urlParams: currency === undefined ? {} : { currency } }), init)

/** The document's visibility and the navigator's network state; `undefined` outside a browser. */
export const browserSignals = (): PageSignals | undefined => {
  if (typeof document === "undefined" || typeof window === "undefined") return undefined
  return {
    hidden: () => document.visibilityState === "hidden",
    offline: () => typeof navigator !== "undefined" && navigator.onLine === false,
    subscribe: (onChange) => {
      document.addEventListener("visibilitychange", onChange)
      window.addEventListener("online", onChange)
      window.addEventListener("offline", onChange)
      return () => {
        document.removeEventListener("visibilitychange", onChange)
        window.removeEventListener("online", onChange)
        window.removeEventListener("offline", onChange)
      }
    }
  }
}

const ALWAYS_VISIBLE: PageSignals = { hidden: () => false, offline: () => false, subscribe: () => () => {} }

// ---------------------------------------------------------------------------------------------
// The client

const DEFAULTS = {
  initialDelay: 1_000,
  maxDelay: 30_000,
  pingInterval: 15_000,
  deadAfter: 40_000,
  connectTimeout: 10_000,
  offlineAfter: 5,
  fallbackAfter: 1,
  webSocketRetry: 30_000
}
/** A connection that stayed up this long counts as healthy: the next failure starts backoff over. */
const STABLE_AFTER = 5_000
const OPEN = 1
/** Close code the client uses for a connection it gives up on (4000-4999 are the application's). */
const HEARTBEAT_CLOSE = 4000

type Signal =
  | { readonly _tag: "Opened"; readonly id: number }
  | { readonly _tag: "Frame"; readonly id: number; readonly data: unknown }
  | { readonly _tag: "SocketClosed"; readonly id: number; readonly code: number; readonly reason: string }
  | { readonly _tag: "SocketError"; readonly id: number }
  /** An event stream failed or ended (an `error` event without data). */
  | { readonly _tag: "StreamFailed"; readonly id: number }
  /** A comment line (heartbeat) on an event stream. */
  | { readonly _tag: "StreamAlive"; readonly id: number }
  | { readonly _tag: "PageChanged" }
  | { readonly _tag: "RequestUpdate" }
  | { readonly _tag: "SetCurrency"; readonly currency: string }
  | { readonly _tag: "Close" }

/** One connection attempt of either transport: what the client needs of it. */
interface Link {
  readonly id: number
  readonly transport: Transport
  /** Sends a client frame (a WebSocket that is open; nothing over SSE). */
  readonly send: (text: string) => void
  readonly close: (code?: number, reason?: string) => void
}

/** A WebSocket tried in the background while the client is live on SSE. */
interface Probe {
  readonly link: Link
  readonly startedAt: number
  readonly asked: string | undefined
}

type Phase =
  | {
    readonly _tag: "Connecting"
    readonly link: Link
    readonly startedAt: number
    /** The currency this connection's URL asked for. */
    readonly asked: string | undefined
  }
  | {
    readonly _tag: "Open"
    readonly link: Link
    readonly openedAt: number
    readonly lastFrameAt: number
    readonly lastPingAt: number
    /** Whether the server has sent a frame on this connection (a connection closed before it is a failed attempt). */
    readonly greeted: boolean
    /** SSE: whether the stream reports its heartbeats (`FetchEventSource` does; a browser's `EventSource` hides them). */
    readonly heartbeats: boolean
    /** SSE in `auto` mode: the WebSocket tried in the background, or when the next try is due. */
    readonly probe: Probe | undefined
    readonly probeAt: number
  }
  | { readonly _tag: "Waiting"; readonly until: number }
  | { readonly _tag: "Closed" }

/** One welcome or update, as both events: every snapshot is a market event, one with `data` also a summary. */
interface Received {
  readonly market: MarketEvent
  readonly summary: SummaryEvent | undefined
}

/** Every frame type the server sends: the event names of the stream, one listener each. */
const FRAME_TYPES: ReadonlyArray<string> = ServerMessage.members.map((member) => member.fields.type.literals[0])
/** The longest wait between WebSocket retries while on SSE. */
const MAX_WEBSOCKET_RETRY = 30 * 60_000
/** The server message types this client reads; a frame of any other type is ignored. */
const KNOWN_TYPES: ReadonlySet<string> = new Set(FRAME_TYPES)

/** The `type` of a JSON frame, if it has one. */
const typeOf = (frame: string): string | undefined => {
  try {
    const json: unknown = JSON.parse(frame)
    return typeof json === "object" && json !== null && "type" in json && typeof json.type === "string" ? json.type : undefined
  } catch {
    return undefined
  }
}

const PING = JSON.stringify({ type: "ping" })
const REQUEST_UPDATE = JSON.stringify({ type: "request_update" })
const subscribeFrame = (currency: string) => JSON.stringify({ type: "subscribe", currency })

const report = (error: unknown) => {
  if (typeof reportError === "function") reportError(error)
  else console.error(error)
}

/** Calls each listener, keeping one listener's exception from stopping the others or the client. */
const notify = <A>(listeners: ReadonlySet<(a: A) => void>, value: A) => {
  for (const listener of [...listeners]) {
    try {
      listener(value)
    } catch (error) {
      report(error)
    }
  }
}

/**
 * The client without a runtime: its API and the Effect that runs it. `connect` forks `run` on the
 * default runtime; tests fork it under `TestClock` with a seeded `Random` and a fake `WebSocket`.
 * `run` ends after `close()`.
 */
export const makeDashcastClient = (url: string, options: ConnectOptions = {}): { readonly client: DashcastClient; readonly run: Effect.Effect<void> } => {
  const settings = {
    initialDelay: options.initialDelay ?? DEFAULTS.initialDelay,
    maxDelay: options.maxDelay ?? DEFAULTS.maxDelay,
    pingInterval: options.pingInterval ?? DEFAULTS.pingInterval,
    deadAfter: options.deadAfter ?? DEFAULTS.deadAfter,
    connectTimeout: options.connectTimeout ?? DEFAULTS.connectTimeout,
    offlineAfter: options.offlineAfter ?? DEFAULTS.offlineAfter,
    fallbackAfter: Math.max(1, options.fallbackAfter ?? DEFAULTS.fallbackAfter),
    webSocketRetry: options.webSocketRetry ?? DEFAULTS.webSocketRetry
  }
  const transports = options.transports ?? "auto"
  const streamUrl = options.streamUrl ?? dashboardStreamUrl(url)
  const signals = options.signals ?? browserSignals() ?? ALWAYS_VISIBLE
  const inbox = Effect.runSync(Queue.unbounded<Signal>())
  const offer = (signal: Signal) => {
    Queue.unsafeOffer(inbox, signal)
  }
  const summaryListeners = new Set<(event: SummaryEvent) => void>()
  const marketListeners = new Set<(event: MarketEvent) => void>()
  const statusListeners = new Set<(status: DashcastStatus) => void>()
  const alertListeners = new Set<(event: AlertEvent) => void>()

  let status: DashcastStatus = {
    state: "connecting",
    attempt: 0,
    reconnectAt: undefined,
    lastError: undefined,
    upstream: undefined,
    transport: transports === "sse" ? "sse" : "websocket"
  }
  let latest: Received | undefined
  /** The newest summary, which an event without the seed's data leaves as it was. */
  let latestSummary: SummaryEvent | undefined
  /** The newest snapshot (and summary) received while the page was hidden, delivered when it shows again. */
  let held: Partial<Received> = {}
  /** The currency of the frames applied (asked for, until a frame names it). */
  let currency = options.currency ?? (URL.canParse(url) ? new URL(url).searchParams.get("currency") ?? undefined : undefined)
  /** A currency asked for with `setCurrency` whose welcome has not arrived yet. */
  let switchingTo: string | undefined
  let lastSeq: number | undefined
  let phase: Phase = { _tag: "Waiting", until: Number.NEGATIVE_INFINITY }
  let hidden = signals.hidden()
  let offline = signals.offline()
  let nextSocketId = 1
  let closed = false
  /** Failed attempts since the last connection that stayed up for `STABLE_AFTER`: drives backoff. */
  let failures = 0
  /** The transport of the next attempt. */
  let transport: Transport = status.transport
  /** WebSocket attempts in a row that ended before the server's first frame. */
  let webSocketMisses = 0
  /** While on SSE: how long after a failed WebSocket try the next one is made. */
  let webSocketRetry = settings.webSocketRetry

  const setStatus = (next: Partial<DashcastStatus>) => {
    const merged: DashcastStatus = { ...status, ...next }
    if (
      merged.state === status.state && merged.attempt === status.attempt && merged.reconnectAt === status.reconnectAt &&
      merged.lastError === status.lastError && merged.upstream === status.upstream && merged.transport === status.transport
    ) return
    status = merged
    if (!closed) notify(statusListeners, status)
  }

  const disconnectedState = (attempt: number): ConnectionState =>
    offline || attempt >= settings.offlineAfter ? "offline" : attempt === 0 ? "connecting" : "reconnecting"

  const publish = (received: Partial<Received>) => {
    if (received.market !== undefined) notify(marketListeners, received.market)
    if (received.summary !== undefined) notify(summaryListeners, received.summary)
  }

  const deliver = (received: Received) => {
    if (latest !== undefined && latest.market.currency !== received.market.currency) {
      // Another currency: a summary of the one before is no longer the latest of anything.
      latestSummary = undefined
      held = {}
    }
    latest = received
    latestSummary = received.summary ?? latestSummary
    if (hidden) held = { market: received.market, summary: received.summary ?? held.summary }
    else publish(received)
  }

  const send = (text: string) => {
    if (phase._tag === "Open") phase.link.send(text)
  }

  /** Opens a connection of `kind` asking for `asked`; its events come back as signals with its id. */
  const openLink = (kind: Transport, asked: string | undefined): Link => {
    const id = nextSocketId++
    return kind === "websocket" ? openWebSocket(id, asked) : openEventStream(id, asked)
  }

  const openWebSocket = (id: number, asked: string | undefined): Link => {
    // Typed as always there, but Node 20 has no global WebSocket.
    const Ctor: WebSocketConstructor | undefined = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket
    if (Ctor === undefined) throw new Error("no WebSocket implementation: pass options.WebSocket")
    const socket = new Ctor(withCurrency(url, asked))
    socket.addEventListener("open", () => offer({ _tag: "Opened", id }))
    socket.addEventListener("message", (event: { readonly data: unknown }) => offer({ _tag: "Frame", id, data: event.data }))
    socket.addEventListener("close", (event: { readonly code: number; readonly reason: string }) =>
      offer({ _tag: "SocketClosed", id, code: event.code, reason: event.reason }))
    socket.addEventListener("error", () => offer({ _tag: "SocketError", id }))
    return {
      id,
      transport: "websocket",
      send: (text) => {
        if (socket.readyState === OPEN) socket.send(text)
      },
      close: (code, reason) => {
        try {
          socket.close(code, reason)
        } catch {
          // Already closed, or a code the implementation refuses: either way it is gone for us.
        }
      }
    }
  }

  const openEventStream = (id: number, asked: string | undefined): Link => {
    const Ctor: EventSourceConstructor = options.EventSource ??
      (globalThis as { EventSource?: EventSourceConstructor }).EventSource ?? FetchEventSource
    const source = new Ctor(withCurrency(streamUrl, asked))
    source.addEventListener("open", () => offer({ _tag: "Opened", id }))
    // The stream names each event after its frame's type. A frame named `error` and the source's own
    // failure share that name; only the frame has data.
    for (const type of FRAME_TYPES) {
      source.addEventListener(type, (event: { readonly data?: unknown }) => {
        if (typeof event.data === "string") offer({ _tag: "Frame", id, data: event.data })
        else if (type === "error") offer({ _tag: "StreamFailed", id })
      })
    }
    if (!FRAME_TYPES.includes("error")) source.addEventListener("error", () => offer({ _tag: "StreamFailed", id }))
    source.addEventListener(COMMENT_EVENT, (_event: StreamEvent | { readonly data?: unknown }) => offer({ _tag: "StreamAlive", id }))
    return {
      id,
      transport: "sse",
      // No channel to the server: its stream always carries the latest, and switching currency reconnects.
      send: () => {},
      close: () => source.close()
    }
  }

  const closeProbe = () => {
    if (phase._tag === "Open" && phase.probe !== undefined) {
      phase.probe.link.close(1000, "client closed")
      phase = { ...phase, probe: undefined }
    }
  }

  const openSocket = (now: number) =>
    Effect.gen(function*() {
      const asked = switchingTo ?? currency
      let link: Link
      try {
        link = openLink(transport, asked)
      } catch (error) {
        // A malformed URL or no WebSocket at all: reported as the attempt's error, retried like one.
        return yield* fail(now, `cannot open ${transport === "sse" ? streamUrl : url}: ${error instanceof Error ? error.message : String(error)}`)
      }
      phase = { _tag: "Connecting", link, startedAt: now, asked }
      setStatus({ state: disconnectedState(failures), reconnectAt: undefined, transport })
    })

  /**
   * A connection ended or never started: wait a backoff delay before the next attempt. Only a
   * connection that stayed up for a while starts backoff over, so a server that accepts and drops
   * at once is not hammered. In `auto` mode, a WebSocket that ended before the server's first frame
   * counts toward the fallback: at `fallbackAfter` of them in a row the next attempt is an event
   * stream, made at once (the server answered; only the WebSocket did not get through), and not
   * counted as a failure. An event stream that fails before its first event means the server is
   * unreachable, so the next attempt tries the WebSocket first again.
   */
  const fail = (now: number, why: string) =>
    Effect.gen(function*() {
      const current = phase._tag === "Open" || phase._tag === "Connecting" ? phase : undefined
      const stable = phase._tag === "Open" && now - phase.openedAt >= STABLE_AFTER
      const greeted = phase._tag === "Open" && phase.greeted
      closeProbe()
      current?.link.close()
      let switchNow = false
      if (transports === "auto" && current !== undefined && !greeted) {
        if (current.link.transport === "websocket") {
          webSocketMisses++
          if (webSocketMisses >= settings.fallbackAfter) {
            transport = "sse"
            switchNow = true
          }
        } else {
          transport = "websocket"
          webSocketMisses = 0
        }
      }
      const delay = backoffDelay(stable ? 1 : failures + 1, settings, yield* Random.next)
      if (switchNow) {
        phase = { _tag: "Waiting", until: now }
        setStatus({ state: disconnectedState(failures), attempt: failures, reconnectAt: now, lastError: why, transport })
        return
      }
      failures = stable ? 1 : failures + 1
      phase = { _tag: "Waiting", until: now + delay }
      setStatus({ state: disconnectedState(failures), attempt: failures, reconnectAt: now + delay, lastError: why, transport })
    })

  /** The WebSocket tried while on SSE failed: keep the stream, try again later (twice as late). */
  const probeFailed = (now: number) => {
    if (phase._tag !== "Open" || phase.probe === undefined) return
    phase.probe.link.close()
    webSocketRetry = Math.min(webSocketRetry * 2, MAX_WEBSOCKET_RETRY)
    phase = { ...phase, probe: undefined, probeAt: now + webSocketRetry }
  }

  /** The WebSocket tried while on SSE has greeted us: it takes over, and the stream is closed. */
  const promoteProbe = (now: number, probe: Probe) => {
    if (phase._tag !== "Open") return
    phase.link.close()
    transport = "websocket"
    webSocketMisses = 0
    webSocketRetry = settings.webSocketRetry
    phase = { _tag: "Open", link: probe.link, openedAt: now, lastFrameAt: now, lastPingAt: now, greeted: true, heartbeats: false, probe: undefined, probeAt: Number.POSITIVE_INFINITY }
    setStatus({ state: "live", attempt: 0, reconnectAt: undefined, lastError: undefined, transport })
    if (switchingTo !== undefined && switchingTo !== probe.asked) send(subscribeFrame(switchingTo))
  }

  const onFrame = (now: number, data: unknown) => {
    if (typeof data !== "string") return
    const decoded = decodeServerMessage(data)
    if (Either.isLeft(decoded)) {
      // A type this client does not know yet (a newer server): ignored, as the protocol says.
      const type = typeOf(data)
      if (type !== undefined && !KNOWN_TYPES.has(type)) return
      setStatus({ lastError: `unreadable frame from the server: ${decoded.left.message.slice(0, 200)}` })
      return
    }
    onMessage(now, decoded.right)
  }

  /**
   * A frame as both events. `stale` is the welcome's own flag (an old snapshot, or any stale value
   * of its currency, as the server sets it); an update's summary is stale only for its own fields,
   * so that another asset's stale value does not mark bitcoin's summary.
   */
  const receivedOf = (
    message: Extract<ServerMessage, { type: "welcome" | "dashboard_update" }>,
    source: MarketEvent["source"],
    stale: boolean,
    receivedAt: number,
    fetchedAt: number
  ): Received => {
    const staleFields = message.stale_fields ?? []
    const stalePaths = message.stale_paths ?? []
    const market: MarketEvent = {
      currency: message.currency,
      assets: message.assets,
      market: message.market,
      summary: message.data,
      seq: message.seq,
      source,
      stale: stale || staleFields.length > 0 || stalePaths.length > 0,
      staleFields,
      stalePaths,
      receivedAt,
      fetchedAt
    }
    const summary: SummaryEvent | undefined = message.data === undefined ? undefined : {
      summary: message.data,
      seq: message.seq,
      source,
      stale: stale || staleFields.length > 0,
      staleFields,
      receivedAt,
      fetchedAt
    }
    return { market, summary }
  }

  const onMessage = (now: number, message: ServerMessage) => {
    switch (message.type) {
      case "welcome": {
        // A new connection or currency: whatever it says is the server's current state (a restarted
        // server without a persistent cache may even start its sequence again).
        if (message.currency === switchingTo) switchingTo = undefined
        else if (currency !== undefined && message.currency !== currency) return
        currency = message.currency
        lastSeq = message.seq
        if (!message.stale) setStatus({ upstream: undefined })
        deliver(receivedOf(message, "welcome", message.stale, now, now - message.age_seconds * 1000))
        return
      }
      case "dashboard_update": {
        if (message.currency === switchingTo) {
          // Switched, but the server had no data for a welcome: this update is the first in the new currency.
          switchingTo = undefined
          currency = message.currency
          lastSeq = undefined
        } else if (switchingTo !== undefined) {
          // The old currency's last frames, on their way before the server switched.
          return
        } else {
          // Without a welcome yet (the server had no data when this socket connected), the first
          // update names the server's default currency.
          currency ??= message.currency
          if (message.currency !== currency) return
        }
        const order = classifySeq(lastSeq, message.seq)
        if (order === "old") return
        lastSeq = message.seq
        // Updates carry full snapshots, so the newest one is applied; the request makes sure
        // nothing newer was lost in the gap as well.
        if (order === "gap") send(REQUEST_UPDATE)
        setStatus({ upstream: undefined })
        deliver(receivedOf(message, message.source, false, now, now))
        return
      }
      case "error": {
        // The client only sends pings, update requests and subscriptions: an error without a retry
        // time while switching is the server refusing the currency (unknown, or not a currency).
        if (message.retry_after === undefined) {
          switchingTo = undefined
          setStatus({ lastError: `server: ${message.error}` })
        } else setStatus({ upstream: { error: message.error, retryAfter: message.retry_after, receivedAt: now } })
        return
      }
      case "pong":
        return
      case "alert": {
        // Frames of the topic this socket is on: its currency, or the one it is switching to.
        if (currency !== undefined && message.currency !== currency && message.currency !== switchingTo) return
        notify(alertListeners, {
          id: message.id,
          alertId: message.alert_id,
          asset: message.asset,
          currency: message.currency,
          condition: message.condition,
          threshold: message.threshold,
          value: message.value,
          seq: message.seq,
          firedAt: Date.parse(message.timestamp),
          receivedAt: now
        })
        return
      }
    }
  }

  const onPageChanged = (now: number) => {
    const wasHidden = hidden
    const wasOffline = offline
    hidden = signals.hidden()
    offline = signals.offline()
    if (phase._tag !== "Open" && offline !== wasOffline) setStatus({ state: disconnectedState(failures) })
    const shown = wasHidden && !hidden
    const backOnline = wasOffline && !offline
    if (phase._tag === "Open" && shown) {
      // Timers were paused while hidden: start the silence count again and catch up.
      phase = { ...phase, lastFrameAt: now, lastPingAt: now }
      const received = held
      held = {}
      publish(received)
      send(REQUEST_UPDATE)
    } else if (phase._tag === "Waiting" && !hidden && (shown || backOnline)) {
      phase = { _tag: "Waiting", until: now }
    }
  }

  /** The moment the current phase needs attention without any signal. */
  const deadline = (): number => {
    switch (phase._tag) {
      case "Connecting":
        return phase.startedAt + settings.connectTimeout
      case "Open": {
        if (hidden) return Number.POSITIVE_INFINITY
        if (phase.link.transport === "websocket") return Math.min(phase.lastPingAt + settings.pingInterval, phase.lastFrameAt + settings.deadAfter)
        const dead = phase.heartbeats ? phase.lastFrameAt + settings.deadAfter : Number.POSITIVE_INFINITY
        const probe = phase.probe === undefined ? phase.probeAt : phase.probe.startedAt + settings.connectTimeout
        return Math.min(dead, probe)
      }
      case "Waiting":
        return hidden ? Number.POSITIVE_INFINITY : phase.until
      case "Closed":
        return Number.POSITIVE_INFINITY
    }
  }

  const onTimer = (now: number) =>
    Effect.gen(function*() {
      switch (phase._tag) {
        case "Connecting":
          if (now >= phase.startedAt + settings.connectTimeout) {
            yield* fail(now, `no connection after ${Math.round(settings.connectTimeout / 1000)} s`)
          }
          return
        case "Open": {
          if (phase.link.transport === "sse") {
            // A stream whose heartbeats (every 15 s) stopped is dead; one that never showed them is
            // left to its EventSource to notice.
            if (phase.heartbeats && now - phase.lastFrameAt >= settings.deadAfter) {
              return yield* fail(now, `no heartbeat from the server for ${Math.round((now - phase.lastFrameAt) / 1000)} s`)
            }
            if (phase.probe !== undefined && now >= phase.probe.startedAt + settings.connectTimeout) probeFailed(now)
            else if (phase.probe === undefined && now >= phase.probeAt) {
              const asked = switchingTo ?? currency
              try {
                phase = { ...phase, probe: { link: openLink("websocket", asked), startedAt: now, asked } }
              } catch {
                phase = { ...phase, probeAt: Number.POSITIVE_INFINITY }
              }
            }
            return
          }
          const step = heartbeatStep(now, phase.lastFrameAt, phase.lastPingAt, settings)
          if (step._tag === "Dead") {
            phase.link.close(HEARTBEAT_CLOSE, "heartbeat timeout")
            yield* fail(now, `no frame from the server for ${Math.round(step.silentFor / 1000)} s`)
          } else if (step._tag === "Ping") {
            send(PING)
            phase = { ...phase, lastPingAt: now }
          }
          return
        }
        case "Waiting":
          if (now >= phase.until) yield* openSocket(now)
          return
        case "Closed":
          return
      }
    })

  /** The probe of the open stream that `id` belongs to, if any. */
  const probeOf = (id: number): Probe | undefined =>
    phase._tag === "Open" && phase.probe !== undefined && phase.probe.link.id === id ? phase.probe : undefined

  const isCurrent = (id: number): boolean => (phase._tag === "Open" || phase._tag === "Connecting") && phase.link.id === id

  /** Over SSE a stream's currency is fixed: a switch reconnects, at once and without counting as a failure. */
  const reconnectStream = (now: number) =>
    Effect.gen(function*() {
      closeProbe()
      if (phase._tag === "Open" || phase._tag === "Connecting") phase.link.close()
      yield* openSocket(now)
    })

  const onSignal = (now: number, signal: Signal) =>
    Effect.gen(function*() {
      switch (signal._tag) {
        case "Opened":
          if (phase._tag === "Connecting" && phase.link.id === signal.id) {
            const { asked, link } = phase
            phase = {
              _tag: "Open",
              link,
              openedAt: now,
              lastFrameAt: now,
              lastPingAt: now,
              greeted: false,
              heartbeats: false,
              probe: undefined,
              probeAt: transports === "auto" && link.transport === "sse" ? now + webSocketRetry : Number.POSITIVE_INFINITY
            }
            setStatus({ state: "live", attempt: 0, reconnectAt: undefined, lastError: undefined, transport: link.transport })
            // A currency chosen while this connection was opening, after its URL was made.
            if (switchingTo !== undefined && switchingTo !== asked) {
              if (link.transport === "websocket") send(subscribeFrame(switchingTo))
              else yield* reconnectStream(now)
            }
          }
          return
        case "Frame": {
          const probe = probeOf(signal.id)
          if (probe !== undefined) {
            promoteProbe(now, probe)
            onFrame(now, signal.data)
          } else if (phase._tag === "Open" && phase.link.id === signal.id) {
            if (!phase.greeted && phase.link.transport === "websocket") webSocketMisses = 0
            phase = { ...phase, lastFrameAt: now, greeted: true }
            onFrame(now, signal.data)
          }
          return
        }
        case "StreamAlive":
          if (phase._tag === "Open" && phase.link.id === signal.id) phase = { ...phase, lastFrameAt: now, heartbeats: true }
          return
        case "SocketClosed":
          if (probeOf(signal.id) !== undefined) probeFailed(now)
          else if (isCurrent(signal.id)) {
            const verb = phase._tag === "Open" ? "connection closed" : "could not connect"
            yield* fail(now, `${verb} (${signal.code}${signal.reason === "" ? "" : `: ${signal.reason}`})`)
          }
          return
        case "SocketError":
          if (probeOf(signal.id) !== undefined) probeFailed(now)
          else if (phase._tag === "Connecting" && phase.link.id === signal.id) yield* fail(now, "could not connect")
          return
        case "StreamFailed":
          if (isCurrent(signal.id)) yield* fail(now, phase._tag === "Open" ? "event stream closed" : "could not open the event stream")
          return
        case "PageChanged":
          onPageChanged(now)
          return
        case "RequestUpdate":
          send(REQUEST_UPDATE)
          return
        case "SetCurrency":
          if (signal.currency === (switchingTo ?? currency)) return
          switchingTo = signal.currency
          // Open: switch on this connection; otherwise the next connection asks for it in its URL
          // (or subscribes once open, if its URL was made before). A stream reconnects.
          if (phase._tag === "Open" && phase.link.transport === "sse") yield* reconnectStream(now)
          else send(subscribeFrame(signal.currency))
          return
        case "Close":
          closeProbe()
          if (phase._tag === "Open" || phase._tag === "Connecting") phase.link.close(1000, "client closed")
          phase = { _tag: "Closed" }
          return
      }
    })

  const run = Effect.gen(function*() {
    const unsubscribe = signals.subscribe(() => offer({ _tag: "PageChanged" }))
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        unsubscribe()
        closeProbe()
        if (phase._tag === "Open" || phase._tag === "Connecting") phase.link.close(1000, "client closed")
        phase = { _tag: "Closed" }
      })
    )
    yield* openSocket(yield* Clock.currentTimeMillis)
    while (phase._tag !== "Closed") {
      const now = yield* Clock.currentTimeMillis
      const wait = deadline() - now
      const signal = wait <= 0
        ? Option.none<Signal>()
        : Number.isFinite(wait)
        ? yield* Queue.take(inbox).pipe(Effect.timeoutOption(wait))
        : Option.some(yield* Queue.take(inbox))
      const at = yield* Clock.currentTimeMillis
      if (Option.isSome(signal)) yield* onSignal(at, signal.value)
      else yield* onTimer(at)
    }
  }).pipe(Effect.scoped)

  const client: DashcastClient = {
    onMarket: (listener) => {
      marketListeners.add(listener)
      if (latest !== undefined && !hidden) listener(latest.market)
      return () => {
        marketListeners.delete(listener)
      }
    },
    onSummary: (listener) => {
      summaryListeners.add(listener)
      if (latestSummary !== undefined && !hidden) listener(latestSummary)
      return () => {
        summaryListeners.delete(listener)
      }
    },
    onAlert: (listener) => {
      alertListeners.add(listener)
      return () => {
        alertListeners.delete(listener)
      }
    },
    onStatus: (listener) => {
      statusListeners.add(listener)
      listener(status)
      return () => {
        statusListeners.delete(listener)
      }
    },
    status: () => status,
    latest: () => latestSummary,
    latestMarket: () => latest?.market,
    currency: () => currency,
    setCurrency: (next) => offer({ _tag: "SetCurrency", currency: next }),
    requestUpdate: () => offer({ _tag: "RequestUpdate" }),
    close: () => {
      closed = true
      summaryListeners.clear()
      marketListeners.clear()
      statusListeners.clear()
      alertListeners.clear()
      offer({ _tag: "Close" })
    }
  }
  return { client, run }
}

/**
 * Connects to a dashcast server's WebSocket (`ws://host:port/ws`; see `dashboardSocketUrl`) and
 * keeps connected until `close()`: never gives up, never throws.
 */
export const connect = (url: string, options: ConnectOptions = {}): DashcastClient => {
  const { client, run } = makeDashcastClient(url, options)
  Effect.runFork(run)
  return client
}
