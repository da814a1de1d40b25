/**
 * The compiled binary (`dist/dashcast`) as a subprocess for end-to-end tests: started on a free
 * loopback port with JSON logs and its cache in a temp folder, ready once `/healthz` answers, its
 * output kept line by line. Every process started here is killed when its test block ends
 * (`await using`), when `stopAllBinaries` runs (an `afterAll`, for tests that timed out), or at the
 * latest when the test worker exits. Also a small WebSocket client that decodes frames with the
 * protocol's own Schema and waits for a frame with a deadline.
 */
import type { Subprocess } from "bun"
import { Either } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { decodeServerMessage, formatParseError, type ServerMessage } from "../../src/realtime/Protocol.js"
import { freePort } from "./Ports.js"

export { freePort }

export const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url))
/** `dist/dashcast`, or another build named by `DASHCAST_BINARY` (such as a mutant, to see a test fail). */
export const BINARY = process.env["DASHCAST_BINARY"] ?? path.join(REPO_ROOT, "dist", "dashcast")

/** Resolves after `ms` unless the condition holds sooner; fails with `what` when time runs out. */
export const waitFor = async <A>(
  check: () => A | undefined | Promise<A | undefined>,
  what: string,
  timeoutMs = 5_000,
  everyMs = 20
): Promise<A> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const result = await check()
    if (result !== undefined) return result
    if (Date.now() >= deadline) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await Bun.sleep(everyMs)
  }
}


/** A fresh temp folder, removed when the test worker exits. */
export const tempDir = (prefix = "dashcast-e2e-"): string => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  tempDirs.add(dir)
  return dir
}

/**
 * Builds the binary when it is missing (`npm run build`), so that `npm test` also works without a
 * build first. Test files run in parallel: a lock folder makes one build and the others wait for it.
 */
export const ensureBinary = async (): Promise<string> => {
  if (fs.existsSync(BINARY)) return BINARY
  if (process.env["DASHCAST_BINARY"] !== undefined) throw new Error(`DASHCAST_BINARY=${BINARY} does not exist`)
  const lock = path.join(REPO_ROOT, "dist", ".e2e-build-lock")
  fs.mkdirSync(path.dirname(lock), { recursive: true })
  const deadline = Date.now() + 120_000
  for (;;) {
    try {
      fs.mkdirSync(lock)
      break
    } catch {
      if (Date.now() > deadline) throw new Error(`${lock} held for over 2 minutes; remove it if no build runs`)
      await Bun.sleep(200)
    }
  }
  try {
    if (fs.existsSync(BINARY)) return BINARY
    const build = Bun.spawn(["npm", "run", "build"], { cwd: REPO_ROOT, stdout: "pipe", stderr: "pipe" })
    const [code, out, err] = await Promise.all([build.exited, new Response(build.stdout).text(), new Response(build.stderr).text()])
    if (code !== 0 || !fs.existsSync(BINARY)) throw new Error(`npm run build failed (exit ${code}):\n${out}\n${err}`)
    return BINARY
  } finally {
    fs.rmSync(lock, { recursive: true, force: true })
  }
}

/** One line the process wrote, and when the test saw it. */
export interface OutputLine {
  readonly stream: "stdout" | "stderr"
  readonly text: string
  readonly at: number
}

/** A log line of `LOG_FORMAT=json` (Effect's `Logger.json`). */
export interface JsonLog {
  readonly message: unknown
  readonly logLevel: string
  readonly timestamp: string
  readonly annotations: Readonly<Record<string, unknown>>
  readonly cause?: string
}

export interface BinaryOptions {
  /** Settings by environment name, over the defaults (loopback, a free port, JSON logs, a temp cache). */
  readonly env?: Readonly<Record<string, string>>
  /** How long `/healthz` may take to answer 200 (default 10 s). */
  readonly startTimeoutMs?: number
}

export interface RunningBinary extends AsyncDisposable {
  readonly proc: Subprocess<"ignore", "pipe", "pipe">
  readonly pid: number
  readonly port: number
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  /** `ws://127.0.0.1:<port>/ws` */
  readonly wsUrl: string
  /** The environment it was started with (what a restart reuses). */
  readonly env: Readonly<Record<string, string>>
  /** `performance.now()` of the first 200 from `/healthz`. */
  readonly listeningAt: number
  readonly output: () => ReadonlyArray<OutputLine>
  /** Every stdout line that is a JSON object (the logs), in order. */
  readonly logs: () => ReadonlyArray<JsonLog>
  /** Waits for a log line matching `predicate`. */
  readonly waitForLog: (predicate: (log: JsonLog) => boolean, what: string, timeoutMs?: number) => Promise<JsonLog>
  /** Waits until `/readyz` answers 200 (a summary exists), 10 s at most. */
  readonly ready: () => Promise<void>
  /** A request to the process (5 s timeout). */
  readonly fetch: (pathname: string, init?: RequestInit) => Promise<Response>
  /** Exit code, once it exited. */
  readonly exitCode: () => number | null
  /** SIGTERM, then waits for the exit (SIGKILL after 10 s); resolves to the exit code. */
  readonly stop: () => Promise<number>
  /** SIGKILL, as a crash or an OOM kill would, and waits for the exit. */
  readonly kill9: () => Promise<void>
}

