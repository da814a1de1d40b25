/**
 * `npm run bench`: fan-out of one JSON frame to many WebSocket clients, dashcast's compiled binary
 * against two reference peers, in one run on one machine:
 *
 *  - `dashcast`: `dist/dashcast --demo`, triggered by `POST /api/dashboard/refresh` (force update);
 *  - `bare Bun`: `bench/peers/bare-bun.ts`, `Bun.serve` topic pub/sub with no framework;
 *  - `Node ws`: `bench/peers/node-ws.mjs`, Node.js `http` + `ws`, a loop over the clients.
 *
 * Three kinds of rung: the default one (dashcast's default watchlist, bitcoin in usd: one topic, one
 * frame per broadcast, clients of today that name no currency) at 1k..19k clients; the SSE rungs (1k
 * and 10k clients of the same binary, once over WebSockets and once over Server-Sent Events,
 * `GET /api/stream`, read by clients on raw TCP sockets); and the watchlist rung: 50 assets in usd, eur and gbp, clients spread evenly over `/ws?currency=usd|eur|gbp`, so a
 * broadcast is one frame of about 10 KB per currency, each published on its own topic. The peers
 * publish frames of the same shape and size (bench/peers/market.mjs), one string per topic.
 *
 * The coordinator (this process) starts one server at a time, has the client processes
 * (`bench/fanout-client.ts`) open N Bun WebSocket clients (at most 256 handshakes in flight), then
 * triggers broadcasts one after another: it stamps the trigger, POSTs, and waits until every client
 * has the frame before the next one. Every timestamp is taken in a Bun process on the same machine
 * clock, so latencies are trigger-to-receipt on one clock. Server memory and CPU come from
 * /proc/<pid>/status (VmRSS), /proc/<pid>/stat (utime + stime) and /proc/<pid>/task/<tid>/schedstat.
 *
 * CPU placement: with 2 cores, the server under test is pinned to core 0 and the load generator
 * (this process and the client processes) to core 1, with `taskset`, so that the server always has
 * exactly one core to itself and the generator never steals it (BENCH_PIN=0 turns this off).
 * Servers run one at a time and alternate (dashcast, bare Bun, Node; rotated every repetition).
 *
 * Environment: BENCH_QUICK=1 (1k and 5k clients, the SSE rungs and the watchlist rung, one repetition), BENCH_RUNGS=1000,5000,
 * BENCH_WATCHLIST=1 (only the watchlist rung) or 0 (without it), BENCH_WATCHLIST_CLIENTS=10000,
 * BENCH_SSE=1 (only the SSE rungs) or 0 (without them), BENCH_SSE_RUNGS=1000,10000,
 * BENCH_BURST=10, BENCH_SERVERS=dashcast,bun,node, BENCH_REPS=3, BENCH_CLIENT_PROCS=2, BENCH_PIN=0,
 * BENCH_BUDGET_SECONDS=1500, DASHCAST_BIN.
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs"
import os from "node:os"
import { join } from "node:path"
import type { Subprocess } from "bun"
import {
  type ClientCommand,
  type ClientReply,
  type ConnectResult,
  cpuNanos,
  cpuTicks,
  type FrameCheck,
  mainThreadWaitNanos,
  median,
  now,
  openFileLimit,
  percentile,
  type PhaseReport,
  rssKiB,
  sleep,
  sortedNumbers,
  TICKS_PER_SECOND
} from "./lib.js"

const ROOT = join(import.meta.dir, "..")
const RESULTS = join(import.meta.dir, "results")
const BUN = process.execPath
const DASHCAST_BIN = process.env["DASHCAST_BIN"] ?? join(ROOT, "dist", "dashcast")
const env = (name: string) => process.env[name]
const QUICK = env("BENCH_QUICK") === "1"
const REPS = Number(env("BENCH_REPS") ?? (QUICK ? 1 : 3))
const CLIENT_PROCS = Math.max(1, Number(env("BENCH_CLIENT_PROCS") ?? 2))
const MAX_IN_FLIGHT = 256
const HOST = "127.0.0.1"
const TOKEN = "bench-token"
const TARGET_RUNG = 10_000
const IDLE_SECONDS = QUICK ? 3 : 10
const COALESCE_REQUESTS = 1000
const WARMUP_CLIENTS = 200
const WARMUP_BROADCASTS = 100
/**
 * RSS is read every 200 ms for this long after the warm-up and after the ramp, and the lowest
 * reading counts (per rung: `Rung.settleMs`). Garbage (the warm-up's frames, a welcome string per
 * socket) goes back to the system only after a collection. With ~600-byte frames that is a few MiB
 * and 1 s is enough. In the watchlist rung dashcast's warm-up (100 force updates of 50 assets ×
 * 3 currencies) leaves ~30 MiB that is returned only about 10 s after the warm-up, and the ramp's
 * 10 KB welcomes (~100 MiB at 10k clients) 1 to 3 s after it; with shorter windows the figure
 * measured the collector's timing (from -1.4 to +10.6 KiB per connection), not the sockets.
 */
const SETTLE_MS = 1000
const WATCHLIST_SETTLE_MS = 12_000
const startedAt = now()
const DEADLINE = startedAt + Number(env("BENCH_BUDGET_SECONDS") ?? 1500) * 1000

const fdLimit = openFileLimit()
// The server holds one descriptor per client plus a few dozen of its own; keep 300 spare.
const maxClients = Math.min(19_000, fdLimit - 300)

/**
 * The watchlist rung's assets: 50 well-known CoinGecko ids (the demo feed knows the magnitudes of
 * the first 15 it lists and gives the others a generic profile), in three currencies.
 */
const WATCHLIST_ASSETS = [
  "bitcoin", "ethereum", "tether", "ripple", "binancecoin", "solana", "usd-coin", "tron", "dogecoin", "cardano",
  "chainlink", "avalanche-2", "shiba-inu", "polkadot", "litecoin", "stellar", "bitcoin-cash", "hedera-hashgraph",
  "the-open-network", "sui", "hyperliquid", "monero", "uniswap", "dai", "aave", "pepe", "near", "aptos",
  "internet-computer", "ethereum-classic", "ondo-finance", "mantle", "crypto-com-chain", "cosmos", "arbitrum",
  "filecoin", "algorand", "vechain", "render-token", "optimism", "injective-protocol", "the-graph", "kaspa",
  "bittensor", "okb", "maker", "leo-token", "wrapped-bitcoin", "immutable-x", "polygon-ecosystem-token"
]
const WATCHLIST_CURRENCIES = ["usd", "eur", "gbp"]

/**
 * After the watchlist rung's measured phase: this many force updates back to back (each trigger
 * waits only for the server's answer, not for the clients), so ~10 KB frames go out as fast as the
 * server can send them, to see whether any socket's queue reaches Bun's backpressure limit (frames
 * dropped; dashcast's `drain` then re-sends the latest) and what the queues cost in memory. Not a target.
 */
const BURST = Number(env("BENCH_BURST") ?? 10)

