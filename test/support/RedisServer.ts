/**
 * A real `redis-server` for tests: a scoped process on a free loopback port in a temp folder, which a
 * test can stop and start again on the same port, or pause (SIGSTOP) to play a server that hangs.
 * Waiting is real time on purpose (a process starting), so it also works under `TestClock`.
 */
import type { Subprocess } from "bun"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Data, Effect, type Scope } from "effect"
import { freePort } from "./Ports.js"

export class RedisServerError extends Data.TaggedError("RedisServerError")<{ readonly message: string }> {}

export interface RedisServer {
  readonly port: number
  readonly url: string
  /** Kills the server (SIGKILL, as a crash would) and waits for it to exit. */
  readonly stop: Effect.Effect<void>
  /** Starts it again on the same port, empty, and waits until it answers PING. */
  readonly start: Effect.Effect<void, RedisServerError>
  /** SIGSTOP: connections stay open but nothing answers. */
  readonly pause: Effect.Effect<void>
  readonly resume: Effect.Effect<void>
}


/** True when something on `port` answers PING with PONG. */
const pong = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open: (socket) => {
          socket.write("PING\r\n")
        },
        data: (socket, data) => {
          resolve(data.toString().startsWith("+PONG"))
          socket.end()
        },
        error: () => resolve(false),
        connectError: () => resolve(false),
        close: () => resolve(false)
      }
    }).catch(() => resolve(false))
  })

export const makeRedisServer: Effect.Effect<RedisServer, RedisServerError, Scope.Scope> = Effect.gen(
  function*() {
    const binary = Bun.which("redis-server")
    if (binary === null) {
      return yield* new RedisServerError({ message: "redis-server not found on PATH (Debian package redis-server)" })
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dashcast-redis-"))
    const port = freePort()
    const logFile = path.join(dir, "redis.log")
    let running: Subprocess | undefined

    const spawnAndWait = async (): Promise<void> => {
      const proc = Bun.spawn(
        [binary, "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--logfile", logFile],
        { stdin: "ignore", stdout: "ignore", stderr: "ignore" }
      )
      running = proc
      const deadline = Date.now() + 10_000
      while (Date.now() < deadline) {
        if (proc.exitCode !== null) break
        if (await pong(port)) return
        await Bun.sleep(20)
      }
      proc.kill("SIGKILL")
      const log = fs.existsSync(logFile) ? fs.readFileSync(logFile, "utf8").slice(-2000) : ""
      throw new Error(`redis-server did not start on port ${port}: ${log}`)
    }

    const kill = Effect.promise(async () => {
      const proc = running
      running = undefined
      if (proc === undefined) return
      proc.kill("SIGKILL")
      await proc.exited
    })

    const start = Effect.tryPromise({
      try: spawnAndWait,
      catch: (cause) => new RedisServerError({ message: cause instanceof Error ? cause.message : String(cause) })
    })

    yield* Effect.acquireRelease(start, () =>
      kill.pipe(Effect.andThen(Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))))

    return {
      port,
      url: `redis://127.0.0.1:${port}`,
      stop: kill,
      start,
      pause: Effect.sync(() => running?.kill("SIGSTOP")),
      resume: Effect.sync(() => running?.kill("SIGCONT"))
    }
  }
)
