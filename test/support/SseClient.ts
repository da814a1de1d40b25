/**
 * A Server-Sent Events client for tests, written on a raw TCP socket so that it sees the wire as
 * a proxy or `curl` would: the status line and headers, the chunked body, every comment (heartbeat)
 * and `retry:` line. Events are parsed as the HTML standard's EventSource does ("event stream
 * interpretation"), independently of the SDK's own reader, and each event's data is decoded with
 * the protocol's Schema, so every frame is also checked against the contract. Reading can be paused
 * (the socket stops reading, so the server's writes back up) and resumed.
 */
import { Data, Duration, Effect, Either, type Scope } from "effect"
import { connect as netConnect, type Socket } from "node:net"
import { decodeServerMessage, formatParseError, type ServerMessage } from "../../src/realtime/Protocol.js"

export class SseClientError extends Data.TaggedError("SseClientError")<{ readonly message: string }> {}

/** One dispatched event. */
export interface SseEvent {
  /** The `event:` field, or "message" without one. */
  readonly event: string
  /** The `id:` field of this event's block, if it had one. */
  readonly id: string | undefined
  /** The last event id after this event (what an EventSource would send as `Last-Event-ID`). */
  readonly lastEventId: string
  readonly data: string
}

export interface DecodedEvent extends SseEvent {
  readonly message: ServerMessage
}

export interface SseResponse {
  readonly status: number
  /** Header names in lower case. */
  readonly headers: Readonly<Record<string, string>>
}

export interface SseClient extends SseResponse {
  /** Every event so far, in order. */
  readonly events: () => ReadonlyArray<SseEvent>
  /** Every comment line's text (after the colon), in order. */
  readonly comments: () => ReadonlyArray<string>
  /** Every `retry:` value received, in order. */
  readonly retries: () => ReadonlyArray<number>
  /** The whole body as received so far, de-chunked (for refusals: the JSON error). */
  readonly body: () => string
  /**
   * The next event after those already consumed that matches `predicate` (any without one), its
   * data decoded; skipped events are consumed too. Fails on timeout, when the stream ends first, or
   * when an event's data is not a protocol frame.
   */
  readonly next: <M extends ServerMessage = ServerMessage>(
    predicate?: ((message: ServerMessage) => message is M) | ((message: ServerMessage) => boolean),
    options?: { readonly timeout?: Duration.DurationInput; readonly label?: string }
  ) => Effect.Effect<SseEvent & { readonly message: M }, SseClientError>
  /** Waits until `check` holds of the events and comments so far. */
  readonly until: (
    check: (events: ReadonlyArray<SseEvent>, comments: ReadonlyArray<string>) => boolean,
    what: string,
    timeout?: Duration.DurationInput
  ) => Effect.Effect<ReadonlyArray<SseEvent>, SseClientError>
  /** Waits for the server to end the response. */
  readonly ended: (timeout?: Duration.DurationInput) => Effect.Effect<void, SseClientError>
  readonly isEnded: () => boolean
  /** Stops reading from the socket (the server's writes back up), and starts again. */
  readonly pause: Effect.Effect<void>
  readonly resume: Effect.Effect<void>
  readonly close: Effect.Effect<void>
}

export const isType =
  <T extends ServerMessage["type"]>(type: T) => (message: ServerMessage): message is Extract<ServerMessage, { type: T }> =>
    message.type === type

const DEFAULT_TIMEOUT = Duration.seconds(5)

