/**
 * The SDK's event-stream reader for Bun and Node (src/web/FetchEventSource.ts) against a real
 * `Bun.serve` on loopback: the HTML standard's parsing rules, chunks split anywhere, failures as a
 * single `error` without data, `close()`, and `Last-Event-ID`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schedule } from "effect"
import { COMMENT_EVENT, FetchEventSource, type StreamEvent } from "../../src/web/FetchEventSource.js"

type Reply = (request: Request) => Response

const serve = (reply: Reply) =>
  Effect.acquireRelease(
    Effect.sync(() => Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (request, server) => {
      server.timeout(request, 0)
      return reply(request)
    } })),
    (server) => Effect.promise(() => server.stop(true))
  )

/** A stream body written in the given pieces, each on its own turn, then left open (or ended). */
const pieces = (parts: ReadonlyArray<string>, end: boolean, onCancel: () => void = () => {}) =>
  new Response(
    new ReadableStream<Uint8Array>({
      async start(controller) {
        for (const part of parts) {
          controller.enqueue(new TextEncoder().encode(part))
          await Bun.sleep(1)
        }
        if (end) controller.close()
      },
      cancel: onCancel
    }),
    { headers: { "content-type": "text/event-stream" } }
  )

/** Records everything a source dispatches, under the given event names. */
const record = (source: FetchEventSource, names: ReadonlyArray<string>) => {
  const seen: Array<StreamEvent> = []
  for (const name of ["open", "error", COMMENT_EVENT, ...names]) source.addEventListener(name, (event) => seen.push(event))
  return seen
}

const until = <A>(what: string, check: () => A | undefined) =>
  Effect.sync(check).pipe(
    Effect.repeat({ until: (a) => a !== undefined, schedule: Schedule.spaced("5 millis") }),
    Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error(`not within 5 seconds: ${what}`) }),
    Effect.zipRight(Effect.sync(check))
  )

describe("FetchEventSource", () => {
  it.scopedLive("parses the stream as the HTML standard says, whatever the chunking", () =>
    Effect.gen(function*() {
      const body = [
        "\uFEFFretry: 5000\r\n",
        ": heart", "beat\r\n\r\n",
        "event: welcome\nid: 4\ndata: {\"a\":1}\n\n",
        "event: dashboard_update\rid: 5\rdata: line one\rdata: line two\r\r",
        // No data: nothing dispatched; the id still moves.
        "event: ignored\nid: 6\n\n",
        "data: plain\n\n",
        "event: dashboard_update\ndata:no space\ndata\n\n",
        "event: error\ndata: {\"type\":\"error\"}\n", "\n"
      ]
      const server = yield* serve(() => pieces(body, false))
      const source = new FetchEventSource(server.url.href)
      const seen = record(source, ["welcome", "dashboard_update", "message", "ignored"])
      yield* until("five events", () => (seen.filter((e) => e.data !== undefined).length === 5 ? true : undefined))
      expect(seen).toEqual([
        { type: "open" },
        { type: COMMENT_EVENT },
        { type: "welcome", data: "{\"a\":1}", lastEventId: "4" },
        { type: "dashboard_update", data: "line one\nline two", lastEventId: "5" },
        { type: "message", data: "plain", lastEventId: "6" },
        { type: "dashboard_update", data: "no space\n", lastEventId: "6" },
        { type: "error", data: "{\"type\":\"error\"}", lastEventId: "6" }
      ])
      expect(source.readyState).toBe(FetchEventSource.OPEN)
      source.close()
    }))

  it.scopedLive("fails once, with an error without data, on a refusal, a body that is not a stream, or the end of the stream", () =>
    Effect.gen(function*() {
      const replies: ReadonlyArray<Reply> = [
        () => Response.json({ error: "server is at its connection limit" }, { status: 503 }),
        () => Response.json({ ok: true }),
        () => pieces(["event: welcome\ndata: {}\n\n"], true)
      ]
      const outcomes: Array<Array<StreamEvent>> = []
      for (const reply of replies) {
        const server = yield* serve(reply)
        const source = new FetchEventSource(server.url.href)
        const seen = record(source, ["welcome"])
        yield* until("the failure", () => (seen.some((e) => e.type === "error") ? true : undefined))
        expect(source.readyState).toBe(FetchEventSource.CLOSED)
        outcomes.push(seen)
      }
      expect(outcomes).toEqual([
        [{ type: "error" }],
        [{ type: "error" }],
        [{ type: "open" }, { type: "welcome", data: "{}", lastEventId: "" }, { type: "error" }]
      ])
      const closed = new FetchEventSource("http://127.0.0.1:1/")
      const seen = record(closed, [])
      yield* until("the connection failure", () => (seen.length > 0 ? true : undefined))
      expect(seen).toEqual([{ type: "error" }])
    }))

  it.scopedLive("close() ends the request and nothing more is dispatched; Last-Event-ID is sent when given", () =>
    Effect.gen(function*() {
      let cancelled = false
      const headers: Array<string | null> = []
      const server = yield* serve((request) => {
        headers.push(request.headers.get("last-event-id"))
        return pieces(["event: welcome\ndata: {}\n\n"], false, () => {
          cancelled = true
        })
      })
      const source = new FetchEventSource(server.url.href, { lastEventId: "41" })
      const seen = record(source, ["welcome"])
      yield* until("the welcome", () => (seen.some((e) => e.type === "welcome") ? true : undefined))
      source.close()
      yield* until("the server sees the client leave", () => (cancelled ? true : undefined))
      expect(seen.map((e) => e.type)).toEqual(["open", "welcome"])
      expect(source.readyState).toBe(FetchEventSource.CLOSED)
      expect(headers).toEqual(["41"])
      const plain = new FetchEventSource(server.url.href)
      yield* until("the second request", () => (headers.length === 2 ? true : undefined))
      plain.close()
      expect(headers[1]).toBeNull()
    }))
})
