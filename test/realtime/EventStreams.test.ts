/**
 * The event streams on their own (src/realtime/EventStreams.ts): how a frame becomes an event, the
 * heartbeat (driven by the TestClock), the `retry:` hint, and the slow-reader rule, on a real
 * `Bun.serve` read by a raw TCP client that can stop reading.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Schedule, TestClock } from "effect"
import { type EncodedView, encodeServerMessage, updateFrame, welcomeFrame } from "../../src/realtime/Protocol.js"
import {
  eventOf,
  frameHead,
  type EventStreams,
  HEARTBEAT_INTERVAL,
  makeEventStreams,
  RETRY_MIN_MS,
  RETRY_SPREAD_MS
} from "../../src/realtime/EventStreams.js"
import * as SseClient from "../support/SseClient.js"

const view = (seq: number, name = "Bitcoin"): EncodedView => ({
  currency: "usd",
  seq,
  members: `"currency":"usd","assets":[{"id":"bitcoin","symbol":"btc","name":${JSON.stringify(name)},"price":${60_000 + seq},"change_24h":1.5,"market_cap":1,"volume_24h":2,"rsi_14":50,"last_updated":"2026-01-01T00:00:00.000Z"}],"market":{}`,
  hasStaleValues: false
})
const TIMESTAMP = "2026-01-01T00:00:00.000Z"
const update = (seq: number, name?: string) => updateFrame(view(seq, name), "scheduled_update", TIMESTAMP)
const errorFrame = (text: string) => encodeServerMessage({ type: "error", error: text, timestamp: TIMESTAMP, retry_after: 30 })

describe("eventOf", () => {
  it("names the event by the frame's type, gives welcomes and updates their seq as id, and carries the frame as data", () => {
    const welcome = welcomeFrame(view(42), TIMESTAMP, 1.5, false)
    expect(eventOf(welcome)).toBe(`event: welcome\nid: 42\ndata: ${welcome}\n\n`)
    expect(eventOf(update(43))).toBe(`event: dashboard_update\nid: 43\ndata: ${update(43)}\n\n`)
    // A name that contains "seq": 7 does not fool it: the frame's own seq is the last one.
    expect(frameHead(update(44, "\"seq\":7 coin")).seq).toBe(44)
  })

  it("gives frames without a seq no id, so a client's last event id stays its last snapshot", () => {
    const error = errorFrame("Failed to fetch market data: coins_markets(usd): HTTP 500")
    expect(eventOf(error)).toBe(`event: error\ndata: ${error}\n\n`)
    const pong = encodeServerMessage({ type: "pong", timestamp: TIMESTAMP })
    expect(eventOf(pong)).toBe(`event: pong\ndata: ${pong}\n\n`)
  })

  it("reads the type and top-level seq of any other frame, ignoring a seq nested inside it", () => {
    expect(frameHead(`{"type":"alert","rule":{"id":"r1","seq":9},"asset":"bitcoin","seq":51}`)).toEqual({ type: "alert", seq: 51 })
    expect(frameHead(`{"type":"alert","rule":{"seq":9},"asset":"bitcoin"}`)).toEqual({ type: "alert", seq: undefined })
    // Not built by Protocol.ts (members in another order): parsed.
    expect(frameHead(`{"seq":5,"type":"dashboard_update"}`)).toEqual({ type: "dashboard_update", seq: 5 })
  })

  it("keeps an event one event whatever the frame's text: every line of it becomes a data line", () => {
    expect(eventOf("{\"type\":\"note\",\n\"text\":\"a\"}")).toBe("event: note\ndata: {\"type\":\"note\",\ndata: \"text\":\"a\"}\n\n")
    expect(eventOf("not json")).toBe("event: message\ndata: not json\n\n")
  })
})

/** A `Bun.serve` on loopback whose every request opens a stream of topic "t" (or `?topic=`). */
const serveStreams = (streams: EventStreams, first: () => string) =>
  Effect.acquireRelease(
    Effect.sync(() =>
      Bun.serve({
        hostname: "127.0.0.1",
        port: 0,
        fetch: (request, server) => {
          server.timeout(request, 0)
          return streams.open({
            topic: new URL(request.url).searchParams.get("topic") ?? "t",
            first,
            signal: request.signal,
            onClose: () => {}
          })
        }
      })
    ),
    (server) => Effect.promise(() => server.stop(true))
  )

