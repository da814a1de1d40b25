/**
 * The Bun edge: one scoped service that owns `Bun.serve`. Native `websocket` callbacks and
 * `server.publish` do the fan-out, and every frame published on a topic also goes to that topic's
 * Server-Sent Events streams (`/api/stream`, EventStreams.ts); the pages are served from their
 * bundles (`Pages`), and the Effect HTTP app answers every other request. WebSockets and event
 * streams share one connection budget. Closing the scope stops accepting, closes every socket with
 * 1001, ends every stream and stops the server.
 */
import { HttpApp, HttpMiddleware } from "@effect/platform"
import type { Server as BunServer, ServerWebSocket } from "bun"
import { Data, Duration, Effect, FiberSet, LogLevel, Option, Redacted, Schedule } from "effect"
import { AppConfig } from "../Config.js"
import { ApiHandlers } from "../http/ApiHandlers.js"
import { Pages } from "../http/Pages.js"
import * as Metrics from "../metrics/Metrics.js"
import { MarketState } from "../state/MarketState.js"
import { Broadcaster, topicOf } from "./Broadcaster.js"
import { makeEventStreams } from "./EventStreams.js"
import { describeProblem, encodeServerMessage, parseClientFrame } from "./Protocol.js"
import { type BucketRule, fullBucket, secondsUntilToken, take, type TokenBucket } from "./TokenBucket.js"

/** Per-connection state, kept in Bun's `ws.data`. */
export interface SocketData {
  readonly id: number
  readonly ip: string
  readonly openedAt: number
  /** The currency whose frames this socket gets; `subscribe` changes it. */
  currency: string
  /** Any frame: a flood beyond this is answered with an error and costs a strike. */
  readonly messages: TokenBucket
  /** `request_update` answers. */
  readonly requests: TokenBucket
  /** Refused frames (garbage, floods); when none are left the socket is closed with 1008. */
  readonly strikes: TokenBucket
}

export type DashcastSocket = ServerWebSocket<SocketData>

export const MESSAGE_RULE: BucketRule = { capacity: 20, refillPerSecond: 5 }
export const REQUEST_RULE: BucketRule = { capacity: 3, refillPerSecond: 0.5 }
export const STRIKE_RULE: BucketRule = { capacity: 5, refillPerSecond: 0.1 }

/** Close codes of the protocol. */
export const CloseCode = { GoingAway: 1001, PolicyViolation: 1008, MessageTooBig: 1009 } as const

/** Bytes a socket may have queued before it misses messages (latest wins on drain). */
export const BACKPRESSURE_LIMIT = 256 * 1024
const IDLE_TIMEOUT_SECONDS = 120
/**
 * Bun closes an HTTP connection idle for 10 s by default; an event stream writes a heartbeat every
 * 15 s, so it gets the WebSocket's idle timeout instead (a peer that takes nothing for that long is gone).
 */
const STREAM_IDLE_TIMEOUT_SECONDS = IDLE_TIMEOUT_SECONDS
/** The longest `Last-Event-ID` read as a seq; anything else is ignored and the client gets a welcome. */
const LAST_EVENT_ID = /^\d{1,15}$/
const SHUTDOWN_GRACE = Duration.seconds(3)
/**
 * Every socket gets a timestamped ping every 30 s, in 30 slices a second apart: all at once, 10,000
 * pings and their pongs would hold the event loop for tens of milliseconds every 30 s and delay a
 * broadcast that falls then.
 */
const RTT_PING_INTERVAL = Duration.seconds(30)
const RTT_PING_SLICES = 30
const RTT_PING_SLICE_GAP = Duration.millis(Duration.toMillis(RTT_PING_INTERVAL) / RTT_PING_SLICES)
const PING_PAYLOAD_BYTES = 8