/** One rung: a number of clients, and which watchlist the servers serve them. */
interface Rung {
  readonly key: string
  /** The servers (and client transports) compared in this rung. */
  readonly servers: ReadonlyArray<ServerKey>
  readonly clients: number
  /** ASSETS and CURRENCIES for every server of the rung (dashcast and both peers read the same). */
  readonly env: Record<string, string>
  readonly check: FrameCheck
  /** How long RSS is watched (lowest reading) after the warm-up and after the ramp. */
  readonly settleMs: number
  /** Force updates sent back to back after the measured phase (0: none); see `BURST`. */
  readonly burst: number
  readonly title: string
}

const REFERENCE_SERVERS: ReadonlyArray<ServerKey> = ["dashcast", "bun", "node"]

const defaultRung = (clients: number): Rung => ({
  key: String(clients),
  servers: REFERENCE_SERVERS,
  clients,
  env: { ASSETS: "bitcoin", CURRENCIES: "usd" },
  check: { currencies: ["usd"], inUrl: false, assets: 1, data: true },
  settleMs: SETTLE_MS,
  burst: 0,
  title: `${clients.toLocaleString("en-US")} clients`
})

const watchlistRung = (clients: number): Rung => ({
  key: `watchlist-${clients}`,
  servers: REFERENCE_SERVERS,
  clients,
  env: { ASSETS: WATCHLIST_ASSETS.join(","), CURRENCIES: WATCHLIST_CURRENCIES.join(",") },
  check: { currencies: WATCHLIST_CURRENCIES, inUrl: true, assets: WATCHLIST_ASSETS.length, data: true },
  settleMs: WATCHLIST_SETTLE_MS,
  burst: BURST,
  title: `Watchlist: ${WATCHLIST_ASSETS.length} assets × ${WATCHLIST_CURRENCIES.length} currencies, ` +
    `${clients.toLocaleString("en-US")} clients spread over ${WATCHLIST_CURRENCIES.map((c) => `\`?currency=${c}\``).join(", ")}`
})

/**
 * The SSE rung: dashcast's default watchlist, the same binary and broadcasts, its clients once on
 * WebSockets (`dashcast`) and once on event streams (`dashcast-sse`), to price a stream against a socket.
 */
const sseRung = (clients: number): Rung => ({
  ...defaultRung(clients),
  key: `sse-${clients}`,
  servers: ["dashcast", "dashcast-sse"],
  title: `Server-Sent Events against WebSockets, the same binary: ${clients.toLocaleString("en-US")} clients`
})

const WATCHLIST = env("BENCH_WATCHLIST")
const SSE = env("BENCH_SSE")
const WATCHLIST_CLIENTS = Math.min(Number(env("BENCH_WATCHLIST_CLIENTS") ?? TARGET_RUNG), maxClients)
const only = WATCHLIST === "1" || SSE === "1"
const RUNGS: ReadonlyArray<Rung> = [
  ...(only ? [] : (env("BENCH_RUNGS")?.split(",").map(Number) ?? (QUICK ? [1000, 5000] : [1000, 5000, 10_000, 19_000]))
    .map((n) => defaultRung(Math.min(n, maxClients)))),
  ...(SSE === "0" || WATCHLIST === "1" ? [] : (env("BENCH_SSE_RUNGS")?.split(",").map(Number) ?? [1000, 10_000])
    .map((n) => sseRung(Math.min(n, maxClients)))),
  ...(WATCHLIST === "0" || SSE === "1" ? [] : [watchlistRung(WATCHLIST_CLIENTS)])
]
const isSseRung = (rung: Rung) => rung.key.startsWith("sse-")
const isDefaultRung = (rung: Rung) => !rung.key.startsWith("watchlist") && !isSseRung(rung)
/** The rung whose first run also measures idle CPU: the default 10k rung, else the largest default one, else the watchlist. */
const IDLE_RUNG = RUNGS.find((r) => r.key === String(TARGET_RUNG)) ??
  RUNGS.filter(isDefaultRung).at(-1) ?? RUNGS.filter((r) => !isSseRung(r)).at(-1)
/** The SSE rung whose first run measures idle CPU too (heartbeats every 15 s against socket pings): the largest. */
const IDLE_SSE_RUNG = RUNGS.filter(isSseRung).at(-1)
/** Broadcasts per scenario: enough deliveries (about 100k) for a CPU reading in 10 ms ticks. */
const broadcastsFor = (clients: number) => Math.min(100, Math.max(15, Math.round(100_000 / clients)))

// ---- CPU placement ----------------------------------------------------------------------------
const cores = os.cpus().length
const PIN = env("BENCH_PIN") !== "0" && cores >= 2 && Bun.which("taskset") !== null
const SERVER_CPUS = "0"
const CLIENT_CPUS = cores === 2 ? "1" : `1-${cores - 1}`
const serverPrefix = PIN ? ["taskset", "-c", SERVER_CPUS] : []
const clientPrefix = PIN ? ["taskset", "-c", CLIENT_CPUS] : []
if (PIN) Bun.spawnSync(["taskset", "-pc", CLIENT_CPUS, String(process.pid)], { stdout: "ignore" })

const log = (line: string) => console.error(`[bench ${((now() - startedAt) / 1000).toFixed(0).padStart(3)}s] ${line}`)

// ---- servers under test -----------------------------------------------------------------------
type ServerKey = "dashcast" | "bun" | "node" | "dashcast-sse"
interface ServerSpec {
  readonly key: ServerKey
  readonly label: string
  /** How its clients connect: WebSockets to `/ws`, or event streams from `/api/stream`. */
  readonly transport: "websocket" | "sse"
  readonly cmd: (port: number) => Array<string>
  readonly env: Record<string, string>
  readonly readyPath: string
}

const dashcastEnv = (minFetchGap: string): Record<string, string> => ({
  DEMO: "true",
  ADMIN_TOKEN: TOKEN,
  MIN_FETCH_GAP: minFetchGap,
  UPDATE_INTERVAL: "24 hours",
  FRESHNESS: "24 hours",
  CACHE_PATH: ":memory:",
  LOG_LEVEL: "info"
})

const ALL_SERVERS: ReadonlyArray<ServerSpec> = [
  {
    key: "dashcast",
    label: "dashcast",
    transport: "websocket",
    cmd: (port) => [DASHCAST_BIN, "--host", HOST, "--port", String(port)],
    env: dashcastEnv("0 seconds"),
    readyPath: "/readyz"
  },
  {
    key: "dashcast-sse",
    label: "dashcast SSE",
    transport: "sse",
    cmd: (port) => [DASHCAST_BIN, "--host", HOST, "--port", String(port)],
    env: dashcastEnv("0 seconds"),
    readyPath: "/readyz"
  },
  {
    key: "bun",
    label: "bare Bun",
    transport: "websocket",
    cmd: () => [BUN, join(import.meta.dir, "peers", "bare-bun.ts")],
    env: { ADMIN_TOKEN: TOKEN, HOST },
    readyPath: "/healthz"
  },
  {
    key: "node",
    label: "Node ws",
    transport: "websocket",
    cmd: () => ["node", join(import.meta.dir, "peers", "node-ws.mjs")],
    env: { ADMIN_TOKEN: TOKEN, HOST },
    readyPath: "/healthz"
  }
]

/** BENCH_SERVERS=dashcast,bun runs a subset (for a quick look; the report wants all three). */
const SERVERS = ALL_SERVERS.filter((s) => env("BENCH_SERVERS")?.split(",").includes(s.key) ?? true)
const serversOf = (rung: Rung) => SERVERS.filter((s) => rung.servers.includes(s.key))

const freePort = (): number => {
  for (let attempt = 0; attempt < 50; attempt++) {
    // Below the ephemeral range (32768+), so the clients' source ports never collide with it.
    const port = 20_000 + Math.floor(Math.random() * 12_000)
    try {
      Bun.listen({ hostname: HOST, port, socket: { data() {} } }).stop(true)
      return port
    } catch {
      // taken; try another
    }
  }
  throw new Error("no free port found")
}

interface RunningServer {
  readonly spec: ServerSpec
  readonly proc: Subprocess
  readonly port: number
  readonly base: string
}

const startServer = async (spec: ServerSpec, extraEnv: Record<string, string> = {}): Promise<RunningServer> => {
  const port = freePort()
  const proc = Bun.spawn([...serverPrefix, ...spec.cmd(port)], {
    cwd: ROOT,
    env: { ...process.env, ...spec.env, ...extraEnv, PORT: String(port) },
    stdout: "ignore",
    stderr: Bun.file(join(RESULTS, `${spec.key}.stderr.log`))
  })
  const base = `http://${HOST}:${port}`
  const deadline = now() + 15_000
  while (now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`${spec.label} exited with ${proc.exitCode} (see bench/results/${spec.key}.stderr.log)`)
    const ok = await fetch(base + spec.readyPath).then((r) => r.ok, () => false)
    if (ok) return { spec, proc, port, base }
    await sleep(20)
  }
  proc.kill("SIGKILL")
  throw new Error(`${spec.label} was not ready within 15 s`)
}

