/**
 * One load-generator process of `bench/fanout.ts`: Bun WebSocket clients (or Server-Sent Events
 * clients on raw TCP sockets, see `startStream`) driven over IPC. It opens
 * its share of the clients with a bounded number of handshakes in flight, timestamps the first
 * frame (the welcome) of each, then records when every client receives each broadcast `seq`, and
 * tells the coordinator as soon as all of its clients have one. Timestamps are epoch milliseconds
 * with sub-millisecond precision (`performance.timeOrigin + performance.now()`), the clock the
 * coordinator uses for its triggers, so latencies are measured on one clock.
 *
 * Every client has a currency (the scenario's currencies in turn) and checks that every frame it
 * gets is of that currency; a frame of another one is counted, not received. The first frame of
 * each broadcast and currency in this process (and the first welcome of each currency) is parsed
 * in full and checked (type, currency, seq, number of assets, `data`), and its size recorded: a
 * topic's subscribers all get the same frame, so one sample per topic and broadcast is exact, and
 * the other receipts cost only a substring test.
 */
import type { ClientCommand, ClientReply, ConnectResult, FrameCheck, PhaseReport } from "./lib.js"

const origin = performance.timeOrigin
const now = () => origin + performance.now()
const reply = (message: ClientReply) => process.send?.(message)

/** What the coordinator needs of one client, whatever its transport. */
interface Client {
  close(): void
  onclose: (() => void) | null
}

let sockets: Array<Client> = []
let startedAt = new Float64Array(0)
let openedAt = new Float64Array(0)
let firstFrameAt = new Float64Array(0)
let alive = new Uint8Array(0)
let aliveCount = 0
let unexpectedCloses = 0
let closing = false

// Each client's currency, as an index into `check.currencies`, and the tag its frames must carry.
let check: FrameCheck = { currencies: [], inUrl: false, assets: 0, data: false }
let currencyOf = new Uint8Array(0)
let currencyTags: Array<string> = []
let welcomeBytes: Record<string, number> = {}
let badWelcomes = 0

// The armed broadcast phase: `armCount` seqs from `armFirst`, receive times per (seq, client).
let armFirst = 0
let armCount = 0
let received = new Float64Array(0)
let receivedPerSeq = new Int32Array(0)
let doneSent = new Uint8Array(0)
/** Per (seq, currency), whether this process has sampled a frame. */
let sampled = new Uint8Array(0)
let duplicates = 0
let unexpected = 0
let wrongCurrency = 0
let malformed = 0
let updateBytes: Array<{ frames: number; bytes: number }> = []

/** The number after the last `"seq":` in a frame, without parsing the JSON. */
const seqOf = (frame: string): number => {
  const at = frame.lastIndexOf("\"seq\":")
  if (at < 0) return -1
  let n = 0
  for (let i = at + 6; i < frame.length; i++) {
    const c = frame.charCodeAt(i)
    if (c < 48 || c > 57) break
    n = n * 10 + (c - 48)
  }
  return n
}

/** Whether the frame's first `"currency":` member (the top-level one: assets carry none) is the client's. */
const hasCurrency = (frame: string, currency: number): boolean => {
  const at = frame.indexOf("\"currency\":")
  return at >= 0 && frame.startsWith(currencyTags[currency]!, at)
}

/** The full check of one sampled frame: a JSON object of `type`, the client's currency and `seq`, with every asset. */
const wellFormed = (frame: string, type: string, currency: string, seq: number | undefined): boolean => {
  let value: unknown
  try {
    value = JSON.parse(frame)
  } catch {
    return false
  }
  if (typeof value !== "object" || value === null) return false
  const v = value as Record<string, unknown>
  const assets = v["assets"]
  return v["type"] === type && v["currency"] === currency && (seq === undefined || v["seq"] === seq) &&
    Array.isArray(assets) && assets.length === check.assets &&
    assets.every((a: unknown) => typeof a === "object" && a !== null && typeof (a as Record<string, unknown>)["price"] === "number") &&
    typeof v["market"] === "object" && (typeof v["data"] === "object") === check.data
}

const onFrame = (index: number, data: unknown) => {
  const t = now()
  const currency = currencyOf[index]!
  if (firstFrameAt[index] === 0) {
    firstFrameAt[index] = t
    if (typeof data !== "string" || !hasCurrency(data, currency)) return void badWelcomes++
    const name = check.currencies[currency]!
    if (welcomeBytes[name] === undefined) {
      welcomeBytes[name] = Buffer.byteLength(data)
      if (!wellFormed(data, "welcome", name, undefined)) badWelcomes++
    }
    return
  }
  if (typeof data !== "string") return void unexpected++
  const k = seqOf(data) - armFirst
  if (k < 0 || k >= armCount) return void unexpected++
  if (!hasCurrency(data, currency)) return void wrongCurrency++
  const slot = k * sockets.length + index
  if (received[slot] !== 0) return void duplicates++
  received[slot] = t
  const sample = k * check.currencies.length + currency
  if (sampled[sample] === 0) {
    sampled[sample] = 1
    const size = updateBytes[currency]!
    size.frames++
    size.bytes += Buffer.byteLength(data)
    if (!wellFormed(data, "dashboard_update", check.currencies[currency]!, armFirst + k)) malformed++
  }
  if (++receivedPerSeq[k]! >= aliveCount && doneSent[k] === 0) {
    doneSent[k] = 1
    reply({ type: "done", seq: armFirst + k })
  }
}