const running = new Set<Subprocess>()
const tempDirs = new Set<string>()

process.once("exit", () => {
  for (const proc of running) proc.kill("SIGKILL")
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true })
})

/**
 * Kills (SIGKILL) every binary still running and removes the temp folders; for an `afterAll`, which
 * also covers tests that timed out. (A test worker may be ended without an `exit` event.)
 */
export const stopAllBinaries = async (): Promise<void> => {
  const procs = [...running]
  for (const proc of procs) proc.kill("SIGKILL")
  await Promise.all(procs.map((proc) => proc.exited))
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true })
  tempDirs.clear()
}

const collectLines = (stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> =>
  (async () => {
    const decoder = new TextDecoder()
    let buffered = ""
    const reader = stream.getReader()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      buffered += decoder.decode(value, { stream: true })
      let newline = buffered.indexOf("\n")
      while (newline >= 0) {
        onLine(buffered.slice(0, newline))
        buffered = buffered.slice(newline + 1)
        newline = buffered.indexOf("\n")
      }
    }
    if (buffered.length > 0) onLine(buffered)
  })()

const parseLog = (text: string): JsonLog | undefined => {
  if (!text.startsWith("{")) return undefined
  try {
    const value: unknown = JSON.parse(text)
    return typeof value === "object" && value !== null && "logLevel" in value ? (value as JsonLog) : undefined
  } catch {
    return undefined
  }
}

/**
 * Starts `dist/dashcast` and resolves once `/healthz` answers 200. The environment is built from
 * scratch (PATH and HOME only): nothing from the test runner's environment, such as a proxy or a
 * `REDIS_URL`, reaches the process unless a test passes it.
 */
export const startBinary = async (options: BinaryOptions = {}): Promise<RunningBinary> => {
  const binary = await ensureBinary()
  const port = options.env?.["PORT"] !== undefined ? Number(options.env["PORT"]) : freePort()
  const env: Record<string, string> = {
    PATH: process.env["PATH"] ?? "/usr/bin:/bin",
    HOME: process.env["HOME"] ?? os.tmpdir(),
    HOST: "127.0.0.1",
    LOG_FORMAT: "json",
    CACHE_PATH: path.join(tempDir(), "cache.sqlite"),
    ...options.env,
    PORT: String(port)
  }
  const proc = Bun.spawn([binary], { cwd: os.tmpdir(), env, stdin: "ignore", stdout: "pipe", stderr: "pipe" })
  running.add(proc)
  void proc.exited.then(() => running.delete(proc))

  const lines: Array<OutputLine> = []
  const logs: Array<JsonLog> = []
  const watchers = new Set<() => void>()
  const onLine = (stream: OutputLine["stream"]) => (text: string) => {
    lines.push({ stream, text, at: performance.now() })
    const log = stream === "stdout" ? parseLog(text) : undefined
    if (log !== undefined) logs.push(log)
    for (const watch of [...watchers]) watch()
  }
  void collectLines(proc.stdout, onLine("stdout"))
  void collectLines(proc.stderr, onLine("stderr"))

  const url = `http://127.0.0.1:${port}`
  const describeOutput = () => lines.map((l) => `  ${l.stream}: ${l.text}`).join("\n")
  const request = (pathname: string, init: RequestInit = {}) =>
    fetch(url + pathname, { ...init, signal: init.signal ?? AbortSignal.timeout(5_000) })

  const startTimeout = options.startTimeoutMs ?? 10_000
  const deadline = Date.now() + startTimeout
  let listeningAt: number | undefined
  while (listeningAt === undefined) {
    if (proc.exitCode !== null) {
      await Bun.sleep(50) // let the last output lines arrive
      throw new Error(`dashcast exited with ${proc.exitCode} before answering /healthz:\n${describeOutput()}`)
    }
    const ok = await request("/healthz", { signal: AbortSignal.timeout(1_000) }).then((r) => r.status === 200, () => false)
    if (ok) listeningAt = performance.now()
    else if (Date.now() > deadline) {
      proc.kill("SIGKILL")
      throw new Error(`dashcast did not answer /healthz within ${startTimeout} ms:\n${describeOutput()}`)
    } else await Bun.sleep(20)
  }

  const kill9 = async () => {
    proc.kill("SIGKILL")
    await proc.exited
  }
  const stop = async () => {
    proc.kill("SIGTERM")
    const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000)
    const code = await proc.exited
    clearTimeout(timer)
    return code
  }

  return {
    proc,
    pid: proc.pid,
    port,
    url,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    env,
    listeningAt,
    output: () => lines,
    logs: () => logs,
    waitForLog: (predicate, what, timeoutMs = 5_000) =>
      new Promise<JsonLog>((resolve, reject) => {
        const timer = setTimeout(() => {
          watchers.delete(check)
          reject(new Error(`${what}: no such log line within ${timeoutMs} ms; output:\n${describeOutput()}`))
        }, timeoutMs)
        const check = () => {
          const found = logs.find(predicate)
          if (found === undefined) return
          watchers.delete(check)
          clearTimeout(timer)
          resolve(found)
        }
        watchers.add(check)
        check()
      }),
    ready: async () => {
      await waitFor(() => request("/readyz").then((r) => (r.ok ? true : undefined), () => undefined), "GET /readyz 200", 10_000)
    },
    fetch: request,
    exitCode: () => proc.exitCode,
    stop,
    kill9,
    [Symbol.asyncDispose]: kill9
  }
}

