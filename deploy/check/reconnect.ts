/**
 * The scenario of deploy/check/compose-check.sh: clients through nginx while one instance of the
 * compose stack is recreated. HTTP clients poll the API and WebSocket clients reconnect at once when
 * closed; after the recreate both must be served again within a few seconds, fresh connections must
 * not stall on the old instance's address, and nginx must send requests to the new instance.
 * The instance is recreated as compose does it (stop, remove, create), at a new address.
 *
 *   bun deploy/check/reconnect.ts http://127.0.0.1:18091 -- docker-compose -p NAME -f deploy/compose.yaml
 *
 * Runs as root on the Docker host: it counts each instance's connections in /proc/PID/net/tcp.
 * Prints one line per check ("ok", "FAIL", "info") and exits 1 when a check fails.
 */
import { readFileSync } from "node:fs"
import { decodeServerMessage } from "../../src/realtime/Protocol.js"

// How long "a few seconds" is. The stale window of nginx.conf is its resolver's `valid` (1 s) plus
// proxy_connect_timeout (1 s); the old configuration, with its upstream block resolved once, stalled
// 2 s per request and up to 60 s (the default connect timeout on /ws) per WebSocket attempt that
// picked the old address, for as long as nginx ran.
const RECONNECT_WITHIN_MS = 3000
const SETTLE_MS = 2000
const SETTLED_REQUEST_WITHIN_MS = 1000
const OBSERVE_MS = 10_000
const WS_CLIENTS = 9
const HTTP_LOOPS = 2
const FRESH_CONNECTIONS = 10
const SERVICES = ["dashcast-1", "dashcast-2", "dashcast-3"]

const args = process.argv.slice(2)
const separator = args.indexOf("--")
const baseUrl = args[0]
const compose = separator >= 0 ? args.slice(separator + 1) : []
if (baseUrl === undefined || separator !== 1 || compose.length === 0) {
  console.error("usage: bun deploy/check/reconnect.ts BASE_URL -- COMPOSE_COMMAND...")
  process.exit(2)
}
const wsUrl = `${baseUrl.replace(/^http/, "ws")}/ws`

let failures = 0
const ok = (message: string) => console.log(`ok   ${message}`)
const info = (message: string) => console.log(`info ${message}`)
const fail = (message: string) => {
  console.log(`FAIL ${message}`)
  failures++
}
const now = () => performance.now()
const ms = (n: number) => `${Math.round(n)} ms`

const run = (argv: ReadonlyArray<string>): { code: number; out: string } => {
  const child = Bun.spawnSync([...argv], { stdout: "pipe", stderr: "pipe" })
  return { code: child.exitCode, out: `${child.stdout.toString()}${child.stderr.toString()}`.trim() }
}
const containerOf = (service: string): string => run([...compose, "ps", "-q", service]).out.split("\n").at(-1) ?? ""
const pidOf = (container: string): number => Number(run(["docker", "inspect", "-f", "{{.State.Pid}}", container]).out)

/** Established TCP connections to port 8080 inside the container's network namespace. */
const connectionsOf = (pid: number): number => {
  let count = 0
  for (const table of ["tcp", "tcp6"]) {
    let text = ""
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, "utf8")
    } catch {
      continue
    }
    for (const line of text.split("\n").slice(1)) {
      const [, local, , state] = line.trim().split(/\s+/)
      if (local?.endsWith(":1F90") && state === "01") count++
    }
  }
  return count
}

// ---------------------------------------------------------------------------------------------
// HTTP clients: GET /api/dashboard in a loop, each request timed.

interface Sample {
  readonly start: number
  readonly took: number
  readonly outcome: string
}
const samples: Array<Sample> = []
let polling = true
const poll = async () => {
  while (polling) {
    const start = now()
    let outcome: string
    try {
      const response = await fetch(`${baseUrl}/api/dashboard`, { signal: AbortSignal.timeout(15_000) })
      await response.arrayBuffer()
      outcome = String(response.status)
    } catch (error) {
      outcome = error instanceof Error ? error.message : String(error)
    }
    samples.push({ start, took: now() - start, outcome })
    await Bun.sleep(50)
  }
}

// ---------------------------------------------------------------------------------------------
// WebSocket clients: reconnect 100 ms after every close, note how long until the next welcome.

interface Outage {
  readonly client: number
  readonly closedAt: number
  readonly code: number
  welcomedAt: number | undefined
}
const outages: Array<Outage> = []
let reconnecting = true

/**
 * Resolves with the time of the welcome, or with an error text (also after `timeoutMs` without a
 * welcome); `onClose` runs if it closes after the welcome.
 */