const connect = (command: Extract<ClientCommand, { type: "connect" }>) =>
  new Promise<ConnectResult>((resolve) => {
    const { count, maxInFlight, timeoutMs } = command
    check = command.check
    currencyTags = check.currencies.map((c) => `"currency":${JSON.stringify(c)}`)
    currencyOf = Uint8Array.from({ length: count }, (_, i) => (command.firstIndex + i) % check.currencies.length)
    const urls = check.currencies.map((c) => (check.inUrl ? `${command.url}?currency=${encodeURIComponent(c)}` : command.url))
    sockets = new Array(count)
    startedAt = new Float64Array(count)
    openedAt = new Float64Array(count)
    firstFrameAt = new Float64Array(count)
    alive = new Uint8Array(count)
    aliveCount = 0
    unexpectedCloses = 0
    welcomeBytes = {}
    badWelcomes = 0
    let next = 0
    let inFlight = 0
    let settled = 0
    let failed = 0
    let finished = false
    const finish = () => {
      if (finished) return
      finished = true
      clearTimeout(timer)
      const welcomeMs: Array<number> = []
      let firstStart = Number.POSITIVE_INFINITY
      let lastOpen = 0
      for (let i = 0; i < count; i++) {
        if (startedAt[i]! > 0) firstStart = Math.min(firstStart, startedAt[i]!)
        if (openedAt[i]! > 0) lastOpen = Math.max(lastOpen, openedAt[i]!)
        if (firstFrameAt[i]! > 0) welcomeMs.push(firstFrameAt[i]! - startedAt[i]!)
      }
      resolve({ opened: aliveCount, failed: failed + (count - settled), firstStart, lastOpen, welcomeMs, welcomeBytes, badWelcomes })
    }
    const timer = setTimeout(finish, timeoutMs)
    const settle = (ok: boolean) => {
      inFlight--
      settled++
      if (!ok) failed++
      if (settled === count) finish()
      else launch()
    }
    const start = (index: number) => {
      inFlight++
      startedAt[index] = now()
      const ws = new WebSocket(urls[currencyOf[index]!]!)
      sockets[index] = {
        close: () => ws.close(),
        get onclose() {
          return ws.onclose === null ? null : () => ws.onclose?.call(ws, new CloseEvent("close"))
        },
        set onclose(listener: (() => void) | null) {
          ws.onclose = listener
        }
      }
      let pending = true
      ws.onopen = () => {
        openedAt[index] = now()
        alive[index] = 1
        aliveCount++
      }
      ws.onmessage = (event) => {
        onFrame(index, event.data)
        if (pending) {
          pending = false
          settle(true)
        }
      }
      ws.onclose = () => {
        if (alive[index] === 1) {
          alive[index] = 0
          aliveCount--
          if (!closing) unexpectedCloses++
        }
        if (pending) {
          pending = false
          settle(false)
        }
      }
    }
    /**
     * An event stream client on a raw TCP socket: the request, then the response head, then the
     * chunked body de-chunked and split into events; each event's `data` line is the frame. (A
     * `fetch` per client would be limited to 256 at a time by Bun and cost far more per client.)
     */
    const startStream = (index: number) => {
      inFlight++
      startedAt[index] = now()
      const target = new URL(urls[currencyOf[index]!]!)
      let pending = true
      let head = true
      let raw = ""
      let body = ""
      let socket: { terminate(): void } | undefined
      let closed = false
      const client: Client = {
        onclose: null,
        // At once, as a browser closing an EventSource does: no more data is read from it.
        close: () => {
          socket?.terminate()
          gone()
        }
      }
      sockets[index] = client
      // Like a WebSocket's `onclose`, which `closeAll` replaces: either its handler or this one runs.
      function gone() {
        if (closed) return
        closed = true
        if (client.onclose !== null) return client.onclose()
        if (alive[index] === 1) {
          alive[index] = 0
          aliveCount--
          if (!closing) unexpectedCloses++
        }
        if (pending) {
          pending = false
          settle(false)
        }
      }
      /** Moves complete chunks from `raw` to `body`. */
      const dechunk = () => {
        for (;;) {
          const lineEnd = raw.indexOf("\r\n")
          if (lineEnd < 0) return
          const size = Number.parseInt(raw.slice(0, lineEnd), 16)
          if (size === 0) return
          // Sizes count bytes; events are ASCII JSON (the bench's names and symbols), so characters too.
          if (raw.length < lineEnd + 2 + size + 2) return
          body += raw.slice(lineEnd + 2, lineEnd + 2 + size)
          raw = raw.slice(lineEnd + 2 + size + 2)
        }
      }
      Bun.connect({
        hostname: target.hostname,
        port: Number(target.port),
        socket: {
          open(s) {
            socket = s
            s.write(`GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\nAccept: text/event-stream\r\n\r\n`)
          },
          data(_s, chunk) {
            if (closed) return
            raw += chunk.toString("latin1")
            if (head) {
              const end = raw.indexOf("\r\n\r\n")
              if (end < 0) return
              if (!raw.startsWith("HTTP/1.1 200")) return void client.close()
              head = false
              raw = raw.slice(end + 4)
              openedAt[index] = now()
              alive[index] = 1
              aliveCount++
            }
            dechunk()
            for (let end = body.indexOf("\n\n"); end >= 0; end = body.indexOf("\n\n")) {
              const block = body.slice(0, end)
              body = body.slice(end + 2)
              const at = block.indexOf("data: ")
              if (at < 0) continue // the retry hint, a heartbeat
              const lineEnd = block.indexOf("\n", at)
              onFrame(index, block.slice(at + 6, lineEnd < 0 ? undefined : lineEnd))
              if (pending) {
                pending = false
                settle(true)
              }
            }
          },
          close: gone,
          end: gone,
          error: gone,
          connectError: gone
        }
      }).catch(gone)
    }
    const launch = () => {
      while (!finished && inFlight < maxInFlight && next < count) (command.transport === "sse" ? startStream : start)(next++)
    }
    launch()
  })