describe("a stream", () => {
  it.scopedLive("starts with a retry hint between 3 and 10 s, spread by chance, and the first frame", () =>
    Effect.gen(function*() {
      const draws = [0, 0.5, 0.9999]
      for (const draw of draws) {
        const streams = yield* makeEventStreams(() => draw)
        const server = yield* serveStreams(streams, () => update(1))
        const client = yield* SseClient.open(server.url)
        const first = yield* client.next()
        expect(first.message).toMatchObject({ type: "dashboard_update", seq: 1 })
        expect(client.retries()).toEqual([RETRY_MIN_MS + Math.floor(Math.min(draw, 0.999) * RETRY_SPREAD_MS)])
      }
      expect(RETRY_MIN_MS).toBe(3_000)
      expect(RETRY_MIN_MS + RETRY_SPREAD_MS).toBe(10_000)
    }))

  it.scoped("gets a comment heartbeat every 15 s of the clock, and nothing else in between", () =>
    Effect.gen(function*() {
      const streams = yield* makeEventStreams()
      const server = yield* serveStreams(streams, () => update(1))
      const client = yield* SseClient.open(server.url)
      yield* client.next()
      // Writes to one stream arrive in order: once a frame published later has arrived, any
      // heartbeat written before it has too.
      const publishAndSee = (seq: number) =>
        Effect.gen(function*() {
          expect(streams.publish("t", update(seq))).toBe(1)
          yield* client.next((m) => m.type === "dashboard_update" && m.seq === seq)
          return client.comments().length
        })
      expect(Duration.toSeconds(HEARTBEAT_INTERVAL)).toBe(15)
      yield* TestClock.adjust("14 seconds")
      expect(yield* publishAndSee(2)).toBe(0)
      yield* TestClock.adjust("1 seconds")
      yield* client.until((_, comments) => comments.length === 1, "the first heartbeat")
      yield* TestClock.adjust("14 seconds")
      expect(yield* publishAndSee(3)).toBe(1)
      yield* TestClock.adjust("1 seconds")
      yield* client.until((_, comments) => comments.length === 2, "the second heartbeat")
      expect(client.comments()).toEqual(["heartbeat", "heartbeat"])
      // A heartbeat dispatches nothing: the events are the three updates.
      expect(client.events().map((e) => e.id)).toEqual(["1", "2", "3"])
    }))

  it.scopedLive("gets only its topic's frames", () =>
    Effect.gen(function*() {
      const streams = yield* makeEventStreams()
      const server = yield* serveStreams(streams, () => update(1))
      const usd = yield* SseClient.open(new URL("/?topic=usd", server.url))
      const eur = yield* SseClient.open(new URL("/?topic=eur", server.url))
      for (const client of [usd, eur]) yield* client.next()
      expect(streams.count("usd")).toBe(1)
      expect(streams.publish("eur", update(2))).toBe(1)
      expect(streams.publish("usd", update(3))).toBe(1)
      expect((yield* usd.next()).id).toBe("3")
      expect((yield* eur.next()).id).toBe("2")
      expect(usd.events().map((e) => e.id)).toEqual(["1", "3"])
    }))

  it.scopedLive("of a reader that stops reading holds only the newest frame of each type, and sends them when it drains", () =>
    Effect.gen(function*() {
      const streams = yield* makeEventStreams()
      const server = yield* serveStreams(streams, () => update(1))
      const slow = yield* SseClient.open(server.url)
      yield* slow.next()
      yield* slow.pause
      // Frames of 1 MB, until the socket has refused three (the kernel's buffers hold several MB).
      const big = "x".repeat(1_000_000)
      let seq = 1
      let held = 0
      while (held < 3 && seq < 200) {
        seq++
        if (streams.publish("t", update(seq, big)) === 0) held++
      }
      expect(held).toBe(3)
      const lastUpdate = seq
      const error = errorFrame("Failed to fetch market data: global: HTTP 502")
      expect(streams.publish("t", error)).toBe(0)

      yield* slow.resume
      const events = yield* slow.until((events) => events.some((e) => e.event === "error"), "the held error", "20 seconds")
      const seqs = events.filter((e) => e.event === "dashboard_update").map((e) => Number(e.id))
      // In order, without duplicates, ending with the newest update, and missing the ones it replaced.
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b))
      expect(new Set(seqs).size).toBe(seqs.length)
      expect(seqs.at(-1)).toBe(lastUpdate)
      expect(seqs).not.toContain(lastUpdate - 1)
      expect(events.at(-1)?.event).toBe("error")
      expect(events.at(-2)?.id).toBe(String(lastUpdate))
      // Once drained, frames flow again.
      expect(streams.publish("t", update(lastUpdate + 1))).toBe(1)
      yield* slow.next((m) => m.type === "dashboard_update" && m.seq === lastUpdate + 1, { timeout: "10 seconds" })
    }))

  it.scopedLive("ends on closeAll, and a stream that starts afterwards ends at once", () =>
    Effect.gen(function*() {
      const streams = yield* makeEventStreams()
      const server = yield* serveStreams(streams, () => update(1))
      const client = yield* SseClient.open(server.url)
      yield* client.next()
      expect(streams.size()).toBe(1)
      streams.closeAll()
      yield* client.ended()
      expect(streams.size()).toBe(0)
      const late = yield* SseClient.open(server.url)
      yield* late.ended()
      expect(late.events()).toEqual([])
      expect(streams.size()).toBe(0)
    }))

  it.scopedLive("leaves when its client does", () =>
    Effect.gen(function*() {
      const streams = yield* makeEventStreams()
      const server = yield* serveStreams(streams, () => update(1))
      const client = yield* SseClient.open(server.url)
      yield* client.next()
      expect(streams.size()).toBe(1)
      yield* client.close
      yield* Effect.sync(() => streams.size()).pipe(
        Effect.repeat({ until: (n) => n === 0, schedule: Schedule.spaced("10 millis") }),
        Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("the stream outlived its client") })
      )
      expect(streams.size()).toBe(0)
    }))
})