const stopServer = async (server: RunningServer) => {
  server.proc.kill("SIGTERM")
  const exited = await Promise.race([server.proc.exited.then(() => true), sleep(5000).then(() => false)])
  if (!exited) {
    server.proc.kill("SIGKILL")
    await server.proc.exited
  }
}

const currentSeq = async (server: RunningServer): Promise<number> => {
  const body = await (await fetch(`${server.base}/api/dashboard`)).json() as { seq: number }
  return body.seq
}

const trigger = async (server: RunningServer): Promise<{ status: number; seq: number }> => {
  const response = await fetch(`${server.base}/api/dashboard/refresh`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}` }
  })
  const body = await response.json().catch(() => ({})) as { seq?: number }
  return { status: response.status, seq: body.seq ?? -1 }
}

// ---- client processes -------------------------------------------------------------------------
type Reply<T extends ClientReply["type"]> = Extract<ClientReply, { type: T }>

class ClientProcess {
  private readonly waiting = new Map<string, (reply: ClientReply) => void>()
  readonly proc: Subprocess
  readonly ready: Promise<Reply<"ready">>

  constructor(onDone: (seq: number) => void) {
    this.proc = Bun.spawn([...clientPrefix, BUN, join(import.meta.dir, "fanout-client.ts")], {
      cwd: ROOT,
      stdio: ["ignore", "inherit", "inherit"],
      ipc: (message) => {
        const reply = message as ClientReply
        if (reply.type === "done") return onDone(reply.seq)
        const waiter = this.waiting.get(reply.type)
        this.waiting.delete(reply.type)
        waiter?.(reply)
      }
    })
    this.ready = this.expect("ready", 15_000)
  }

  private expect<T extends ClientReply["type"]>(type: T, timeoutMs: number): Promise<Reply<T>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(type)
        reject(new Error(`client process did not answer ${type} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.waiting.set(type, (reply) => {
        clearTimeout(timer)
        resolve(reply as Reply<T>)
      })
    })
  }

  request<T extends ClientReply["type"]>(command: ClientCommand, answer: T, timeoutMs: number): Promise<Reply<T>> {
    const reply = this.expect(answer, timeoutMs)
    this.proc.send(command)
    return reply
  }
}

const doneCounts = new Map<number, number>()
let doneWaiter: { seq: number; need: number; resolve: (ok: boolean) => void } | undefined
const onDone = (seq: number) => {
  const count = (doneCounts.get(seq) ?? 0) + 1
  doneCounts.set(seq, count)
  if (doneWaiter !== undefined && doneWaiter.seq === seq && count >= doneWaiter.need) {
    const { resolve } = doneWaiter
    doneWaiter = undefined
    resolve(true)
  }
}
const waitDone = (seq: number, need: number, timeoutMs: number) =>
  new Promise<boolean>((resolve) => {
    if ((doneCounts.get(seq) ?? 0) >= need) return resolve(true)
    const timer = setTimeout(() => {
      doneWaiter = undefined
      resolve(false)
    }, timeoutMs)
    doneWaiter = {
      seq,
      need,
      resolve: (ok) => {
        clearTimeout(timer)
        resolve(ok)
      }
    }
  })

const clients: Array<ClientProcess> = []

/** Splits `total` clients over the client processes; returns each one's share. */
const shares = (total: number) =>
  clients.map((_, i) => Math.floor(total / clients.length) + (i < total % clients.length ? 1 : 0))

interface Connected {
  readonly opened: number
  readonly failed: number
  readonly ratePerSecond: number
  readonly welcomeMs: Float64Array
  readonly welcomeBytes: Readonly<Record<string, number>>
  readonly badWelcomes: number
  readonly active: ReadonlyArray<number>
}

const connectAll = async (server: RunningServer, total: number, check: FrameCheck): Promise<Connected> => {
  const share = shares(total)
  const active = share.flatMap((n, i) => (n > 0 ? [i] : []))
  const perProcess = Math.max(1, Math.floor(MAX_IN_FLIGHT / active.length))
  // Client k of the scenario (over all processes) has currency k mod the currencies: an even spread.
  const firstIndex = share.map((_, i) => share.slice(0, i).reduce((a, n) => a + n, 0))
  const results: Array<ConnectResult> = await Promise.all(active.map((i) =>
    clients[i]!.request({
      type: "connect",
      url: server.spec.transport === "sse" ? `http://${HOST}:${server.port}/api/stream` : `ws://${HOST}:${server.port}/ws`,
      transport: server.spec.transport,
      count: share[i]!,
      firstIndex: firstIndex[i]!,
      check,
      maxInFlight: perProcess,
      timeoutMs: 60_000
    }, "connected", 70_000).then((r) => r.result)
  ))
  const firstStart = Math.min(...results.map((r) => r.firstStart))
  const lastOpen = Math.max(...results.map((r) => r.lastOpen))
  const opened = results.reduce((a, r) => a + r.opened, 0)
  return {
    opened,
    failed: results.reduce((a, r) => a + r.failed, 0),
    ratePerSecond: opened / ((lastOpen - firstStart) / 1000),
    welcomeMs: sortedNumbers(results.flatMap((r) => r.welcomeMs)),
    welcomeBytes: Object.assign({}, ...results.map((r) => r.welcomeBytes)),
    badWelcomes: results.reduce((a, r) => a + r.badWelcomes, 0),
    active
  }
}

const closeAll = (active: ReadonlyArray<number>) =>
  Promise.all(active.map((i) => clients[i]!.request({ type: "close", timeoutMs: 10_000 }, "closed", 15_000)))

