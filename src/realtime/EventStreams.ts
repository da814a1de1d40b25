/**
 * Server-Sent Events streams (`GET /api/stream`, docs/ARCHITECTURE.md "Event streams"): every frame
 * the Broadcaster publishes on a Bun topic also goes, as one event, to the streams of that topic.
 * Bun's pub/sub has no HTTP subscribers, so this is the one place that loops over connections: each
 * frame is encoded once per topic (one byte array) and that array is written to every stream.
 *
 * A stream is Bun's "direct" ReadableStream: `write` hands bytes straight to the response's socket
 * and returns a Promise once the socket's buffer is full. From then until it drains, the stream is
 * blocked and keeps only the newest frame of each event type (latest wins, as a WebSocket over its
 * backpressure limit does), so a slow reader costs a bounded amount of memory, never a queue.
 */
import { Duration, Effect, Schedule, type Scope } from "effect"
import * as Metrics from "../metrics/Metrics.js"

/** A comment line every 15 s keeps proxies and the client from taking a quiet stream for a dead one. */
export const HEARTBEAT_INTERVAL = Duration.seconds(15)
/** Reconnection delay sent in `retry:`: 3 s plus a random share of 7 s, so a restart does not bring every client back at once. */
export const RETRY_MIN_MS = 3_000
export const RETRY_SPREAD_MS = 7_000

export const HEARTBEAT = ": heartbeat\n\n"

/** The event type and id of a frame, read from its text without parsing it (see `eventOf`). */
export interface FrameHead {
  readonly type: string
  /** The frame's top-level `seq`, if it carries one. */
  readonly seq: number | undefined
}

