/**
 * A Server-Sent Events reader on `fetch`, for runtimes without `EventSource` (Bun, Node): the part
 * of the browser's `EventSource` the client SDK uses, parsed as the HTML standard's "event stream
 * interpretation" says. Unlike `EventSource` it never reconnects by itself (the SDK decides when
 * and where to), it can send `Last-Event-ID`, and it reports comment lines (the server's
 * heartbeats) as events of type `":"`, so the SDK can tell a quiet stream from a dead one.
 */

/** What a listener gets: a named event's `data` and id; no `data` for `open` and a failure's `error`. */
export interface StreamEvent {
  readonly type: string
  readonly data?: string
  readonly lastEventId?: string
}

/** Comment lines (heartbeats) are dispatched under this type, which no event name can be. */
export const COMMENT_EVENT = ":"

const CONNECTING = 0
const OPEN = 1
const CLOSED = 2

export interface FetchEventSourceInit {
  /** Sent as `Last-Event-ID` (a resuming client). */
  readonly lastEventId?: string
  /** The `fetch` to use; the global one by default. */
  readonly fetch?: typeof fetch
}

export class FetchEventSource {
  static readonly CONNECTING = CONNECTING
  static readonly OPEN = OPEN
  static readonly CLOSED = CLOSED

  readyState: number = CONNECTING
  private readonly listeners = new Map<string, Set<(event: StreamEvent) => void>>()
  private readonly abort = new AbortController()

  constructor(readonly url: string, init: FetchEventSourceInit = {}) {
    const run = init.fetch ?? globalThis.fetch
    const headers: Record<string, string> = { accept: "text/event-stream", "cache-control": "no-store" }
    if (init.lastEventId !== undefined) headers["last-event-id"] = init.lastEventId
    // Listeners are added right after construction: start on the next turn.
    queueMicrotask(() => {
      if (this.readyState === CLOSED) return
      run(url, { headers, signal: this.abort.signal, cache: "no-store" }).then(
        (response) => this.read(response),
        () => this.fail()
      )
    })
  }

  addEventListener(type: string, listener: (event: StreamEvent) => void): void {
    let set = this.listeners.get(type)
    if (set === undefined) this.listeners.set(type, set = new Set())
    set.add(listener)
  }

  close(): void {
    if (this.readyState === CLOSED) return
    this.readyState = CLOSED
    this.abort.abort()
  }

  private emit(event: StreamEvent) {
    if (this.readyState === CLOSED && event.type !== "error") return
    for (const listener of [...(this.listeners.get(event.type) ?? [])]) listener(event)
  }

  /** The connection failed or ended: one `error` without data, then nothing more. */
  private fail() {
    if (this.readyState === CLOSED) return
    this.readyState = CLOSED
    this.abort.abort()
    this.emit({ type: "error" })
  }

  private async read(response: Response) {
    const contentType = response.headers.get("content-type") ?? ""
    if (response.status !== 200 || !/^text\/event-stream\b/i.test(contentType) || response.body === null) {
      await response.body?.cancel().catch(() => undefined)
      return this.fail()
    }
    if (this.readyState === CLOSED) return
    this.readyState = OPEN
    this.emit({ type: "open" })
    const parse = eventStreamParser((event) => this.emit(event), () => this.emit({ type: COMMENT_EVENT }))
    const reader = response.body.getReader()
    const decoder = new TextDecoder()
    try {
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        parse(decoder.decode(value, { stream: true }))
        if (this.readyState === CLOSED) return
      }
    } catch {
      // the connection broke, or `close()` aborted it
    }
    this.fail()
  }
}

/** Feeds text as it arrives; calls `onEvent` per dispatched event and `onComment` per comment line. */
export const eventStreamParser = (onEvent: (event: StreamEvent) => void, onComment: () => void) => {
  let pending = ""
  let data: Array<string> = []
  let type = ""
  let lastEventId = ""
  let first = true
  const line = (text: string) => {
    if (text === "") {
      if (data.length > 0) onEvent({ type: type === "" ? "message" : type, data: data.join("\n"), lastEventId })
      data = []
      type = ""
      return
    }
    if (text.startsWith(":")) return onComment()
    const colon = text.indexOf(":")
    const field = colon < 0 ? text : text.slice(0, colon)
    const value = colon < 0 ? "" : text.slice(colon + 1).replace(/^ /, "")
    if (field === "event") type = value
    else if (field === "data") data.push(value)
    else if (field === "id" && !value.includes("\0")) lastEventId = value
  }
  return (chunk: string) => {
    pending += first ? chunk.replace(/^\uFEFF/, "") : chunk
    first = false
    for (;;) {
      const match = /\r\n|\r|\n/.exec(pending)
      // A lone \r at the end may be the first half of \r\n: wait for more.
      if (match === null || (match[0] === "\r" && match.index === pending.length - 1)) return
      line(pending.slice(0, match.index))
      pending = pending.slice(match.index + match[0].length)
    }
  }
}
