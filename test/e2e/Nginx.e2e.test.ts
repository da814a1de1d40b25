/**
 * deploy/nginx.conf with Debian's nginx in front of the compiled binary, both live transports
 * through it: the WebSocket upgrade on /ws and the event stream on /api/stream, each event passed
 * on as it is written (an update reaches the client while the response stays open), a resuming
 * `Last-Event-ID`, and the per-address limit shared by both. The file is run as it is, except for
 * what only Docker has: the listen port and the instances' address (Docker's DNS name `dashcast`)
 * become loopback ones, and the temp folders move to a test folder.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import type { Subprocess } from "bun"
import { Effect, type Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { ensureBinary, freePort, isType, openWs, REPO_ROOT, type RunningBinary, startBinary, stopAllBinaries, tempDir, waitFor } from "../support/Binary.js"
import { type FakeUpstream, startFakeUpstream } from "../support/FakeUpstream.js"
import * as SseClient from "../support/SseClient.js"
import { hasTool } from "../support/SystemTools.js"

const ADMIN_TOKEN = "nginx-e2e-token-3b7e"
const NGINX_CONF = path.join(REPO_ROOT, "deploy", "nginx.conf")

/** Replaces `from` (which must occur exactly once, so that a change to the file is noticed) with `to`. */
const replaceOnce = (text: string, from: string, to: string): string => {
  const count = text.split(from).length - 1
  if (count !== 1) throw new Error(`deploy/nginx.conf: expected ${JSON.stringify(from)} once, found it ${count} times`)
  return text.replace(from, to)
}

/** deploy/nginx.conf for loopback: the same http and location blocks, another listen and instance address. */
const loopbackConfig = (source: string, listenPort: number, instance: string, dir: string): string => {
  let conf = replaceOnce(source, "listen 80;", `listen 127.0.0.1:${listenPort};`)
  conf = replaceOnce(conf, "set $dashcast_instances dashcast:8080;", `set $dashcast_instances ${instance};`)
  const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    .map((name) => `    ${name}_temp_path ${path.join(dir, name)};`).join("\n")
  return replaceOnce(conf, "http {\n", `http {\n${temp}\n`)
}

interface Nginx {
  readonly url: string
  readonly port: number
  readonly output: () => string
  readonly stop: () => Promise<void>
}

const startNginx = async (instance: string): Promise<Nginx> => {
  const dir = tempDir("dashcast-nginx-")
  // Workers run as an unprivileged user when nginx starts as root: they must write the temp folders.
  fs.chmodSync(dir, 0o777)
  const port = freePort()
  const conf = path.join(dir, "nginx.conf")
  fs.writeFileSync(conf, loopbackConfig(fs.readFileSync(NGINX_CONF, "utf8"), port, instance, dir))
  const args = ["-p", dir, "-c", conf, "-g", `daemon off; pid ${path.join(dir, "nginx.pid")};`]
  // nginx opens /dev/stdout itself (access_log), which fails on a socket: give it files.
  const stdout = path.join(dir, "stdout.log")
  const stderr = path.join(dir, "stderr.log")
  const output = () => [stdout, stderr].map((f) => (fs.existsSync(f) ? fs.readFileSync(f, "utf8") : "")).join("")
  const check = Bun.spawnSync(["nginx", "-t", ...args], { stdout: Bun.file(stdout), stderr: Bun.file(stderr) })
  if (check.exitCode !== 0) throw new Error(`nginx -t failed:\n${output()}`)
  const proc: Subprocess = Bun.spawn(["nginx", ...args], { stdin: "ignore", stdout: Bun.file(stdout), stderr: Bun.file(stderr) })
  const url = `http://127.0.0.1:${port}`
  await waitFor(
    () => (proc.exitCode !== null ? Promise.reject(new Error(`nginx exited: ${output()}`)) : fetch(`${url}/nginx-health`).then((r) => (r.ok ? true : undefined), () => undefined)),
    "nginx answers /nginx-health",
    10_000
  )
  return {
    url,
    port,
    output,
    stop: async () => {
      proc.kill("SIGTERM")
      const timer = setTimeout(() => proc.kill("SIGKILL"), 5_000)
      await proc.exited
      clearTimeout(timer)
    }
  }
}

const haveNginx = hasTool("nginx")

beforeAll(() => ensureBinary(), 120_000)
afterAll(stopAllBinaries)