const open = (onClose: (code: number) => void, keep: boolean, timeoutMs = 120_000): Promise<number | string> =>
  new Promise((resolve) => {
    const ws = new WebSocket(wsUrl)
    let welcomed = false
    const timer = setTimeout(() => {
      resolve(`no welcome within ${ms(timeoutMs)}`)
      ws.close()
    }, timeoutMs)
    ws.addEventListener("message", (event) => {
      if (welcomed) return
      clearTimeout(timer)
      const decoded = decodeServerMessage(event.data)
      if (decoded._tag === "Right" && decoded.right.type === "welcome") {
        welcomed = true
        resolve(now())
        if (!keep) ws.close(1000)
      } else {
        resolve(`first frame is not a welcome: ${String(event.data).slice(0, 120)}`)
        ws.close(1000)
      }
    })
    ws.addEventListener("close", (event) => {
      clearTimeout(timer)
      if (!welcomed) resolve(`closed with ${event.code} before the welcome`)
      else onClose(event.code)
    })
  })

const clients: Array<Promise<void>> = []
const connected = new Set<number>()
const startClient = (id: number): Promise<void> => {
  const attempt = async (outage: Outage | undefined): Promise<void> => {
    if (!reconnecting) return
    const result = await open((code) => {
      connected.delete(id)
      const next: Outage = { client: id, closedAt: now(), code, welcomedAt: undefined }
      outages.push(next)
      setTimeout(() => void attempt(next), 100)
    }, true)
    if (typeof result === "number") {
      connected.add(id)
      if (outage !== undefined) outage.welcomedAt = result
    } else {
      await Bun.sleep(100)
      return attempt(outage)
    }
  }
  return attempt(undefined)
}

// ---------------------------------------------------------------------------------------------
// The scenario

const deadline = Date.now() + 60_000
let ready = false
while (!ready && Date.now() < deadline) {
  ready = await fetch(`${baseUrl}/api/dashboard`, { signal: AbortSignal.timeout(2000) }).then((r) => r.status === 200, () => false)
  if (!ready) await Bun.sleep(250)
}
if (!ready) {
  fail(`GET ${baseUrl}/api/dashboard through nginx did not answer 200 within 60 s`)
  process.exit(1)
}

const loops = Array.from({ length: HTTP_LOOPS }, () => poll())
for (let id = 0; id < WS_CLIENTS; id++) clients.push(startClient(id))
const connectBy = Date.now() + 10_000
while (connected.size < WS_CLIENTS && Date.now() < connectBy) await Bun.sleep(50)
if (connected.size < WS_CLIENTS) {
  fail(`only ${connected.size} of ${WS_CLIENTS} WebSocket clients got a welcome within 10 s`)
  process.exit(1)
}
await Bun.sleep(2000)

const before = SERVICES.map((service) => {
  const container = containerOf(service)
  return { service, container, connections: connectionsOf(pidOf(container)) }
})
const target = before.reduce((a, b) => (b.connections > a.connections ? b : a))
info(`connections to each instance: ${before.map((b) => `${b.service} ${b.connections}`).join(", ")}; recreating ${target.service}`)

// The recreate of the issue: the instance comes back at a new address and its old one is left to
// nobody ("No route to host"). Docker 20.10 hands a freed address straight back to the next
// container, so while the instance is away a placeholder container takes whatever address the
// engine gives out next; it is removed once the instance is back.
const addressOf = (container: string) =>
  run(["docker", "inspect", "-f", "{{range $name, $net := .NetworkSettings.Networks}}{{$name}} {{$net.IPAddress}}{{end}}", container]).out.split(" ")
const [network = "", oldAddress = ""] = addressOf(target.container)
// compose-check.sh removes a placeholder left by a run that died, by this name.
const placeholder = `${network}-placeholder`
const step = (what: string, argv: ReadonlyArray<string>) => {
  const result = run(argv)
  if (result.code !== 0) {
    fail(`recreate ${target.service}: ${what}: ${result.out}`)
    run(["docker", "rm", "-f", placeholder])
    process.exit(1)
  }
}
const recreateAt = now()
step("stop", [...compose, "stop", target.service])
step("rm", [...compose, "rm", "-f", "-v", target.service])
step("placeholder", ["docker", "run", "-d", "--name", placeholder, "--network", network, "--entrypoint", "sleep", "redis:7-alpine", "120"])
step("up", [...compose, "up", "-d", "--no-deps", target.service])
step("placeholder rm", ["docker", "rm", "-f", placeholder])
const upAt = now()
const replacement = containerOf(target.service)
const [, newAddress = ""] = addressOf(replacement)
if (newAddress === "" || newAddress === oldAddress) {
  fail(`${target.service} came back at the same address ${oldAddress}: the stale-address case is not exercised`)
}
info(`${target.service} recreated in ${ms(upAt - recreateAt)}: container ${target.container.slice(0, 12)} at ${oldAddress} -> ${replacement.slice(0, 12)} at ${newAddress}, nothing at ${oldAddress} now`)