/** A frame as received: when (`performance.now()`), its text and its decoded message. */
export interface ReceivedFrame {
  readonly at: number
  readonly raw: string
  readonly message: ServerMessage
}

export interface WsClient extends Disposable {
  /** `performance.now()` when the socket was created (before the handshake). */
  readonly createdAt: number
  /** Every frame so far, in order. */
  readonly frames: () => ReadonlyArray<ReceivedFrame>
  readonly messages: () => ReadonlyArray<ServerMessage>
  /** Resolves with the first frame (from the start) that matches; fails after the timeout (5 s). */
  readonly waitFor: <M extends ServerMessage>(
    predicate: ((message: ServerMessage) => message is M) | ((message: ServerMessage) => boolean),
    options?: { readonly timeoutMs?: number; readonly label?: string; readonly after?: number }
  ) => Promise<ReceivedFrame & { readonly message: M }>
  readonly send: (data: string) => void
  readonly closed: () => { readonly code: number; readonly reason: string } | undefined
  readonly close: () => void
}

export const isType =
  <T extends ServerMessage["type"]>(type: T) => (message: ServerMessage): message is Extract<ServerMessage, { type: T }> =>
    message.type === type

/**
 * Opens a socket at once (it connects in the background; frames are recorded from the first one).
 * A frame that does not decode with the protocol's Schema fails every wait that passes it.
 */
export const openWs = (url: string): WsClient => {
  const createdAt = performance.now()
  const socket = new WebSocket(url)
  const frames: Array<ReceivedFrame> = []
  const watchers = new Set<() => void>()
  let violation: string | undefined
  let closeInfo: { code: number; reason: string } | undefined
  let failedToOpen = false
  const notify = () => {
    for (const watch of [...watchers]) watch()
  }
  socket.addEventListener("message", (event) => {
    const raw = String(event.data)
    const decoded = typeof event.data === "string" ? decodeServerMessage(raw) : undefined
    if (decoded !== undefined && Either.isRight(decoded)) frames.push({ at: performance.now(), raw, message: decoded.right })
    else {
      violation ??= decoded === undefined
        ? "a binary frame"
        : `a frame that breaks the protocol: ${raw}\n${formatParseError(decoded.left)}`
    }
    notify()
  })
  socket.addEventListener("error", () => {
    failedToOpen ||= socket.readyState !== WebSocket.OPEN
    notify()
  })
  socket.addEventListener("close", (event) => {
    closeInfo = { code: event.code, reason: event.reason }
    notify()
  })

  const waitFor: WsClient["waitFor"] = (predicate, options = {}) => {
    const timeoutMs = options.timeoutMs ?? 5_000
    const label = options.label ?? "a frame"
    const from = options.after ?? 0
    return new Promise((resolve, reject) => {
      const fail = (why: string) => {
        watchers.delete(check)
        clearTimeout(timer)
        reject(new Error(`${label} on ${url}: ${why}; received ${JSON.stringify(frames.map((f) => f.raw), null, 1)}`))
      }
      const check = () => {
        const found = frames.find((f, i) => i >= from && predicate(f.message))
        if (found !== undefined) {
          watchers.delete(check)
          clearTimeout(timer)
          resolve(found as never)
        } else if (violation !== undefined) fail(violation)
        else if (closeInfo !== undefined) fail(`socket closed (${closeInfo.code} ${closeInfo.reason})`)
        else if (failedToOpen) fail("socket did not open")
      }
      const timer = setTimeout(() => fail(`nothing within ${timeoutMs} ms`), timeoutMs)
      watchers.add(check)
      check()
    })
  }

  const close = () => {
    if (socket.readyState === WebSocket.CONNECTING || socket.readyState === WebSocket.OPEN) socket.close(1000)
  }
  return {
    createdAt,
    frames: () => frames,
    messages: () => frames.map((f) => f.message),
    waitFor,
    send: (data) => socket.send(data),
    closed: () => closeInfo,
    close,
    [Symbol.dispose]: close
  }
}