interface Phase {
  readonly broadcasts: number
  readonly completionMs: Float64Array
  readonly firstDeliveryMs: Float64Array
  readonly latencyMs: Float64Array
  readonly lost: number
  readonly clientsWithLoss: number
  readonly missedLast: number
  readonly duplicates: number
  readonly unexpected: number
  readonly unexpectedCloses: number
  readonly wrongCurrency: number
  readonly malformed: number
  readonly triggerErrors: number
  readonly timeouts: number
  readonly cpuTicks: number
  /** CPU ticks of the load generator (coordinator and client processes) over the phase. */
  readonly generatorTicks: number
  /** Time the server's main thread was runnable but waited for its core (other work on it), over the phase. */
  readonly waitNanos: number
  /** The server's highest RSS over the phase (read every 100 ms). */
  readonly peakRssKiB: number
  /** First trigger until every client had the last broadcast (NaN when some never got it). */
  readonly spanMs: number
  readonly seconds: number
  readonly updateBytes: Readonly<Record<string, number>>
}

/** CPU ticks of the load generator: this process and every client process. */
const generatorTicks = () => cpuTicks(process.pid) + clients.reduce((a, c) => a + cpuTicks(c.proc.pid), 0)

/** Per currency, the mean of the client processes' means (every process samples every broadcast). */
const meanBytes = (perProcess: ReadonlyArray<Readonly<Record<string, number>>>): Record<string, number> => {
  const out: Record<string, number> = {}
  for (const currency of new Set(perProcess.flatMap((r) => Object.keys(r)))) {
    const values = perProcess.flatMap((r) => (r[currency] === undefined ? [] : [r[currency]]))
    out[currency] = values.reduce((a, b) => a + b, 0) / values.length
  }
  return out
}

/**
 * `count` broadcasts one after another, each waited for at every client (or until a timeout); or,
 * as a `burst`, triggered back to back (each trigger waits only for the server's answer) and waited
 * for once, until every client has the last one.
 */
const broadcastPhase = async (
  server: RunningServer,
  connected: Connected,
  count: number,
  { burst = false, gapMs = 5 }: { readonly burst?: boolean; readonly gapMs?: number } = {}
): Promise<Phase> => {
  const active = connected.active
  const firstSeq = (await currentSeq(server)) + 1
  await Promise.all(active.map((i) => clients[i]!.request({ type: "arm", firstSeq, count }, "armed", 10_000)))
  doneCounts.clear()
  const triggers: Array<number> = []
  let triggerErrors = 0
  let timeouts = 0
  const waitMs = 2000 + connected.opened * 0.3
  const began = now()
  const cpuBefore = cpuTicks(server.proc.pid)
  const waitBefore = mainThreadWaitNanos(server.proc.pid)
  const generatorBefore = generatorTicks()
  let peakRss = rssKiB(server.proc.pid)
  const rssPoll = setInterval(() => {
    if (server.proc.exitCode === null) peakRss = Math.max(peakRss, rssKiB(server.proc.pid))
  }, 100)
  for (let k = 0; k < count; k++) {
    const seq = firstSeq + k
    triggers.push(now())
    const answer = await trigger(server)
    if (answer.status !== 200 || answer.seq !== seq) {
      triggerErrors++
      log(`  trigger ${k}: HTTP ${answer.status}, seq ${answer.seq} (expected ${seq})`)
    }
    if (burst) continue
    if (!(await waitDone(seq, active.length, waitMs))) timeouts++
    await sleep(gapMs)
  }
  if (burst && !(await waitDone(firstSeq + count - 1, active.length, 30_000))) timeouts++
  clearInterval(rssPoll)
  const cpu = cpuTicks(server.proc.pid) - cpuBefore
  const generator = generatorTicks() - generatorBefore
  const waitNanos = mainThreadWaitNanos(server.proc.pid) - waitBefore
  const seconds = (now() - began) / 1000
  const reports: Array<PhaseReport> = await Promise.all(
    active.map((i) => clients[i]!.request({ type: "report", triggers }, "report", 30_000).then((r) => r.report))
  )
  const completion: Array<number> = []
  const firstDelivery: Array<number> = []
  const lastOfLast = Math.max(...reports.map((r) => r.lastReceivedAt[count - 1] ?? 0))
  const everyClientHasLast = reports.every((r) => r.missedLast === 0)
  for (let k = 0; k < count; k++) {
    const last = Math.max(...reports.map((r) => r.lastReceivedAt[k] ?? 0))
    completion.push(last > 0 ? last - triggers[k]! : Number.NaN)
    const first = Math.min(...reports.map((r) => r.firstReceivedAt[k] || Number.POSITIVE_INFINITY))
    firstDelivery.push(Number.isFinite(first) ? first - triggers[k]! : Number.NaN)
  }
  const sum = (f: (r: PhaseReport) => number) => reports.reduce((a, r) => a + f(r), 0)
  return {
    broadcasts: count,
    completionMs: sortedNumbers(completion.filter(Number.isFinite)),
    firstDeliveryMs: sortedNumbers(firstDelivery.filter(Number.isFinite)),
    latencyMs: sortedNumbers(reports.flatMap((r) => r.latencyMs)),
    lost: sum((r) => r.lost),
    clientsWithLoss: sum((r) => r.clientsWithLoss),
    missedLast: sum((r) => r.missedLast),
    duplicates: sum((r) => r.duplicates),
    unexpected: sum((r) => r.unexpected),
    unexpectedCloses: sum((r) => r.unexpectedCloses),
    wrongCurrency: sum((r) => r.wrongCurrency),
    malformed: sum((r) => r.malformed),
    triggerErrors,
    timeouts,
    cpuTicks: cpu,
    generatorTicks: generator,
    waitNanos,
    peakRssKiB: peakRss,
    spanMs: everyClientHasLast && lastOfLast > 0 ? lastOfLast - triggers[0]! : Number.NaN,
    seconds,
    updateBytes: meanBytes(reports.map((r) => r.updateBytes))
  }
}

// ---- one scenario -----------------------------------------------------------------------------
interface Sample {
  readonly server: ServerKey
  /** The rung's key: its number of clients, or `watchlist-<clients>`. */
  readonly rung: string
  readonly clients: number
  readonly rep: number
  readonly connected: number
  readonly failedConnects: number
  readonly connectRate: number
  readonly welcomeP50: number
  readonly welcomeP99: number
  readonly completionP50: number
  readonly completionMax: number
  readonly firstDeliveryP50: number
  readonly messageP50: number
  readonly messageP99: number
  readonly lost: number
  readonly wrongCurrency: number
  readonly duplicates: number
  readonly malformed: number
  readonly rssPerConnKiB: number
  readonly rssGrowthMiB: number
  readonly cpuUsPerConnect: number
  readonly cpuUsPerDelivery: number
  /** Server and load-generator CPU over the broadcast phase, in % of one core. */
  readonly serverBusyPercent: number
  readonly generatorBusyPercent: number
  /** Time the server's main thread waited for its core while runnable, in % of the broadcast phase. */
  readonly serverWaitPercent: number
  readonly idleCpuPercent: number
  /** Per currency: the size of a welcome and the mean size of an update, as the clients received them. */
  readonly welcomeBytes: Readonly<Record<string, number>>
  readonly updateBytes: Readonly<Record<string, number>>
  readonly broadcasts: number
  /** The burst after the measured phase (NaN without one): frames clients never got, clients left without the last one, frames they got twice. */
  readonly burstSkipped: number
  readonly burstMissedLatest: number
  readonly burstDuplicates: number
  /** The server's peak RSS during the burst over its settled RSS with every client connected. */
  readonly burstPeakGrowthMiB: number
  /** First trigger of the burst until every client had its last frame. */
  readonly burstSpanMs: number
  readonly anomalies: string
  readonly seconds: number
}