describe.skipIf(!haveNginx)("deploy/nginx.conf in front of the binary", () => {
  let fake: FakeUpstream
  let server: RunningBinary
  let nginx: Nginx

  beforeAll(async () => {
    fake = startFakeUpstream()
    server = await startBinary({ env: { ...fake.env, ADMIN_TOKEN, UPDATE_INTERVAL: "1 hour", MIN_FETCH_GAP: "0 millis", LOG_LEVEL: "warn" } })
    await server.ready()
    nginx = await startNginx(`127.0.0.1:${server.port}`)
  }, 30_000)

  afterAll(async () => {
    await nginx?.stop()
    await fake?.stop()
  })

  const refresh = async () => {
    const response = await server.fetch("/api/dashboard/refresh", { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
    expect(response.status).toBe(200)
    return ((await response.json()) as { seq: number }).seq
  }

  /** Runs `body` with a scope for the SSE clients it opens, closed afterwards. */
  const scoped = <A>(body: Effect.Effect<A, unknown, Scope.Scope>) =>
    Effect.runPromise(Effect.scoped(body) as Effect.Effect<A>)

  it("passes the WebSocket and the event stream; each update reaches both while the stream stays open", () =>
    scoped(Effect.gen(function*() {
      using ws = openWs(`ws://127.0.0.1:${nginx.port}/ws`)
      const welcome = yield* Effect.promise(() => ws.waitFor(isType("welcome"), { label: "the welcome through nginx" }))
      const sse = yield* SseClient.open(`${nginx.url}/api/stream`)
      expect(sse.status).toBe(200)
      expect(sse.headers["content-type"]).toBe("text/event-stream")
      const first = yield* sse.next()
      expect(first.event).toBe("welcome")
      expect(first.id).toBe(String(welcome.message.seq))

      for (let i = 0; i < 3; i++) {
        const seq = yield* Effect.promise(refresh)
        // Small events, a response that does not end: a buffering proxy would hold them back.
        const update = yield* sse.next((m) => m.type === "dashboard_update" && m.seq === seq, { label: `update ${seq} through nginx` })
        expect(update.id).toBe(String(seq))
        const viaWs = yield* Effect.promise(() => ws.waitFor((m) => m.type === "dashboard_update" && m.seq === seq))
        expect(update.data).toBe(viaWs.raw)
      }
      expect(sse.isEnded()).toBe(false)
      expect(sse.comments()).toEqual([])
    })))

  it("passes Last-Event-ID: a client that missed updates resumes with the latest at once", () =>
    scoped(Effect.gen(function*() {
      const from = yield* Effect.promise(refresh)
      const latest = yield* Effect.promise(refresh)
      const resumed = yield* SseClient.open(`${nginx.url}/api/stream`, { headers: { "Last-Event-ID": String(from) } })
      const first = yield* resumed.next()
      expect(first.event).toBe("dashboard_update")
      expect(first.id).toBe(String(latest))
    })))

  it("limits live connections per client address across both transports (limit_conn, 50)", () =>
    scoped(Effect.gen(function*() {
      const streams: Array<SseClient.SseClient> = []
      for (let i = 0; i < 49; i++) streams.push(yield* SseClient.open(`${nginx.url}/api/stream`))
      for (const s of streams) yield* s.next()
      using ws = openWs(`ws://127.0.0.1:${nginx.port}/ws`)
      yield* Effect.promise(() => ws.waitFor(isType("welcome"), { label: "the 50th connection, a WebSocket" }))
      const refused = yield* SseClient.open(`${nginx.url}/api/stream`)
      yield* refused.ended()
      expect(refused.status).toBe(503)
      const refusedWs = yield* Effect.promise(() => fetch(`${nginx.url}/ws`, { headers: { upgrade: "websocket", connection: "upgrade" } }))
      expect(refusedWs.status).toBe(503)
    })), 30_000)

  it("dashcast's shutdown ends the stream through nginx cleanly", () =>
    scoped(Effect.gen(function*() {
      const sse = yield* SseClient.open(`${nginx.url}/api/stream`)
      yield* sse.next()
      const code = yield* Effect.promise(() => server.stop())
      expect(code).toBe(0)
      yield* sse.ended()
      expect(nginx.output()).not.toMatch(/\[(crit|alert|emerg)\]/)
    })))
})
