/**
 * Smoke test of the compiled binary, as CI runs it: start with DEMO on a free port, /healthz 200,
 * a WebSocket client gets a welcome with all seven fields, SIGTERM exits 0 and the client sees 1001.
 */
import { tmpdir } from "node:os"
import { decodeServerMessage } from "../src/realtime/Protocol.js"

const binary = process.argv[2] ?? "dist/dashcast"
const fail = (message: string): never => {
  console.error(`smoke: FAIL: ${message}`)
  process.exit(1)
}
const withTimeout = <A>(promise: Promise<A>, ms: number, what: string): Promise<A> => {
  const timer = setTimeout(() => fail(`${what} took longer than ${ms} ms`), ms)
  return promise.finally(() => clearTimeout(timer))
}

const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } })
const port = listener.port
listener.stop(true)

// Run from a temp directory: the binary must not need node_modules or the source tree.
const child = Bun.spawn([Bun.resolveSync(`./${binary}`, process.cwd()), "--demo", "--host", "127.0.0.1", "--port", String(port)], {
  cwd: tmpdir(),
  env: { ...process.env, CACHE_PATH: ":memory:" },
  stdout: "inherit",
  stderr: "inherit"
})

const base = `http://127.0.0.1:${port}`
const deadline = Date.now() + 5000
let healthy = false
while (!healthy && Date.now() < deadline) {
  healthy = await fetch(`${base}/healthz`).then((r) => r.status === 200, () => false)
  if (!healthy) await Bun.sleep(20)
}
if (!healthy) fail("/healthz did not answer 200 within 5 s")
console.log("smoke: /healthz 200")

const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`)
const closed = new Promise<number>((resolve) => ws.addEventListener("close", (e) => resolve(e.code)))
const welcome = await withTimeout(
  new Promise<unknown>((resolve) => ws.addEventListener("message", (e) => resolve(e.data), { once: true })),
  5000,
  "the welcome"
)
const decoded = decodeServerMessage(welcome)
if (decoded._tag === "Left" || decoded.right.type !== "welcome") fail(`first frame is not a valid welcome: ${String(welcome)}`)
const fields = ["btc_price", "btc_change_24h", "market_cap", "volume_24h", "fear_greed_index", "rsi_14", "last_updated"]
const data = JSON.parse(String(welcome)).data as Record<string, unknown>
const missing = fields.filter((f) => !(f in data))
if (missing.length > 0) fail(`welcome lacks ${missing.join(", ")}`)
console.log(`smoke: welcome with all seven fields, seq ${JSON.parse(String(welcome)).seq}`)

child.kill("SIGTERM")
const [code, exitCode] = await withTimeout(Promise.all([closed, child.exited]), 5000, "shutdown")
if (code !== 1001) fail(`client saw close code ${code}, expected 1001`)
if (exitCode !== 0) fail(`exit code ${exitCode} after SIGTERM, expected 0`)
console.log("smoke: SIGTERM -> client closed with 1001, exit code 0")
console.log("smoke: all 4 checks passed")
process.exit(0)