/** The lowest RSS of a process over `ms`, read every 200 ms. */
const settledRss = async (pid: number, ms: number): Promise<number> => {
  let lowest = rssKiB(pid)
  for (let waited = 0; waited < ms; waited += 200) {
    await sleep(200)
    lowest = Math.min(lowest, rssKiB(pid))
  }
  return lowest
}

const scenario = async (spec: ServerSpec, rung: Rung, rep: number, idleSeconds: number): Promise<Sample> => {
  const began = now()
  const total = rung.clients
  const server = await startServer(spec, rung.env)
  try {
    // Warm-up: JIT the connect, welcome and broadcast paths before anything is measured (dashcast's
    // force-update path costs ~3 ms of CPU per call for its first few dozen calls, ~0.3 ms once warm).
    const warm = await connectAll(server, Math.min(WARMUP_CLIENTS, total), rung.check)
    await broadcastPhase(server, warm, WARMUP_BROADCASTS, { gapMs: 1 })
    await closeAll(warm.active)
    const rssBefore = await settledRss(server.proc.pid, rung.settleMs)

    const cpuBeforeConnect = cpuNanos(server.proc.pid)
    const connected = await connectAll(server, total, rung.check)
    const connectNanos = cpuNanos(server.proc.pid) - cpuBeforeConnect
    const rssAfter = await settledRss(server.proc.pid, rung.settleMs)

    let idleCpuPercent = Number.NaN
    if (idleSeconds > 0) {
      const before = cpuTicks(server.proc.pid)
      await sleep(idleSeconds * 1000)
      idleCpuPercent = ((cpuTicks(server.proc.pid) - before) / TICKS_PER_SECOND / idleSeconds) * 100
    }

    const phase = await broadcastPhase(server, connected, broadcastsFor(total))
    const burst = rung.burst > 0 ? await broadcastPhase(server, connected, rung.burst, { burst: true }) : undefined
    await closeAll(connected.active)
    const deliveries = phase.latencyMs.length
    const anomalies = [
      connected.failed > 0 ? `${connected.failed} failed connects` : "",
      connected.badWelcomes > 0 ? `${connected.badWelcomes} bad welcomes` : "",
      phase.duplicates > 0 ? `${phase.duplicates} duplicates` : "",
      phase.wrongCurrency > 0 ? `${phase.wrongCurrency} frames of another currency` : "",
      phase.malformed > 0 ? `${phase.malformed} malformed frames` : "",
      phase.unexpected > 0 ? `${phase.unexpected} unexpected frames` : "",
      phase.unexpectedCloses > 0 ? `${phase.unexpectedCloses} closes` : "",
      phase.triggerErrors > 0 ? `${phase.triggerErrors} trigger errors` : "",
      phase.timeouts > 0 ? `${phase.timeouts} broadcast timeouts` : "",
      (burst?.triggerErrors ?? 0) > 0 ? `burst: ${burst?.triggerErrors} trigger errors` : "",
      (burst?.timeouts ?? 0) > 0 ? "burst: not every client had the last frame within 30 s" : "",
      (burst?.wrongCurrency ?? 0) + (burst?.malformed ?? 0) > 0 ? "burst: frames of another currency or malformed" : ""
    ].filter((s) => s !== "").join(", ")
    return {
      server: spec.key,
      rung: rung.key,
      clients: total,
      rep,
      connected: connected.opened,
      failedConnects: connected.failed,
      connectRate: connected.ratePerSecond,
      welcomeP50: percentile(connected.welcomeMs, 0.5),
      welcomeP99: percentile(connected.welcomeMs, 0.99),
      completionP50: percentile(phase.completionMs, 0.5),
      completionMax: percentile(phase.completionMs, 1),
      firstDeliveryP50: percentile(phase.firstDeliveryMs, 0.5),
      messageP50: percentile(phase.latencyMs, 0.5),
      messageP99: percentile(phase.latencyMs, 0.99),
      lost: phase.lost,
      wrongCurrency: phase.wrongCurrency,
      duplicates: phase.duplicates,
      malformed: phase.malformed + connected.badWelcomes,
      rssPerConnKiB: (rssAfter - rssBefore) / connected.opened,
      rssGrowthMiB: (rssAfter - rssBefore) / 1024,
      cpuUsPerConnect: connectNanos / 1000 / connected.opened,
      cpuUsPerDelivery: deliveries > 0 ? (phase.cpuTicks / TICKS_PER_SECOND) * 1e6 / deliveries : Number.NaN,
      serverBusyPercent: (phase.cpuTicks / TICKS_PER_SECOND / phase.seconds) * 100,
      generatorBusyPercent: (phase.generatorTicks / TICKS_PER_SECOND / phase.seconds) * 100,
      serverWaitPercent: (phase.waitNanos / 1e9 / phase.seconds) * 100,
      idleCpuPercent,
      welcomeBytes: connected.welcomeBytes,
      updateBytes: phase.updateBytes,
      broadcasts: phase.broadcasts,
      burstSkipped: burst?.lost ?? Number.NaN,
      burstMissedLatest: burst?.missedLast ?? Number.NaN,
      burstDuplicates: burst?.duplicates ?? Number.NaN,
      burstPeakGrowthMiB: burst === undefined ? Number.NaN : (burst.peakRssKiB - rssAfter) / 1024,
      burstSpanMs: burst?.spanMs ?? Number.NaN,
      anomalies,
      seconds: (now() - began) / 1000
    }
  } finally {
    await stopServer(server)
  }
}

// ---- (5) 1,000 concurrent force updates -------------------------------------------------------
interface Coalescing {
  readonly requests: number
  readonly seqBefore: number
  readonly seqAfter: number
  readonly ok: number
  readonly okSeqs: ReadonlyArray<number>
  readonly tooSoon: number
  readonly other: Record<string, number>
  readonly broadcastsSeen: number
  readonly spreadMs: number
}

/**
 * Opens `count` TCP connections first (at most 256 in flight), then writes one force-update request
 * on each in one loop, so they all reach dashcast together; collects status and seq of each answer.
 */
const concurrentForceUpdates = async (port: number, count: number) => {
  const request = `POST /api/dashboard/refresh HTTP/1.1\r\nHost: ${HOST}:${port}\r\nAuthorization: Bearer ${TOKEN}\r\n` +
    "Content-Length: 0\r\nConnection: close\r\n\r\n"
  const answers: Array<string> = new Array(count).fill("")
  let finished = 0
  let allFinished: () => void = () => {}
  const finishedAll = new Promise<void>((resolve) => (allFinished = resolve))
  const sockets: Array<{ write: (s: string) => number; end: () => void }> = []
  for (let start = 0; start < count; start += MAX_IN_FLIGHT) {
    const batch = Array.from({ length: Math.min(MAX_IN_FLIGHT, count - start) }, (_, j) => {
      const index = start + j
      let closed = false
      const close = () => {
        if (closed) return
        closed = true
        if (++finished === count) allFinished()
      }
      return Bun.connect({
        hostname: HOST,
        port,
        socket: {
          data(_socket, chunk) {
            answers[index] += chunk.toString()
          },
          close,
          end: close,
          error: close,
          connectError: close
        }
      })
    })
    sockets.push(...await Promise.all(batch))
  }
  return {
    fire: async () => {
      const t0 = now()
      for (const socket of sockets) socket.write(request)
      const spreadMs = now() - t0
      await Promise.race([finishedAll, sleep(30_000)])
      for (const socket of sockets) socket.end()
      return { answers, spreadMs }
    }
  }
}

