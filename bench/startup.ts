/**
 * Start-up time of the compiled binary: from spawn to the first successful TCP connection on its
 * port, repeated, printing the median and the worst. Run with `npm run bench:startup` after `npm run build`.
 */
import { join } from "node:path"

const binary = process.env["DASHCAST_BIN"] ?? join(import.meta.dir, "..", "dist", "dashcast")
const runs = Number(process.env["RUNS"] ?? 15)

const freePort = () => {
  const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } })
  const port = listener.port
  listener.stop(true)
  return port
}

const canConnect = (port: number) =>
  new Promise<boolean>((resolve) => {
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(socket) {
          socket.end()
          resolve(true)
        },
        data() {},
        connectError() {
          resolve(false)
        }
      }
    }).catch(() => resolve(false))
  })

const timings: Array<number> = []
for (let i = 0; i < runs; i++) {
  const port = freePort()
  const started = performance.now()
  const child = Bun.spawn([binary, "--demo", "--host", "127.0.0.1", "--port", String(port)], {
    env: { ...process.env, CACHE_PATH: ":memory:", LOG_LEVEL: "warn" },
    stdout: "ignore",
    stderr: "inherit"
  })
  while (!(await canConnect(port))) {
    if (performance.now() - started > 10_000) throw new Error("the binary did not listen within 10 s")
    await Bun.sleep(2)
  }
  timings.push(performance.now() - started)
  child.kill("SIGTERM")
  await child.exited
}
timings.sort((a, b) => a - b)
const median = timings[Math.floor(timings.length / 2)]!
console.log(`start-up to listening over ${runs} runs: median ${median.toFixed(0)} ms, max ${timings.at(-1)!.toFixed(0)} ms`)