// Frames are JSON objects whose first member is `type` (Protocol.ts builds and encodes them so).
// Welcomes and updates carry their `seq` after the view's members, which have none, so the last
// `"seq":` of those is theirs; any other frame is parsed to read a top-level `seq`, if it has one.
const TYPE_PREFIX = /^\{"type":"([a-z_]+)"/
const SNAPSHOT_TYPES = new Set(["welcome", "dashboard_update"])
const SEQ_MEMBER = "\"seq\":"

const parsedHead = (frame: string): FrameHead | undefined => {
  try {
    const value: unknown = JSON.parse(frame)
    if (typeof value !== "object" || value === null || !("type" in value) || typeof value.type !== "string") return undefined
    const seq = "seq" in value && typeof value.seq === "number" && Number.isSafeInteger(value.seq) && value.seq >= 0 ? value.seq : undefined
    return { type: value.type.replace(/[^\w.-]/g, "") || "message", seq }
  } catch {
    return undefined
  }
}

export const frameHead = (frame: string): FrameHead => {
  const type = TYPE_PREFIX.exec(frame)?.[1]
  if (type === undefined) return parsedHead(frame) ?? { type: "message", seq: undefined }
  const at = frame.lastIndexOf(SEQ_MEMBER)
  if (at < 0) return { type, seq: undefined }
  if (!SNAPSHOT_TYPES.has(type)) return { type, seq: parsedHead(frame)?.seq }
  const digits = /^\d{1,15}/.exec(frame.slice(at + SEQ_MEMBER.length, at + SEQ_MEMBER.length + 16))?.[0]
  return { type, seq: digits === undefined ? undefined : Number(digits) }
}

/**
 * One frame as an event: `event:` is the frame's `type`, `id:` its `seq` (none for frames without
 * one, so a client's last event id stays the last snapshot it saw), `data:` the frame itself.
 */
export const eventOf = (frame: string): string => {
  const head = frameHead(frame)
  // JSON.stringify never writes a raw line break; a frame from elsewhere gets one data line per line.
  const data = frame.includes("\n") || frame.includes("\r") ? frame.split(/\r\n|\r|\n/).join("\ndata: ") : frame
  return `event: ${head.type}\n${head.seq === undefined ? "" : `id: ${head.seq}\n`}data: ${data}\n\n`
}

/** What the Server gives a new stream. */
export interface StreamOptions {
  /** The topic (one currency's) whose frames the stream gets. */
  readonly topic: string
  /**
   * The stream's first frame, made when the response starts (right after `open` returns), so that
   * nothing published before it can arrive after it.
   */
  readonly first: () => string
  /** Response headers besides the stream's own (CORS). */
  readonly headers?: Readonly<Record<string, string>>
  /** Called once when the stream ends, whoever ends it. */
  readonly onClose: () => void
  /** Aborted when the client goes away. */
  readonly signal: AbortSignal
}

interface Stream {
  readonly topic: string
  readonly openedAt: number
  readonly options: StreamOptions
  controller: ReadableStreamDirectController | undefined
  /** A write is waiting for the socket to drain (or the response has not started): frames are held. */
  blocked: boolean
  /** The newest frame of each event type published while blocked, in publish order. */
  readonly held: Map<string, Uint8Array>
  closed: boolean
}

export interface EventStreams {
  /** A `text/event-stream` response that gets every frame published on `options.topic`. */
  readonly open: (options: StreamOptions) => Response
  /** Writes `frame` to every stream of `topic`; returns how many took it now (not held). */
  readonly publish: (topic: string, frame: string) => number
  /** Streams of one topic. */
  readonly count: (topic: string) => number
  /** Streams open. */
  readonly size: () => number
  /** Ends every stream (shutdown) and refuses to start new ones. */
  readonly closeAll: () => void
}

/**
 * Bun's `ReadableStream` takes a "direct" source, but with the DOM lib in the project its
 * constructor is typed by the DOM's overloads, which hide bun-types' one; this restores it.
 */
const DirectReadableStream = ReadableStream as unknown as new(source: Bun.DirectUnderlyingSource<Uint8Array>) => ReadableStream<Uint8Array>

const encoder = new TextEncoder()
const HEARTBEAT_BYTES = encoder.encode(HEARTBEAT)

export const STREAM_HEADERS: Readonly<Record<string, string>> = {
  "content-type": "text/event-stream",
  "cache-control": "no-store",
  // nginx (and proxies that honour it) pass the stream on as it comes instead of buffering it.
  "x-accel-buffering": "no"
}

/**
 * The streams and their heartbeat, which runs in the caller's scope. `random` (in [0, 1)) spreads
 * the `retry:` hint.
 */
export const makeEventStreams = (random: () => number = Math.random): Effect.Effect<EventStreams, never, Scope.Scope> =>
  Effect.gen(function*() {
    const byTopic = new Map<string, Set<Stream>>()
    let streams = 0
    let accepting = true

    const close = (stream: Stream, reason: Metrics.CloseReason) => {
      if (stream.closed) return
      stream.closed = true
      stream.held.clear()
      byTopic.get(stream.topic)?.delete(stream)
      streams--
      try {
        stream.controller?.close()
      } catch {
        // the response is already gone
      }
      Metrics.transportClosed("sse", reason, (Date.now() - stream.openedAt) / 1000)
      stream.options.onClose()
    }

    /** Hands `bytes` to the stream's socket; false when it is blocked or gone. */
    const write = (stream: Stream, bytes: Uint8Array): boolean => {
      const controller = stream.controller
      if (controller === undefined || stream.closed) return false
      let written: number | Promise<number>
      try {
        written = controller.write(bytes)
      } catch {
        close(stream, "normal")
        return false
      }
      if (typeof written === "number") {
        // 0 for a non-empty chunk: the client has gone away.
        if (written === 0 && bytes.byteLength > 0) {
          close(stream, "normal")
          return false
        }
        return true
      }
      // Taken, but the socket is full: hold what comes next until it drains.
      stream.blocked = true
      written.then(() => drain(stream), () => close(stream, "error"))
      return true
    }

    /** The socket took everything: send what was held, oldest type first, until it is full again. */
    const drain = (stream: Stream) => {
      if (stream.closed) return
      stream.blocked = false
      for (const [type, bytes] of stream.held) {
        stream.held.delete(type)
        if (write(stream, bytes)) Metrics.sseBytesSent(bytes.byteLength)
        if (stream.blocked || stream.closed) return
      }
    }

    const hold = (stream: Stream, type: string, bytes: Uint8Array) => {
      if (stream.held.delete(type)) Metrics.sseFrameSkipped()
      stream.held.set(type, bytes)
    }

    const publish = (topic: string, frame: string): number => {
      const subscribers = byTopic.get(topic)
      if (subscribers === undefined || subscribers.size === 0) return 0
      const type = frameHead(frame).type
      const bytes = encoder.encode(eventOf(frame))
      let written = 0
      for (const stream of subscribers) {
        if (stream.blocked) hold(stream, type, bytes)
        else if (write(stream, bytes)) written++
      }
      Metrics.sseBytesSent(bytes.byteLength, written)
      return written
    }

    const heartbeat = Effect.sync(() => {
      let written = 0
      for (const subscribers of byTopic.values()) {
        for (const stream of subscribers) {
          if (!stream.blocked && write(stream, HEARTBEAT_BYTES)) written++
        }
      }
      Metrics.sseBytesSent(HEARTBEAT_BYTES.byteLength, written)
    })
    yield* heartbeat.pipe(Effect.repeat(Schedule.spaced(HEARTBEAT_INTERVAL)), Effect.delay(HEARTBEAT_INTERVAL), Effect.forkScoped)

    const open = (options: StreamOptions): Response => {
      const stream: Stream = {
        topic: options.topic,
        openedAt: Date.now(),
        options,
        controller: undefined,
        blocked: true,
        held: new Map(),
        closed: false
      }
      let subscribers = byTopic.get(options.topic)
      if (subscribers === undefined) byTopic.set(options.topic, subscribers = new Set())
      subscribers.add(stream)
      streams++
      Metrics.connectionOpened("sse")
      options.signal.addEventListener("abort", () => close(stream, "normal"), { once: true })
      const retry = RETRY_MIN_MS + Math.floor(Math.min(Math.max(random(), 0), 0.999) * RETRY_SPREAD_MS)
      const source: Bun.DirectUnderlyingSource<Uint8Array> = {
        type: "direct",
        // Called when Bun starts sending the body (and, by a reader in tests, again per read).
        pull: (controller: ReadableStreamDirectController) => {
          if (stream.controller !== undefined) return
          stream.controller = controller
          if (!accepting || stream.closed) return close(stream, "going_away")
          // The first frame reflects the latest state: anything held before it is older.
          stream.held.clear()
          stream.blocked = false
          const first = encoder.encode(`retry: ${retry}\n\n${eventOf(options.first())}`)
          if (write(stream, first)) Metrics.sseBytesSent(first.byteLength)
        },
        cancel: () => close(stream, "normal")
      }
      return new Response(new DirectReadableStream(source), { status: 200, headers: { ...STREAM_HEADERS, ...options.headers } })
    }

    return {
      open,
      publish,
      count: (topic) => byTopic.get(topic)?.size ?? 0,
      size: () => streams,
      closeAll: () => {
        accepting = false
        for (const subscribers of [...byTopic.values()]) {
          for (const stream of [...subscribers]) close(stream, "going_away")
        }
      }
    }
  })