const coalescingTest = async (): Promise<Coalescing> => {
  const gapSeconds = 3
  const spec = ALL_SERVERS.find((s) => s.key === "dashcast")!
  const server = await startServer(spec, { ...dashcastEnv(`${gapSeconds} seconds`), ...defaultRung(COALESCE_REQUESTS).env })
  const readyAt = now()
  try {
    let broadcastsSeen = 0
    const watcher = new WebSocket(`ws://${HOST}:${server.port}/ws`)
    watcher.onmessage = (event) => {
      if (String(event.data).includes("\"type\":\"dashboard_update\"")) broadcastsSeen++
    }
    await new Promise<void>((resolve) => (watcher.onopen = () => resolve()))
    const posts = await concurrentForceUpdates(server.port, COALESCE_REQUESTS)
    // The initial load was an upstream call: wait until MIN_FETCH_GAP has passed since then.
    await sleep(Math.max(0, readyAt + gapSeconds * 1000 + 300 - now()))
    const seqBefore = await currentSeq(server)
    const { answers, spreadMs } = await posts.fire()
    await sleep(300)
    const seqAfter = await currentSeq(server)
    watcher.close()
    let ok = 0
    let tooSoon = 0
    const okSeqs = new Set<number>()
    const other: Record<string, number> = {}
    for (const answer of answers) {
      const status = /^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? "no answer"
      if (status === "200") {
        ok++
        okSeqs.add(Number(/"seq":(\d+)/.exec(answer)?.[1] ?? -1))
      } else if (status === "429") tooSoon++
      else other[status] = (other[status] ?? 0) + 1
    }
    return { requests: COALESCE_REQUESTS, seqBefore, seqAfter, ok, okSeqs: [...okSeqs], tooSoon, other, broadcastsSeen, spreadMs }
  } finally {
    await stopServer(server)
  }
}

// ---- report -----------------------------------------------------------------------------------
const fmt = (x: number, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : "n/a")
const ratio = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${(a / b).toFixed(2)}×` : "n/a")

interface Metric {
  readonly label: string
  readonly value: (s: Sample) => number
  readonly digits: number
  readonly aggregate?: "sum"
}
const metric = (key: keyof Sample, label: string, digits: number, aggregate?: "sum"): Metric => ({
  label,
  value: (s) => s[key] as number,
  digits,
  ...(aggregate === undefined ? {} : { aggregate })
})
const METRICS: ReadonlyArray<Metric> = [
  metric("connectRate", "connect rate (conn/s)", 0),
  metric("welcomeP50", "welcome latency p50 (ms)", 2),
  metric("welcomeP99", "welcome latency p99 (ms)", 2),
  metric("completionP50", "broadcast completion p50 (ms)", 2),
  metric("completionMax", "broadcast completion max (ms)", 2),
  metric("firstDeliveryP50", "trigger to first client p50 (ms)", 2),
  metric("messageP50", "per-message latency p50 (ms)", 2),
  metric("messageP99", "per-message latency p99 (ms)", 2),
  metric("lost", "messages lost (sum of runs)", 0, "sum"),
  metric("wrongCurrency", "frames of another currency (sum of runs)", 0, "sum"),
  metric("duplicates", "duplicate frames (sum of runs)", 0, "sum"),
  metric("malformed", "frames failing the full check (sum of runs)", 0, "sum"),
  metric("rssPerConnKiB", "server RSS per connection (KiB)", 2),
  metric("rssGrowthMiB", "server RSS growth while connecting (MiB)", 1),
  metric("cpuUsPerConnect", "server CPU per connection, upgrade + welcome (µs)", 1),
  metric("cpuUsPerDelivery", "server CPU per delivered message (µs)", 2),
  metric("serverBusyPercent", "server CPU during the broadcasts (% of a core)", 0),
  metric("generatorBusyPercent", "load generator CPU during the broadcasts (% of a core)", 0),
  metric("serverWaitPercent", "server main thread waiting for its core during the broadcasts (%)", 1),
  metric("idleCpuPercent", `server CPU, ${IDLE_SECONDS} s idle (% of a core)`, 2)
]

const BURST_METRICS: ReadonlyArray<Metric> = [
  metric("burstSkipped", "frames a client never got (sum of runs)", 0, "sum"),
  metric("burstMissedLatest", "clients left without the last frame (sum of runs)", 0, "sum"),
  metric("burstDuplicates", "frames a client got twice (sum of runs)", 0, "sum"),
  metric("burstSpanMs", "first trigger → every client has the last frame (ms)", 0),
  metric("burstPeakGrowthMiB", "server peak RSS over its settled RSS (MiB)", 1)
]

/** Frame sizes per currency; without a currency in the label when the rung has one. */
const frameMetrics = (rung: Rung): ReadonlyArray<Metric> => {
  const one = rung.check.currencies.length === 1
  return rung.check.currencies.flatMap((c) => [
    { label: `welcome frame${one ? "" : `, ${c}`} (bytes)`, value: (s: Sample) => s.welcomeBytes[c] ?? Number.NaN, digits: 0 },
    { label: `update frame${one ? "" : `, ${c}`} (bytes, mean)`, value: (s: Sample) => s.updateBytes[c] ?? Number.NaN, digits: 0 }
  ])
}

const machineLine = () => {
  const nodeVersion = Bun.spawnSync(["node", "--version"]).stdout.toString().trim()
  const cpu = os.cpus()[0]?.model.trim() ?? "unknown CPU"
  const memory = (os.totalmem() / 2 ** 30).toFixed(1)
  return `${cores} cores (${cpu}), ${memory} GiB, Linux ${os.release()}, Bun ${Bun.version}, Node ${nodeVersion}, ` +
    `open-file limit ${fdLimit}; ` +
    (PIN ? `server pinned to core ${SERVER_CPUS}, load generator (${CLIENT_PROCS} client processes + coordinator) to core ${CLIENT_CPUS}` : "no CPU pinning")
}

const aggregate = (samples: ReadonlyArray<Sample>, metric: Metric): number => {
  const values = samples.map(metric.value)
  if (metric.aggregate !== "sum") return median(values)
  return values.length === 0 ? Number.NaN : values.reduce((a, b) => a + b, 0)
}

/**
 * Above this share of the broadcast phase spent waiting for its core, a run is flagged as disturbed.
 * Some wait is the server's own (its GC threads share core 0 with its main thread); quick runs on
 * a quiet machine showed 12 to 22%, runs beside other work 35 to 85%.
 */
const DISTURBED_WAIT_PERCENT = 30
/** Above this, the load generator's core was nearly full: the clients may bound the completion time. */
const SATURATED_GENERATOR_PERCENT = 90

const check = (ok: boolean) => (ok ? "**pass**" : "**miss**")

/** The targets of issue 12 for one rung: completion and memory against bare Bun, and no frame lost or misrouted. */
const coreTargets = (samples: ReadonlyArray<Sample>, rung: Rung): Array<string> => {
  const at = (key: ServerKey, metric: keyof Sample) =>
    median(samples.filter((s) => s.rung === rung.key && s.server === key).map((s) => s[metric] as number))
  const dashcast = samples.filter((s) => s.rung === rung.key && s.server === "dashcast")
  const completion = at("dashcast", "completionP50") / at("bun", "completionP50")
  const memory = at("dashcast", "rssPerConnKiB") / at("bun", "rssPerConnKiB")
  const lost = dashcast.reduce((a, s) => a + s.lost, 0)
  const misrouted = dashcast.reduce((a, s) => a + s.wrongCurrency + s.malformed, 0)
  return [
    `| broadcast completion p50 ≤ 1.15× bare Bun | ${fmt(completion)}× | ${check(completion <= 1.15)} |`,
    `| server memory per connection ≤ 1.3× bare Bun | ${fmt(memory)}× | ${check(memory <= 1.3)} |`,
    `| no message lost (dashcast, every run) | ${lost} lost | ${check(lost === 0)} |`,
    `| every frame of the client's own currency and well formed (dashcast, every run) | ${misrouted} wrong | ${check(misrouted === 0)} |`
  ]
}