export class ServerStartError extends Data.TaggedError("ServerStartError")<{
  readonly host: string
  readonly port: number
  readonly cause: unknown
}> {
  override get message(): string {
    return `cannot listen on ${this.host}:${this.port}: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

export class Server extends Effect.Service<Server>()("dashcast/Server", {
  dependencies: [Pages.Default],
  scoped: Effect.gen(function*() {
    const config = yield* AppConfig
    const broadcaster = yield* Broadcaster
    const state = yield* MarketState
    const api = yield* ApiHandlers
    const pages = yield* Pages
    const runFork = yield* FiberSet.makeRuntime<never>()
    // Every API request is logged (method, path, status); probes and scrapes opt out in ApiHandlers.
    const handleHttp = HttpApp.toWebHandlerRuntime(yield* Effect.runtime<never>())(api.app, HttpMiddleware.logger)
    // Per-connection logs cost a fiber each, so they are only made when debug logging is on.
    const logConnections = LogLevel.lessThanEqual(config.logLevel, LogLevel.Debug)
    const logConnection = (message: string, ws: DashcastSocket, extra: Record<string, unknown> = {}) => {
      if (logConnections) {
        runFork(Effect.logDebug(message).pipe(Effect.annotateLogs({ connection: ws.data.id, ip: ws.data.ip, ...extra })))
      }
    }

    const sockets = new Set<DashcastSocket>()
    const streams = yield* makeEventStreams()
    /** WebSockets and event streams per address: one budget for both transports. */
    const perIp = new Map<string, number>()
    let nextSocketId = 1
    let accepting = true
    const allowedOrigins = Option.map(config.allowedOrigins, (origins) => new Set(origins))
    const currencies = new Set(config.currencies)
    const [defaultCurrency] = config.currencies

    /**
     * Why a WebSocket upgrade or an event stream is refused, checked before any connection state is
     * made. `headers` go on the refusal too (an event stream's CORS headers, so a page can read why).
     */
    const refuseConnection = (request: Request, ip: string, headers: Record<string, string> = {}): Option.Option<Response> => {
      const refuse = (status: number, error: string) => Option.some(Response.json({ error }, { status, headers }))
      if (!accepting) return refuse(503, "server shutting down")
      const origin = request.headers.get("origin")
      // Browsers send Origin with every WebSocket and cross-origin request; programs usually do not,
      // and are not subject to the check.
      if (origin !== null && Option.isSome(allowedOrigins) && !allowedOrigins.value.has(origin)) {
        return refuse(403, `origin ${origin} is not allowed`)
      }
      if (Option.exists(config.maxConnections, (max) => sockets.size + streams.size() >= max)) {
        return refuse(503, "server is at its connection limit")
      }
      if (Option.exists(config.maxConnectionsPerIp, (max) => (perIp.get(ip) ?? 0) >= max)) {
        return refuse(429, "too many connections from this address")
      }
      return Option.none()
    }

    const countIn = (ip: string) => perIp.set(ip, (perIp.get(ip) ?? 0) + 1)
    const countOut = (ip: string) => {
      const left = (perIp.get(ip) ?? 1) - 1
      if (left > 0) perIp.set(ip, left)
      else perIp.delete(ip)
    }

    const unknownCurrency = (currency: string, headers: Record<string, string> = {}) =>
      Response.json({ error: `unknown currency ${JSON.stringify(currency)}; this server has ${config.currencies.join(", ")}` }, {
        status: 400,
        headers
      })

    /**
     * `GET /api/stream?currency=eur`: the currency's frames as Server-Sent Events. The first event is
     * the welcome (or the error saying when data is expected); a client resuming with a
     * `Last-Event-ID` older than the latest snapshot gets that snapshot as a `dashboard_update` instead.
     */
    const openStream = (request: Request, server: BunServer<SocketData>): Response => {
      const origin = request.headers.get("origin")
      // A page of an allowed origin (any, without ALLOWED_ORIGINS) may read the stream from elsewhere.
      const cors: Record<string, string> = origin === null ? {} : { "access-control-allow-origin": origin, vary: "Origin" }
      if (request.method !== "GET") {
        return Response.json({ error: "use GET" }, { status: 405, headers: { ...cors, allow: "GET" } })
      }
      const currency = new URL(request.url).searchParams.get("currency") ?? defaultCurrency
      if (!currencies.has(currency)) return unknownCurrency(currency, cors)
      const ip = server.requestIP(request)?.address ?? "unknown"
      const refused = refuseConnection(request, ip, cors)
      if (Option.isSome(refused)) return refused.value
      const lastEventId = request.headers.get("last-event-id")?.trim() ?? ""
      const resumeFrom = LAST_EVENT_ID.test(lastEventId) ? Number(lastEventId) : undefined
      server.timeout(request, STREAM_IDLE_TIMEOUT_SECONDS)
      countIn(ip)
      const id = nextSocketId++
      const openedAt = Date.now()
      if (logConnections) runFork(Effect.logDebug("event stream opened").pipe(Effect.annotateLogs({ connection: id, ip, currency })))
      return streams.open({
        topic: topicOf(currency),
        headers: cors,
        signal: request.signal,
        onClose: () => {
          countOut(ip)
          if (logConnections) {
            runFork(Effect.logDebug("event stream closed").pipe(Effect.annotateLogs({ connection: id, ip, seconds: (Date.now() - openedAt) / 1000 })))
          }
        },
        first: () => {
          const now = Date.now()
          if (state.isOld(now)) state.wantRefresh()
          const behind = resumeFrom !== undefined && Option.exists(state.current(), (snapshot) => resumeFrom < snapshot.seq)
          const update = behind ? broadcaster.latestUpdateFrame(currency, now, "request_update") : Option.none()
          return Option.getOrElse(update, () => broadcaster.welcomeFrame(currency, now))
        }
      })
    }

    /** Every frame to one socket goes through here, so bytes sent are counted. */
    const send = (ws: DashcastSocket, frame: string) => Metrics.frameSent(ws.sendText(frame), frame)

    const sendError = (ws: DashcastSocket, error: string, retryAfter?: number) =>
      send(ws, encodeServerMessage({
        type: "error",
        error,
        timestamp: new Date().toISOString(),
        ...(retryAfter === undefined ? {} : { retry_after: retryAfter })
      }))

    /** A refused frame costs a strike; a client out of strikes keeps misbehaving and is closed. */
    const refuse = (ws: DashcastSocket, now: number, error: string, retryAfter?: number) => {
      if (!take(ws.data.strikes, STRIKE_RULE, now)) {
        ws.close(CloseCode.PolicyViolation, "too many invalid or excess messages")
        return
      }
      sendError(ws, error, retryAfter)
    }

    const onMessage = (ws: DashcastSocket, frame: string | Buffer) => {
      const now = Date.now()
      if (!take(ws.data.messages, MESSAGE_RULE, now)) {
        Metrics.messageRateLimited("client_message")
        return refuse(ws, now, "rate limited: too many messages", secondsUntilToken(ws.data.messages, MESSAGE_RULE))
      }
      const parsed = parseClientFrame(frame)
      if (parsed._tag === "Left") return refuse(ws, now, describeProblem(parsed.left))
      const message = parsed.right
      switch (message.type) {
        case "ping":
          send(ws, encodeServerMessage({ type: "pong", timestamp: new Date(now).toISOString() }))
          return
        case "request_update": {
          if (!take(ws.data.requests, REQUEST_RULE, now)) {
            Metrics.messageRateLimited("request_update")
            return refuse(ws, now, "rate limited: request_update", secondsUntilToken(ws.data.requests, REQUEST_RULE))
          }
          const frame = broadcaster.latestUpdateFrame(ws.data.currency, now, "request_update")
          send(ws, Option.getOrElse(frame, () => broadcaster.welcomeFrame(ws.data.currency, now)))
          return
        }
        case "subscribe": {
          // Switching costs a request token: a client cannot make the server encode welcomes in a loop.
          if (!take(ws.data.requests, REQUEST_RULE, now)) {
            Metrics.messageRateLimited("request_update")
            return refuse(ws, now, "rate limited: subscribe", secondsUntilToken(ws.data.requests, REQUEST_RULE))
          }
          if (!currencies.has(message.currency)) {
            return refuse(ws, now, `unknown currency ${JSON.stringify(message.currency)}; this server has ${config.currencies.join(", ")}`)
          }
          if (message.currency !== ws.data.currency) {
            ws.unsubscribe(topicOf(ws.data.currency))
            ws.data.currency = message.currency
          }
          // The welcome first, then the topic: no update can arrive before the state it follows.
          send(ws, broadcaster.welcomeFrame(ws.data.currency, now))
          ws.subscribe(topicOf(ws.data.currency))
          return
        }
      }
    }

    const websocket = {
      maxPayloadLength: config.maxMessageBytes,
      backpressureLimit: BACKPRESSURE_LIMIT,
      closeOnBackpressureLimit: false,
      idleTimeout: IDLE_TIMEOUT_SECONDS,
      sendPings: true,
      perMessageDeflate: false,
      open(ws: DashcastSocket) {
        sockets.add(ws)
        countIn(ws.data.ip)
        Metrics.connectionOpened()
        logConnection("connection opened", ws)
        const now = Date.now()
        send(ws, broadcaster.welcomeFrame(ws.data.currency, now))
        ws.subscribe(topicOf(ws.data.currency))
        if (state.isOld(now)) state.wantRefresh()
      },
      message: onMessage,
      // A socket that was over its backpressure limit missed broadcasts: bring it up to date.
      drain(ws: DashcastSocket) {
        Option.map(broadcaster.lastPublishedFrame(ws.data.currency), (frame) => send(ws, frame))
      },
      // Our own pings carry the time they were sent; Bun's automatic ones are empty.
      pong(_ws: DashcastSocket, data: Buffer) {
        if (data.length === PING_PAYLOAD_BYTES) Metrics.pingRtt((performance.now() - data.readDoubleLE(0)) / 1000)
      },
      close(ws: DashcastSocket, code: number) {
        const seconds = (Date.now() - ws.data.openedAt) / 1000
        Metrics.connectionClosed(code, seconds)
        logConnection("connection closed", ws, { code, seconds })
        sockets.delete(ws)
        countOut(ws.data.ip)
      }
    }

    const fetch = (request: Request, server: BunServer<SocketData>): Response | Promise<Response> | undefined => {
      const url = new URL(request.url)
      if (url.pathname === "/ws") {
        const currency = url.searchParams.get("currency") ?? defaultCurrency
        if (!currencies.has(currency)) return unknownCurrency(currency)
        const ip = server.requestIP(request)?.address ?? "unknown"
        const refused = refuseConnection(request, ip)
        if (Option.isSome(refused)) return refused.value
        const data: SocketData = {
          id: nextSocketId++,
          ip,
          openedAt: Date.now(),
          currency,
          messages: fullBucket(MESSAGE_RULE, Date.now()),
          requests: fullBucket(REQUEST_RULE, Date.now()),
          strikes: fullBucket(STRIKE_RULE, Date.now())
        }
        if (server.upgrade(request, { data })) return undefined
        return Response.json({ error: "expected a WebSocket upgrade" }, { status: 426 })
      }
      if (url.pathname === "/api/stream") return openStream(request, server)
      return pages.serve(request, url.pathname) ?? handleHttp(request)
    }

    const server = yield* Effect.acquireRelease(
      Effect.try({
        try: () =>
          Bun.serve<SocketData>({
            hostname: config.host,
            port: config.port,
            ...(Option.isSome(config.tlsCert) && Option.isSome(config.tlsKey)
              ? { tls: { cert: Redacted.value(config.tlsCert.value.pem), key: Redacted.value(config.tlsKey.value.pem) } }
              : {}),
            // The pages are served by `fetch` too (Pages.ts), with headers Bun's HTML routes cannot carry.
            development: false,
            fetch,
            websocket,
            error: (error) => {
              runFork(Effect.logError("request failed", error))
              return Response.json({ error: "internal error" }, { status: 500 })
            }
          }),
        catch: (cause) => new ServerStartError({ host: config.host, port: config.port, cause })
      }),
      (server) =>
        Effect.gen(function*() {
          accepting = false
          yield* broadcaster.detach
          const open = sockets.size
          const openStreams = streams.size()
          // Event streams are requests in flight: end them first, or `stop` would wait for them.
          streams.closeAll()
          const stopped = server.stop(false)
          for (const ws of sockets) ws.close(CloseCode.GoingAway, "server shutting down")
          yield* Effect.promise(() => stopped).pipe(
            Effect.timeoutOption(SHUTDOWN_GRACE),
            Effect.flatMap(Option.match({
              onNone: () => Effect.promise(() => server.stop(true)),
              onSome: () => Effect.void
            }))
          )
          yield* Effect.logInfo("server stopped").pipe(Effect.annotateLogs({ closed_sockets: open, closed_streams: openStreams }))
        })
    )

    // Round-trip time, measured with timestamped pings (the seed's "average message latency"): each
    // second, the sockets of that second's slice (by socket id), so each socket every 30 s.
    let slice = 0
    yield* Effect.sync(() => {
      const payload = Buffer.alloc(PING_PAYLOAD_BYTES)
      payload.writeDoubleLE(performance.now())
      for (const ws of sockets) if (ws.data.id % RTT_PING_SLICES === slice) ws.ping(payload)
      slice = (slice + 1) % RTT_PING_SLICES
    }).pipe(Effect.repeat(Schedule.spaced(RTT_PING_SLICE_GAP)), Effect.delay(RTT_PING_SLICE_GAP), Effect.forkScoped)

    // Every frame of a topic, whatever its type, also goes to the topic's event streams: the one hook
    // through which the Broadcaster reaches clients, so a new kind of frame needs nothing here.
    yield* broadcaster.attach({
      publish: (topic, frame) => {
        const sent = server.publish(topic, frame)
        streams.publish(topic, frame)
        return sent
      },
      subscriberCount: (topic) => server.subscriberCount(topic),
      streamCount: (topic) => streams.count(topic)
    })
    const url = new URL(server.url.href)
    yield* Effect.logInfo(`listening on ${url.href}`)

    return {
      url,
      port: server.port ?? config.port,
      connections: () => sockets.size,
      /** Event streams open now. */
      streams: () => streams.size()
    }
  })
}) {}