/** The HTML standard's parser, fed text as it arrives. */
export const eventStreamParser = (onEvent: (event: SseEvent) => void, onComment: (text: string) => void, onRetry: (ms: number) => void) => {
  let pending = ""
  let data: Array<string> = []
  let eventType = ""
  let blockId: string | undefined
  let lastEventId = ""
  const line = (text: string) => {
    if (text === "") {
      if (data.length > 0) onEvent({ event: eventType === "" ? "message" : eventType, id: blockId, lastEventId, data: data.join("\n") })
      data = []
      eventType = ""
      blockId = undefined
      return
    }
    if (text.startsWith(":")) return onComment(text.slice(1).replace(/^ /, ""))
    const colon = text.indexOf(":")
    const field = colon < 0 ? text : text.slice(0, colon)
    const value = colon < 0 ? "" : text.slice(colon + 1).replace(/^ /, "")
    switch (field) {
      case "event":
        eventType = value
        return
      case "data":
        data.push(value)
        return
      case "id":
        if (!value.includes("\0")) {
          lastEventId = value
          blockId = value
        }
        return
      case "retry":
        if (/^\d+$/.test(value)) onRetry(Number(value))
        return
    }
  }
  return (text: string) => {
    pending += text
    for (;;) {
      const match = /\r\n|\r|\n/.exec(pending)
      // A lone \r at the end may be the first half of \r\n: wait for more.
      if (match === null || (match[0] === "\r" && match.index === pending.length - 1)) return
      line(pending.slice(0, match.index))
      pending = pending.slice(match.index + match[0].length)
    }
  }
}

/**
 * Sends `GET url` with `headers` on a new TCP connection and resolves once the response head has
 * arrived, whatever its status; the body is read (and de-chunked) as it comes. The socket is
 * destroyed when the scope closes.
 */
export const open = (
  url: string | URL,
  options: { readonly headers?: Readonly<Record<string, string>>; readonly method?: string } = {}
): Effect.Effect<SseClient, SseClientError, Scope.Scope> =>
  Effect.acquireRelease(
    connect(new URL(url), options).pipe(
      Effect.timeoutFail({
        duration: DEFAULT_TIMEOUT,
        onTimeout: () => new SseClientError({ message: `${String(url)}: no response head within ${Duration.format(DEFAULT_TIMEOUT)}` })
      })
    ),
    (client) => client.close
  )