const arm = (firstSeq: number, count: number) => {
  Bun.gc(true)
  armFirst = firstSeq
  armCount = count
  received = new Float64Array(count * sockets.length)
  receivedPerSeq = new Int32Array(count)
  doneSent = new Uint8Array(count)
  sampled = new Uint8Array(count * check.currencies.length)
  duplicates = 0
  unexpected = 0
  wrongCurrency = 0
  malformed = 0
  updateBytes = check.currencies.map(() => ({ frames: 0, bytes: 0 }))
}

const report = (triggers: ReadonlyArray<number>): PhaseReport => {
  const n = sockets.length
  const latencyMs: Array<number> = []
  const lastReceivedAt = new Array<number>(armCount).fill(0)
  const firstReceivedAt = new Array<number>(armCount).fill(0)
  let lost = 0
  let clientsWithLoss = 0
  let missedLast = 0
  for (let i = 0; i < n; i++) {
    if (firstFrameAt[i] === 0) continue // never connected: counted as a failed connect, not as loss
    let missed = 0
    for (let k = 0; k < armCount; k++) {
      const t = received[k * n + i]!
      if (t === 0) {
        missed++
        continue
      }
      latencyMs.push(t - triggers[k]!)
      if (t > lastReceivedAt[k]!) lastReceivedAt[k] = t
      if (firstReceivedAt[k] === 0 || t < firstReceivedAt[k]!) firstReceivedAt[k] = t
    }
    lost += missed
    if (missed > 0) clientsWithLoss++
    if (armCount > 0 && received[(armCount - 1) * n + i] === 0) missedLast++
  }
  const meanBytes: Record<string, number> = {}
  check.currencies.forEach((c, i) => {
    const size = updateBytes[i]
    if (size !== undefined && size.frames > 0) meanBytes[c] = size.bytes / size.frames
  })
  return {
    latencyMs,
    lastReceivedAt,
    firstReceivedAt,
    lost,
    clientsWithLoss,
    missedLast,
    duplicates,
    unexpected,
    unexpectedCloses,
    wrongCurrency,
    malformed,
    updateBytes: meanBytes
  }
}

const closeAll = (timeoutMs: number) =>
  new Promise<void>((resolve) => {
    closing = true
    const deadline = setTimeout(done, timeoutMs)
    function done() {
      clearTimeout(deadline)
      for (const ws of sockets) if (ws !== undefined) ws.onclose = null
      sockets = []
      received = new Float64Array(0)
      aliveCount = 0
      closing = false
      Bun.gc(true)
      resolve()
    }
    if (aliveCount === 0) return done()
    for (let i = 0; i < sockets.length; i++) {
      const ws = sockets[i]
      if (ws === undefined || alive[i] !== 1) continue
      ws.onclose = () => {
        alive[i] = 0
        if (--aliveCount === 0) done()
      }
      ws.close()
    }
  })

process.on("message", async (raw) => {
  const command = raw as ClientCommand
  switch (command.type) {
    case "connect":
      return reply({ type: "connected", result: await connect(command) })
    case "arm":
      arm(command.firstSeq, command.count)
      return reply({ type: "armed" })
    case "report":
      return reply({ type: "report", report: report(command.triggers) })
    case "close":
      await closeAll(command.timeoutMs)
      return reply({ type: "closed" })
    case "exit":
      process.exit(0)
  }
})
reply({ type: "ready" })