/** The notes under a rung's table: anomalies, disturbed runs, a saturated load generator. */
const runNotes = (samples: ReadonlyArray<Sample>, rung: Rung): Array<string> => {
  const out: Array<string> = []
  const anomalies = samples.filter((s) => s.rung === rung.key && s.anomalies !== "")
  for (const s of anomalies) out.push("", `- ${s.server} run ${s.rep + 1}: ${s.anomalies}`)
  const disturbed = samples.filter((s) => s.rung === rung.key && s.serverWaitPercent > DISTURBED_WAIT_PERCENT)
  for (const s of disturbed) {
    out.push("", `- ${s.server} run ${s.rep + 1}: its main thread waited ${fmt(s.serverWaitPercent, 1)}% of the broadcast phase for its core (other processes on core 0, or its own GC threads); its latencies say more about the machine than about the server`)
  }
  const saturated = samples.filter((s) => s.rung === rung.key && s.generatorBusyPercent > SATURATED_GENERATOR_PERCENT)
  for (const s of saturated) {
    out.push("", `- ${s.server} run ${s.rep + 1}: the load generator was ${fmt(s.generatorBusyPercent, 0)}% busy during the broadcasts; the clients, not the server, may have set its completion time`)
  }
  return out
}

/** An SSE rung: the same binary's WebSocket and event-stream clients side by side, and the ratio. */
const renderSse = (samples: ReadonlyArray<Sample>, rung: Rung): Array<string> => {
  const at = (key: ServerKey) => samples.filter((s) => s.rung === rung.key && s.server === key)
  const runs = Math.min(...serversOf(rung).map((s) => at(s.key).length))
  const out = [
    `### ${rung.title} (${runs} run${runs === 1 ? "" : "s"} per transport, ${at("dashcast")[0]?.broadcasts ?? "?"} broadcasts per run)`,
    "",
    "| metric | WebSocket (`/ws`) | SSE (`/api/stream`) | SSE / WebSocket |",
    "| --- | ---: | ---: | ---: |"
  ]
  for (const metric of [...METRICS, ...frameMetrics(rung)]) {
    const [ws, sse] = (["dashcast", "dashcast-sse"] as const).map((k) => aggregate(at(k), metric))
    if (![ws, sse].some((x) => Number.isFinite(x!))) continue
    out.push(`| ${metric.label} | ${fmt(ws!, metric.digits)} | ${fmt(sse!, metric.digits)} | ${ratio(sse!, ws!)} |`)
  }
  out.push(...runNotes(samples, rung), "")
  return out
}

const render = (samples: ReadonlyArray<Sample>, coalescing: Coalescing | undefined, notes: ReadonlyArray<string>) => {
  const out: Array<string> = []
  const rungs = RUNGS.filter((r) => samples.some((s) => s.rung === r.key))
  out.push("## Fan-out benchmark", "")
  out.push(`Machine: ${machineLine()}.`, "")
  out.push(
    `Each cell is the median over ${REPS} run${REPS === 1 ? "" : "s"} (servers alternating); ratios are dashcast's median over the reference's median. ` +
      "Broadcasts are sent one after another; each is waited for at every client.",
    ""
  )
  for (const rung of rungs) {
    if (isSseRung(rung)) {
      out.push(...renderSse(samples, rung))
      continue
    }
    const at = (key: ServerKey) => samples.filter((s) => s.rung === rung.key && s.server === key)
    const runs = Math.min(...serversOf(rung).map((s) => at(s.key).length))
    out.push(`### ${rung.title} (${runs} run${runs === 1 ? "" : "s"} per server, ${at("dashcast")[0]?.broadcasts ?? "?"} broadcasts per run)`, "")
    out.push("| metric | dashcast | bare Bun | Node ws | dashcast / bare Bun | dashcast / Node ws |")
    out.push("| --- | ---: | ---: | ---: | ---: | ---: |")
    for (const metric of [...METRICS, ...frameMetrics(rung)]) {
      const [d, b, n] = (["dashcast", "bun", "node"] as const).map((k) => aggregate(at(k), metric))
      if (![d, b, n].some((x) => Number.isFinite(x!))) continue
      out.push(`| ${metric.label} | ${fmt(d!, metric.digits)} | ${fmt(b!, metric.digits)} | ${fmt(n!, metric.digits)} | ${ratio(d!, b!)} | ${ratio(d!, n!)} |`)
    }
    out.push(...runNotes(samples, rung), "")
  }

  // Targets, at 10k clients of the default rung (or the largest default rung run, in quick mode).
  const defaults = rungs.filter(isDefaultRung)
  const targetRung = defaults.find((r) => r.clients === TARGET_RUNG) ?? defaults.at(-1)
  if (targetRung !== undefined) {
    const at = (key: ServerKey, metric: keyof Sample) =>
      median(samples.filter((s) => s.rung === targetRung.key && s.server === key).map((s) => s[metric] as number))
    const welcome = at("dashcast", "welcomeP99") / at("bun", "welcomeP99")
    const vsNode = at("dashcast", "completionP50") / at("node", "completionP50")
    const lost = samples.filter((s) => s.server === "dashcast" && !s.rung.startsWith("sse-")).reduce((a, s) => a + s.lost, 0)
    const idle = at("dashcast", "idleCpuPercent")
    out.push(`### Targets at ${targetRung.title}${targetRung.clients === TARGET_RUNG ? "" : " (quick mode: the largest rung run)"}`, "")
    out.push("| target | measured | result |", "| --- | --- | --- |")
    out.push(...coreTargets(samples, targetRung).slice(0, 2))
    out.push(`| welcome latency p99 ≤ 1.2× bare Bun | ${fmt(welcome)}× | ${check(welcome <= 1.2)} |`)
    out.push(`| broadcast completion p50 faster than Node ws | ${fmt(vsNode)}× Node | ${check(vsNode < 1)} |`)
    out.push(`| no message lost (dashcast, every rung and run) | ${lost} lost | ${check(lost === 0)} |`)
    if (Number.isFinite(idle)) {
      out.push(`| ${targetRung.clients.toLocaleString("en-US")} idle sockets cost near zero CPU (< 1% of a core over ${IDLE_SECONDS} s) | ${fmt(idle)}% | ${check(idle < 1)} |`)
    }
    if (coalescing !== undefined) {
      const c = coalescing
      const one = c.seqAfter === c.seqBefore + 1 && c.okSeqs.every((s) => s === c.seqBefore + 1) && c.broadcastsSeen === 1
      const others = Object.entries(c.other).map(([status, n]) => `${n}× ${status}`).join(", ")
      out.push(
        `| ${c.requests.toLocaleString("en-US")} concurrent force updates make one upstream call | seq ${c.seqBefore} → ${c.seqAfter}; ` +
          `${c.ok}× 200 (seq ${c.okSeqs.join(", ") || "none"}), ${c.tooSoon}× 429${others === "" ? "" : `, ${others}`}; ` +
          `${c.broadcastsSeen} broadcast seen; requests written within ${fmt(c.spreadMs, 1)} ms | ${check(one)} |`
      )
    }
    out.push("")
  }
  for (const rung of rungs.filter((r) => r.burst > 0)) {
    const at = (key: ServerKey) => samples.filter((s) => s.rung === rung.key && s.server === key)
    out.push(
      `### Burst: ${rung.burst} force updates back to back, ${rung.clients.toLocaleString("en-US")} watchlist clients (not a target)`,
      "",
      "| metric | dashcast | bare Bun | Node ws |",
      "| --- | ---: | ---: | ---: |"
    )
    for (const m of BURST_METRICS) {
      out.push(`| ${m.label} | ${(["dashcast", "bun", "node"] as const).map((k) => fmt(aggregate(at(k), m), m.digits)).join(" | ")} |`)
    }
    out.push("")
  }
  for (const rung of rungs.filter((r) => r.key.startsWith("watchlist"))) {
    out.push(`### Targets of the watchlist rung (issue 12)`, "")
    out.push("| target | measured | result |", "| --- | --- | --- |")
    out.push(...coreTargets(samples, rung), "")
  }
  out.push(
    "- RSS per connection is the growth of the server's resident memory while the clients connect, divided by",
    "  them. The JS heap's garbage collection moves RSS by a few MiB either way, so at 1k clients (about 2 MiB of",
    "  growth) the figure is noise; it is meaningful from 5k clients up.",
    "- CPU per delivered message is utime + stime (10 ms ticks) over the broadcast phase, which includes each",
    "  trigger's HTTP request and, on loopback, the kernel's TCP work on the sending core.",
    "- CPU during the broadcasts is CPU time over the phase's wall time: a server near 100% is the bottleneck;",
    "  a load generator near 100% would mean the clients, not the server, set the completion time."
  )
  if (rungs.some(isSseRung)) {
    out.push(
      "- SSE rungs: the same binary twice, its clients on WebSockets or on event streams (`GET /api/stream`,",
      "  read on raw TCP sockets and de-chunked, as curl would). Frame sizes are the JSON each client got; an",
      "  event adds its `event:`, `id:` and `data:` lines and the chunk framing (about 50 bytes). Idle CPU of the",
      "  largest SSE rung includes the streams' heartbeat comments (every 15 s) against the sockets' pings."
    )
  }
  for (const note of notes) out.push(`- ${note}`)
  return out.join("\n")
}