const connect = (target: URL, options: { readonly headers?: Readonly<Record<string, string>>; readonly method?: string }) =>
  Effect.async<SseClient, SseClientError>((resume) => {
    const socket: Socket = netConnect(Number(target.port), target.hostname)
    const events: Array<SseEvent> = []
    const comments: Array<string> = []
    const retries: Array<number> = []
    const watchers = new Set<() => void>()
    const decoder = new TextDecoder()
    let raw = Buffer.alloc(0)
    let head: SseResponse | undefined
    let chunked = false
    let remaining = Number.POSITIVE_INFINITY
    let body = ""
    let ended = false
    let failure: string | undefined
    const notify = () => {
      for (const watch of [...watchers]) watch()
    }
    const feed = eventStreamParser((e) => events.push(e), (c) => comments.push(c), (r) => retries.push(r))
    const text = (bytes: Buffer) => {
      const s = decoder.decode(bytes, { stream: true })
      body += s
      if (head?.status === 200) feed(s)
    }
    /** De-chunks what `raw` holds; sets `ended` at the last chunk. */
    const readBody = () => {
      if (!chunked) {
        const take = Math.min(raw.length, remaining)
        text(raw.subarray(0, take))
        remaining -= take
        raw = raw.subarray(take)
        if (remaining === 0) ended = true
        return
      }
      for (;;) {
        const lineEnd = raw.indexOf("\r\n")
        if (lineEnd < 0) return
        const size = Number.parseInt(raw.subarray(0, lineEnd).toString("latin1"), 16)
        if (!Number.isFinite(size)) {
          failure = `bad chunk size line ${JSON.stringify(raw.subarray(0, lineEnd).toString("latin1"))}`
          return
        }
        if (size === 0) {
          ended = true
          return
        }
        if (raw.length < lineEnd + 2 + size + 2) return
        text(raw.subarray(lineEnd + 2, lineEnd + 2 + size))
        raw = raw.subarray(lineEnd + 2 + size + 2)
      }
    }
    let resumed = false
    socket.on("connect", () => {
      const lines = [
        `${options.method ?? "GET"} ${target.pathname}${target.search} HTTP/1.1`,
        `Host: ${target.host}`,
        "Accept: text/event-stream",
        ...Object.entries(options.headers ?? {}).map(([k, v]) => `${k}: ${v}`)
      ]
      socket.write(`${lines.join("\r\n")}\r\n\r\n`)
    })
    socket.on("data", (chunk: Buffer) => {
      raw = Buffer.concat([raw, chunk])
      if (head === undefined) {
        const end = raw.indexOf("\r\n\r\n")
        if (end < 0) return
        const [statusLine = "", ...headerLines] = raw.subarray(0, end).toString("latin1").split("\r\n")
        const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1] ?? 0)
        const headers = Object.fromEntries(headerLines.map((l) => {
          const colon = l.indexOf(":")
          return [l.slice(0, colon).trim().toLowerCase(), l.slice(colon + 1).trim()] as const
        }))
        head = { status, headers }
        chunked = headers["transfer-encoding"]?.toLowerCase() === "chunked"
        remaining = chunked ? Number.POSITIVE_INFINITY : Number(headers["content-length"] ?? Number.POSITIVE_INFINITY)
        raw = raw.subarray(end + 4)
        resumed = true
        resume(Effect.succeed(client(head)))
      }
      readBody()
      notify()
    })
    socket.on("end", () => {
      ended = true
      notify()
    })
    socket.on("close", () => {
      ended = true
      notify()
    })
    socket.on("error", (error) => {
      if (!resumed) {
        resumed = true
        resume(Effect.fail(new SseClientError({ message: `${target.href}: ${error.message}` })))
      }
      failure ??= error.message
      notify()
    })

    const wait = <A>(check: () => A | undefined, what: string, timeout: Duration.DurationInput) =>
      Effect.async<A, SseClientError>((done) => {
        const fail = (why: string) => {
          watchers.delete(watch)
          clearTimeout(timer)
          done(Effect.fail(new SseClientError({ message: `${what} on ${target.href}: ${why}; events: ${JSON.stringify(events.map((e) => `${e.event} ${e.id ?? "-"} ${e.data.slice(0, 120)}`), null, 1)}` })))
        }
        const watch = () => {
          const found = check()
          if (found !== undefined) {
            watchers.delete(watch)
            clearTimeout(timer)
            done(Effect.succeed(found))
          } else if (failure !== undefined) fail(failure)
          else if (ended) fail("the stream ended")
        }
        const timer = setTimeout(() => fail(`nothing within ${Duration.format(timeout)}`), Duration.toMillis(timeout))
        watchers.add(watch)
        watch()
        return Effect.sync(() => {
          watchers.delete(watch)
          clearTimeout(timer)
        })
      })

    let consumed = 0
    const client = (response: SseResponse): SseClient => ({
      ...response,
      events: () => events,
      comments: () => comments,
      retries: () => retries,
      body: () => body,
      isEnded: () => ended,
      next: <M extends ServerMessage = ServerMessage>(
        predicate?: ((message: ServerMessage) => message is M) | ((message: ServerMessage) => boolean),
        options: { readonly timeout?: Duration.DurationInput; readonly label?: string } = {}
      ) =>
        Effect.suspend(() => {
          let problem: string | undefined
          return wait<DecodedEvent>(() => {
            for (let i = consumed; i < events.length; i++) {
              const event = events[i]!
              const decoded = decodeServerMessage(event.data)
              if (Either.isLeft(decoded)) {
                problem = `an event whose data breaks the protocol: ${event.data}\n${formatParseError(decoded.left)}`
                failure ??= problem
                return undefined
              }
              consumed = i + 1
              if (predicate === undefined || predicate(decoded.right)) return { ...event, message: decoded.right }
            }
            return undefined
          }, options.label ?? "an event", options.timeout ?? DEFAULT_TIMEOUT) as Effect.Effect<SseEvent & { readonly message: M }, SseClientError>
        }),
      until: (check, what, timeout = DEFAULT_TIMEOUT) =>
        Effect.suspend(() => wait(() => (check(events, comments) ? events : undefined), what, timeout)),
      ended: (timeout = DEFAULT_TIMEOUT) =>
        Effect.suspend(() => wait(() => (ended ? true : undefined), "the end of the stream", timeout)).pipe(Effect.asVoid),
      pause: Effect.sync(() => {
        socket.pause()
      }),
      resume: Effect.sync(() => {
        socket.resume()
      }),
      close: Effect.sync(() => {
        socket.destroy()
      })
    })
    return Effect.sync(() => {
      socket.destroy()
    })
  })