// Fresh connections once the stale window is over: each must be greeted at once.
await Bun.sleep(SETTLE_MS)
const settledAt = now()
const fresh: Array<number | string> = []
for (let i = 0; i < FRESH_CONNECTIONS; i++) {
  const start = now()
  const result = await open(() => {}, false, 5000)
  fresh.push(typeof result === "number" ? result - start : result)
}
const remaining = upAt + OBSERVE_MS - now()
if (remaining > 0) await Bun.sleep(remaining)
polling = false
reconnecting = false
await Promise.all(loops)

// ---------------------------------------------------------------------------------------------
// Verdicts

const baseline = samples.filter((s) => s.start < recreateAt)
const baselineBad = baseline.filter((s) => s.outcome !== "200")
if (baseline.length === 0 || baselineBad.length > 0) {
  fail(`before the recreate: ${baselineBad.length} of ${baseline.length} requests failed (${baselineBad[0]?.outcome ?? "none made"})`)
}

const during = samples.filter((s) => s.start >= recreateAt)
const bad = during.filter((s) => s.outcome !== "200")
const slowest = during.reduce((a, s) => Math.max(a, s.took), 0)
const settled = samples.filter((s) => s.start >= settledAt)
const slowestSettled = settled.reduce((a, s) => Math.max(a, s.took), 0)
const slowSettled = settled.filter((s) => s.took > SETTLED_REQUEST_WITHIN_MS).length
const summary = `${during.length} requests from the recreate on, slowest ${ms(slowest)}; ${settled.length} from ${ms(SETTLE_MS)} after it, slowest ${ms(slowestSettled)}`
if (bad.length > 0) fail(`HTTP: ${bad.length} requests failed: ${bad[0]?.outcome} (${summary})`)
else if (slowest > RECONNECT_WITHIN_MS || slowSettled > 0) {
  fail(`HTTP: ${slowSettled} requests took over ${ms(SETTLED_REQUEST_WITHIN_MS)} after the recreate settled (${summary})`)
} else ok(`HTTP through nginx: all 200; ${summary}`)

const closedByRecreate = outages.filter((o) => o.closedAt >= recreateAt)
const reconnectTimes = closedByRecreate.map((o) => (o.welcomedAt === undefined ? Infinity : o.welcomedAt - o.closedAt))
const worstReconnect = Math.max(...reconnectTimes)
const reconnectText = `${closedByRecreate.length} clients closed (codes ${[...new Set(closedByRecreate.map((o) => o.code))].join(", ")}), welcomed again after ${reconnectTimes.map((t) => (t === Infinity ? "never" : ms(t))).join(", ")}`
if (closedByRecreate.length === 0) fail(`WebSocket: no client was on ${target.service}, so no reconnect was exercised`)
else if (worstReconnect > RECONNECT_WITHIN_MS) fail(`WebSocket: a client took over ${ms(RECONNECT_WITHIN_MS)} to reconnect: ${reconnectText}`)
else ok(`WebSocket clients reconnect through nginx: ${reconnectText}`)

const freshTimes = fresh.filter((f): f is number => typeof f === "number")
const freshText = fresh.map((f) => (typeof f === "number" ? ms(f) : f)).join(", ")
if (freshTimes.length < fresh.length || Math.max(...freshTimes) > SETTLED_REQUEST_WITHIN_MS) {
  fail(`WebSocket: new connections after the recreate were not all welcomed within ${ms(SETTLED_REQUEST_WITHIN_MS)}: ${freshText}`)
} else ok(`${FRESH_CONNECTIONS} new WebSocket connections after the recreate, welcomed in ${freshText}`)

// nginx must send clients to the instance that came back, not only avoid the old address.
const served = run(["docker", "logs", replacement]).out.split("\n").filter((l) => l.includes("/api/dashboard")).length
if (served > 0) ok(`the recreated ${target.service} serves requests through nginx (${served} API requests in its log)`)
else fail(`the recreated ${target.service} got no request through nginx`)

process.exit(failures > 0 ? 1 : 0)