// ---- main -------------------------------------------------------------------------------------
const main = async () => {
  mkdirSync(RESULTS, { recursive: true })
  if (!existsSync(DASHCAST_BIN)) {
    log("dist/dashcast is missing: npm run build")
    const built = Bun.spawnSync(["npm", "run", "build"], { cwd: ROOT, stdout: "inherit", stderr: "inherit" })
    if (built.exitCode !== 0) throw new Error("npm run build failed")
  }
  const load = os.loadavg()[0]!
  log(`${QUICK ? "quick mode, " : ""}rungs ${RUNGS.map((r) => r.key).join(", ")}, ${REPS} repetition(s), ${CLIENT_PROCS} client processes, ` +
    `pinning ${PIN ? "on" : "off"}, load average ${load.toFixed(2)}`)
  const notes: Array<string> = []
  if (load >= 1) notes.push(`load average was ${load.toFixed(2)} at the start: other work may have disturbed the numbers`)
  if (maxClients < 19_000) notes.push(`the open-file limit (${fdLimit}) caps the top rung at ${maxClients} clients`)

  for (let i = 0; i < CLIENT_PROCS; i++) clients.push(new ClientProcess(onDone))
  await Promise.all(clients.map((c) => c.ready))

  const samples: Array<Sample> = []
  let coalescing: Coalescing | undefined
  try {
    for (const rung of RUNGS) {
      for (let rep = 0; rep < REPS; rep++) {
        const servers = serversOf(rung)
        const order = servers.map((_, i) => servers[(i + rep) % servers.length]!)
        for (const spec of order) {
          if (now() > DEADLINE) {
            notes.push(`time budget reached: ${spec.label} at rung ${rung.key}, run ${rep + 1} and later were skipped`)
            break
          }
          const idle = rep === 0 && (rung === IDLE_RUNG || rung === IDLE_SSE_RUNG) ? IDLE_SECONDS : 0
          const sample = await scenario(spec, rung, rep, idle)
          samples.push(sample)
          log(`${spec.label.padEnd(8)} ${rung.key.padStart(5)} run ${rep + 1}: connect ${fmt(sample.connectRate, 0)}/s, ` +
            `welcome p99 ${fmt(sample.welcomeP99)} ms, completion p50 ${fmt(sample.completionP50)} ms, ` +
            `msg p99 ${fmt(sample.messageP99)} ms, lost ${sample.lost}, ${fmt(sample.rssPerConnKiB)} KiB/conn, ` +
            `${fmt(sample.cpuUsPerDelivery)} µs/msg, server ${fmt(sample.serverBusyPercent, 0)}% / generator ${fmt(sample.generatorBusyPercent, 0)}% busy, ${fmt(sample.serverWaitPercent, 1)}% waiting${Number.isFinite(sample.idleCpuPercent) ? `, idle ${fmt(sample.idleCpuPercent)}%` : ""}` +
            `${sample.anomalies === "" ? "" : ` [${sample.anomalies}]`} (${fmt(sample.seconds, 1)} s)`)
        }
      }
    }
    // The coalescing check is dashcast's alone and does not depend on the watchlist.
    if (WATCHLIST !== "1") {
      coalescing = await coalescingTest()
      log(`coalescing: ${JSON.stringify(coalescing)}`)
    }
  } finally {
    await Promise.all(clients.map(async (c) => {
      c.proc.send({ type: "exit" } satisfies ClientCommand)
      await Promise.race([c.proc.exited, sleep(2000)])
      c.proc.kill("SIGKILL")
    }))
  }
  notes.push(`total time ${((now() - startedAt) / 1000).toFixed(0)} s`)
  const table = render(samples, coalescing, notes)
  writeFileSync(join(RESULTS, "latest.md"), table + "\n")
  writeFileSync(join(RESULTS, "latest.json"), JSON.stringify({ machine: machineLine(), samples, coalescing }, null, 2))
  console.log(table)
}

await main()
process.exit(0)
