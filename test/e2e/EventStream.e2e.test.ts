/**
 * The compiled binary's event stream as a client that only speaks HTTP meets it: `curl -N`, a real
 * process reading `GET /api/stream`. It sees every update with the seq the force update answered,
 * and after a real restart (SIGTERM, a new process on the same port and SQLite cache) it resumes
 * with `Last-Event-ID`: the snapshot it missed comes first, as a `dashboard_update`.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import type { Subprocess } from "bun"
import * as path from "node:path"
import { decodeServerMessage } from "../../src/realtime/Protocol.js"
import { ensureBinary, startBinary, stopAllBinaries, tempDir, waitFor } from "../support/Binary.js"
import { startFakeUpstream } from "../support/FakeUpstream.js"
import { eventStreamParser, type SseEvent } from "../support/SseClient.js"
import { hasTool } from "../support/SystemTools.js"

const ADMIN_TOKEN = "e2e-stream-token-5a1d"

interface Curl extends AsyncDisposable {
  readonly proc: Subprocess<"ignore", "pipe", "pipe">
  readonly events: () => ReadonlyArray<SseEvent>
  readonly comments: () => ReadonlyArray<string>
  /** Resolves when curl has exited (the server ended the response), with its exit code. */
  readonly exited: Promise<number>
  readonly waitForEvent: (predicate: (event: SseEvent) => boolean, what: string, timeoutMs?: number) => Promise<SseEvent>
}

/** `curl -sN` on the stream: no buffering, output parsed as an EventSource would. */
const curl = (url: string, headers: Readonly<Record<string, string>> = {}): Curl => {
  const args = ["curl", "--silent", "--show-error", "--no-buffer", ...Object.entries(headers).flatMap(([k, v]) => ["-H", `${k}: ${v}`]), url]
  const proc = Bun.spawn(args, { stdin: "ignore", stdout: "pipe", stderr: "pipe" })
  const events: Array<SseEvent> = []
  const comments: Array<string> = []
  const feed = eventStreamParser((e) => events.push(e), (c) => comments.push(c), () => {})
  void (async () => {
    const decoder = new TextDecoder()
    const stdout = proc.stdout.getReader()
    for (;;) {
      const { done, value } = await stdout.read()
      if (done) break
      feed(decoder.decode(value, { stream: true }))
    }
  })()
  return {
    proc,
    events: () => events,
    comments: () => comments,
    exited: proc.exited,
    waitForEvent: (predicate, what, timeoutMs = 5_000) => waitFor(() => events.find(predicate), `curl: ${what}`, timeoutMs),
    [Symbol.asyncDispose]: async () => {
      proc.kill()
      await proc.exited
    }
  }
}

const haveCurl = hasTool("curl")

beforeAll(() => ensureBinary(), 120_000)
afterAll(stopAllBinaries)

describe.skipIf(!haveCurl)("dashcast binary: the event stream with curl", () => {
  it("shows every update with its seq, and resumes with Last-Event-ID after a restart on the SQLite cache", async () => {
    const fake = startFakeUpstream()
    try {
      const env = {
        ...fake.env,
        CURRENCIES: "usd,eur",
        CACHE_PATH: path.join(tempDir(), "cache.sqlite"),
        UPDATE_INTERVAL: "1 hour",
        MIN_FETCH_GAP: "0 seconds",
        ADMIN_TOKEN
      }
      const first = await startBinary({ env })
      await first.ready()
      const refresh = async (server: typeof first) => {
        const response = await server.fetch("/api/dashboard/refresh", { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
        expect(response.status).toBe(200)
        return ((await response.json()) as { seq: number }).seq
      }

      await using reader = curl(`${first.url}/api/stream?currency=eur`)
      const welcome = await reader.waitForEvent((e) => e.event === "welcome", "the welcome")
      const welcomeSeq = Number(welcome.id)
      const seqs = [await refresh(first), await refresh(first), await refresh(first)]
      expect(seqs).toEqual([welcomeSeq + 1, welcomeSeq + 2, welcomeSeq + 3])
      await reader.waitForEvent((e) => e.id === String(seqs[2]), `the update seq ${seqs[2]}`)

      const updates = reader.events().filter((e) => e.event === "dashboard_update")
      expect(updates.map((e) => e.id)).toEqual(seqs.map(String))
      for (const event of [welcome, ...updates]) {
        const decoded = decodeServerMessage(event.data)
        expect(decoded._tag).toBe("Right")
        if (decoded._tag === "Right") expect(decoded.right).toMatchObject({ currency: "eur", seq: Number(event.id) })
      }
      expect(reader.events()[0]).toBe(welcome)

      // A real restart: the stream ends cleanly with the process; a new one on the same cache.
      expect(await first.stop()).toBe(0)
      expect(await reader.exited).toBe(0)
      const lastSeen = reader.events().at(-1)?.lastEventId
      expect(lastSeen).toBe(String(seqs[2]))
      await using second = await startBinary({ env: first.env })
      await second.ready()
      // Published while the client was away.
      const missed = await refresh(second)
      expect(missed).toBeGreaterThan(seqs[2]!)

      await using resumed = curl(`${second.url}/api/stream?currency=eur`, { "Last-Event-ID": lastSeen ?? "" })
      const caughtUp = await resumed.waitForEvent(() => true, "the first event after the restart")
      expect(caughtUp.event).toBe("dashboard_update")
      expect(caughtUp.id).toBe(String(missed))
      expect(decodeServerMessage(caughtUp.data)).toMatchObject({ right: { type: "dashboard_update", seq: missed, currency: "eur" } })
      const next = await refresh(second)
      await resumed.waitForEvent((e) => e.id === String(next), `the update seq ${next}`)
      expect(resumed.events().map((e) => [e.event, e.id])).toEqual([["dashboard_update", String(missed)], ["dashboard_update", String(next)]])

      // A client that saw everything is greeted as usual.
      await using current = curl(`${second.url}/api/stream?currency=eur`, { "Last-Event-ID": String(next) })
      expect((await current.waitForEvent(() => true, "the first event")).event).toBe("welcome")
    } finally {
      await fake.stop()
    }
  }, 60_000)
})
