/**
 * The command line: `parseArgs` as a unit, then `bun src/main.ts` as a real process for what only a
 * process shows: `--help`, exit code 2 with one line on bad input, SIGTERM closing sockets with 1001
 * and exiting 0, and secrets that never reach the output.
 */
import { describe, expect, it } from "@effect/vitest"
import type { Subprocess } from "bun"
import { Duration, Effect, Either, Schedule, type Scope } from "effect"
import { configProvider, parseArgs, type UsageError } from "../src/Cli.js"
import { AppConfig, settings } from "../src/Config.js"
import { isType } from "./support/WsClient.js"
import * as WsClient from "./support/WsClient.js"
import { freePort } from "./support/Ports.js"

const MAIN = new URL("../src/main.ts", import.meta.url).pathname

const flagsOf = (argv: ReadonlyArray<string>) =>
  Either.match(parseArgs(argv), {
    onLeft: (error) => expect.fail(`parseArgs(${JSON.stringify(argv)}) failed: ${error.message}`),
    onRight: (invocation) => invocation
  })

const usageErrorOf = (argv: ReadonlyArray<string>): UsageError =>
  Either.match(parseArgs(argv), {
    onLeft: (error) => error,
    onRight: (invocation) => expect.fail(`parseArgs(${JSON.stringify(argv)}) accepted ${JSON.stringify([...invocation.flags])}`)
  })

describe("parseArgs", () => {
  it("reads a flag and its value as two arguments or joined by =", () => {
    for (const argv of [["--port", "9000"], ["--port=9000"]]) {
      const invocation = flagsOf(argv)
      expect(invocation.command).toBe("serve")
      expect(Object.fromEntries(invocation.flags)).toEqual({ PORT: "9000" })
    }
  })

  it("keeps a value with spaces, and an = inside the value", () => {
    expect(Object.fromEntries(flagsOf(["--update-interval", "90 seconds"]).flags)).toEqual({ UPDATE_INTERVAL: "90 seconds" })
    expect(Object.fromEntries(flagsOf(["--update-interval=90 seconds"]).flags)).toEqual({ UPDATE_INTERVAL: "90 seconds" })
    expect(Object.fromEntries(flagsOf(["--admin-token=a=b"]).flags)).toEqual({ ADMIN_TOKEN: "a=b" })
  })

  it("takes --demo bare as true, before another flag or last, and an explicit value when given", () => {
    expect(Object.fromEntries(flagsOf(["--demo"]).flags)).toEqual({ DEMO: "true" })
    expect(Object.fromEntries(flagsOf(["--demo", "--port", "1"]).flags)).toEqual({ DEMO: "true", PORT: "1" })
    expect(Object.fromEntries(flagsOf(["--port", "1", "--demo"]).flags)).toEqual({ DEMO: "true", PORT: "1" })
    expect(Object.fromEntries(flagsOf(["--demo", "false"]).flags)).toEqual({ DEMO: "false" })
    expect(Object.fromEntries(flagsOf(["--demo=false"]).flags)).toEqual({ DEMO: "false" })
  })

  it("has a flag for every setting", () => {
    for (const setting of settings) {
      const flag = `--${setting.name.toLowerCase().replaceAll("_", "-")}`
      expect(Object.fromEntries(flagsOf([flag, "value"]).flags), flag).toEqual({ [setting.name]: "value" })
    }
  })

  it("reads the commands", () => {
    expect(flagsOf(["serve", "--port", "1"]).command).toBe("serve")
    expect(flagsOf(["healthcheck"]).command).toBe("healthcheck")
    for (const help of ["--help", "-h", "help"]) expect(flagsOf([help]).command).toBe("help")
    expect(flagsOf(["--version"]).command).toBe("version")
  })

  it("refuses an unknown flag, a stray word and a flag without its value", () => {
    expect(usageErrorOf(["--bogus"]).message).toContain("--bogus")
    expect(usageErrorOf(["--bogus=1"]).message).toContain("--bogus")
    expect(usageErrorOf(["--port", "1", "--prot", "2"]).message).toContain("--prot")
    expect(usageErrorOf(["start"]).message).toContain("start")
    expect(usageErrorOf(["--port"]).message).toContain("PORT")
  })
})

/** The configuration exactly as `dashcast` reads it: the environment with the flags laid over it. */
const configFrom = (argv: ReadonlyArray<string>, env: Record<string, string>) =>
  AppConfig.pipe(Effect.provide(AppConfig.Default), Effect.withConfigProvider(configProvider(flagsOf(argv), env)))

describe("configuration from the environment and flags", () => {
  it.effect("updates every 5 seconds with DEMO and no UPDATE_INTERVAL, by flag or environment", () =>
    Effect.gen(function*() {
      for (const [argv, env] of [[["--demo"], {}], [[], { DEMO: "true" }]] as const) {
        const config = yield* configFrom(argv, env)
        expect(Duration.toMillis(config.updateInterval), JSON.stringify({ argv, env })).toBe(5_000)
      }
    }))

  it.effect("keeps 10 minutes without DEMO, and a given UPDATE_INTERVAL either way", () =>
    Effect.gen(function*() {
      expect(Duration.toMillis((yield* configFrom([], {})).updateInterval)).toBe(600_000)
      expect(Duration.toMillis((yield* configFrom(["--demo"], { UPDATE_INTERVAL: "1 minutes" })).updateInterval)).toBe(60_000)
      expect(Duration.toMillis((yield* configFrom(["--update-interval", "90 seconds"], { DEMO: "true" })).updateInterval)).toBe(90_000)
    }))

  it.effect("reads the webhook settings: 5 s first retry, 10 s timeout, no private targets by default; --webhook-allow-private bare is true", () =>
    Effect.gen(function*() {
      const defaults = yield* configFrom([], {})
      expect([Duration.toMillis(defaults.webhookRetryDelay), Duration.toMillis(defaults.webhookTimeout), defaults.webhookAllowPrivate]).toEqual([5_000, 10_000, false])
      const given = yield* configFrom(["--webhook-allow-private", "--webhook-retry-delay", "200 millis"], { WEBHOOK_TIMEOUT: "1 minute" })
      expect([Duration.toMillis(given.webhookRetryDelay), Duration.toMillis(given.webhookTimeout), given.webhookAllowPrivate]).toEqual([200, 60_000, true])
      expect((yield* configFrom([], { WEBHOOK_ALLOW_PRIVATE: "true" })).webhookAllowPrivate).toBe(true)
    }))

  it.effect("watches bitcoin in usd by default", () =>
    Effect.gen(function*() {
      const config = yield* configFrom([], {})
      expect(config.assets).toEqual(["bitcoin"])
      expect(config.currencies).toEqual(["usd"])
    }))

  it.effect("reads ASSETS and CURRENCIES in order, spaces around items trimmed, by environment or flag", () =>
    Effect.gen(function*() {
      const spaced = yield* configFrom([], { ASSETS: " bitcoin , ethereum,solana ", CURRENCIES: "eur , usd,  gbp" })
      expect(spaced.assets).toEqual(["bitcoin", "ethereum", "solana"])
      expect(spaced.currencies).toEqual(["eur", "usd", "gbp"])
      // Ids as CoinGecko writes them: digits, dashes, dots and underscores inside.
      const odd = yield* configFrom(["--assets", "usd-coin,0x,wrapped-steth,bridged.usdc,a_b"], { ASSETS: "bitcoin" })
      expect(odd.assets).toEqual(["usd-coin", "0x", "wrapped-steth", "bridged.usdc", "a_b"])
      expect((yield* configFrom(["--currencies", "jpy"], { CURRENCIES: "usd" })).currencies).toEqual(["jpy"])
    }))

  it.effect("lets only the page's own origin frame it by default; FRAME_ANCESTORS lists others, space-separated", () =>
    Effect.gen(function*() {
      expect((yield* configFrom([], {})).frameAncestors).toBe("'self'")
      const listed = yield* configFrom([], { FRAME_ANCESTORS: "  'self'   https://ha.example.com:8123 https://*.grafana.net http://[::1]:3000 " })
      expect(listed.frameAncestors).toBe("'self' https://ha.example.com:8123 https://*.grafana.net http://[::1]:3000")
      expect((yield* configFrom(["--frame-ancestors", "'none'"], { FRAME_ANCESTORS: "'self'" })).frameAncestors).toBe("'none'")
      expect((yield* configFrom([], { FRAME_ANCESTORS: "https:" })).frameAncestors).toBe("https:")
    }))

  it.effect("accepts 250 assets and 10 currencies, the most allowed", () =>
    Effect.gen(function*() {
      const assets = Array.from({ length: 250 }, (_, i) => `coin-${i}`)
      const currencies = ["usd", "eur", "gbp", "jpy", "chf", "cad", "aud", "cny", "inr", "brl"]
      const config = yield* configFrom([], { ASSETS: assets.join(","), CURRENCIES: currencies.join(",") })
      expect(config.assets).toEqual(assets)
      expect(config.currencies).toEqual(currencies)
    }))

  it.effect("reads LOG_LEVEL in any case, warning as warn", () =>
    Effect.gen(function*() {
      const cases = [["warning", "WARN"], ["WARNING", "WARN"], ["warn", "WARN"], ["Debug", "DEBUG"], ["off", "OFF"], [" info ", "INFO"]]
      for (const [given, label] of cases) {
        expect((yield* configFrom([], { LOG_LEVEL: given! })).logLevel.label, given).toBe(label)
      }
      expect((yield* configFrom(["--log-level", "Warning"], { LOG_LEVEL: "error" })).logLevel.label).toBe("WARN")
      expect((yield* configFrom([], {})).logLevel.label).toBe("INFO")
    }))
})

// ---------------------------------------------------------------------------------------------
// The real process

interface Finished {
  /** null when the process had to be killed after the timeout. */
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

interface Running {
  readonly process: Subprocess<"ignore", "pipe", "pipe">
  /** Waits for the exit (killing the process after `timeout`) and returns its code and output. */
  readonly finish: (timeout?: Duration.DurationInput) => Effect.Effect<Finished>
}

/** A clean environment, so that nothing from the test runner's environment configures dashcast. */
const baseEnv = (): Record<string, string> => ({
  PATH: process.env["PATH"] ?? "/usr/bin:/bin",
  HOME: process.env["HOME"] ?? "/tmp",
  CACHE_PATH: ":memory:"
})

/** `bun src/main.ts ...args`, killed when the scope closes if it is still running. */
const spawnDashcast = (args: ReadonlyArray<string>, env: Record<string, string> = {}): Effect.Effect<Running, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = Bun.spawn([process.execPath, MAIN, ...args], {
        env: { ...baseEnv(), ...env },
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe"
      })
      // Read from the start, so that a chatty process never blocks on a full pipe.
      const stdout = new Response(child.stdout).text()
      const stderr = new Response(child.stderr).text()
      const finish = (timeout: Duration.DurationInput = "10 seconds") =>
        Effect.promise(() => child.exited).pipe(
          Effect.timeoutTo({
            duration: timeout,
            onSuccess: (code): number | null => code,
            onTimeout: () => null
          }),
          Effect.tap((code) => (code === null ? Effect.promise(() => (child.kill("SIGKILL"), child.exited)) : Effect.void)),
          Effect.flatMap((code) => Effect.promise(async () => ({ code, stdout: await stdout, stderr: await stderr })))
        )
      return { process: child, finish }
    }),
    ({ process: child }) =>
      child.exitCode === null && child.signalCode === null
        ? Effect.promise(() => (child.kill("SIGKILL"), child.exited))
        : Effect.void
  )

const runToExit = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  Effect.scoped(Effect.flatMap(spawnDashcast(args, env), (running) => running.finish()))


/**
 * Waits until `/healthz` answers 200 (10 s at most: the process compiles TypeScript first); a
 * process that exits or never gets there fails the test with its output.
 */
const awaitHealthy = (port: number, running: Running) =>
  Effect.tryPromise(() => fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(1000) })).pipe(
    Effect.filterOrFail((response) => response.status === 200),
    Effect.retry(Schedule.spaced("50 millis")),
    Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => "timeout" }),
    Effect.raceFirst(Effect.promise(() => running.process.exited).pipe(Effect.zipRight(Effect.fail("exited")))),
    Effect.catchAll((why) =>
      running.finish("1 second").pipe(
        Effect.flatMap((out) => Effect.dieMessage(`dashcast did not become healthy on ${port} (${why}): ${JSON.stringify(out)}`))
      )
    ),
    Effect.asVoid
  )

describe("dashcast process", () => {
  it.live("--help lists every setting with its default and exits 0", () =>
    Effect.gen(function*() {
      const { code, stderr, stdout } = yield* runToExit(["--help"])
      expect(code).toBe(0)
      expect(stderr).toBe("")
      for (const setting of settings) {
        const flag = `--${setting.name.toLowerCase().replaceAll("_", "-")}`
        const line = stdout.split("\n").find((l) => l.trimStart().startsWith(`${flag} `))
        expect(line, flag).toBeDefined()
        expect(line).toContain(` ${setting.name} `)
        expect(line).toContain(`[default: ${setting.default}]`)
      }
    }))

  it.live("--version prints the version and exits 0", () =>
    Effect.gen(function*() {
      const { code, stdout } = yield* runToExit(["--version"])
      expect(code).toBe(0)
      expect(stdout).toMatch(/^dashcast \d+\.\d+\.\d+\n$/)
    }))

  describe("exits 2 with exactly one line on stderr naming what is wrong", () => {
    const cases: ReadonlyArray<readonly [string, ReadonlyArray<string>, Record<string, string>, string]> = [
      ["--port abc", ["--port", "abc"], {}, "PORT"],
      ["PORT=70000", [], { PORT: "70000" }, "PORT"],
      ["MAX_MESSAGE_BYTES=1", [], { MAX_MESSAGE_BYTES: "1" }, "MAX_MESSAGE_BYTES"],
      ["--max-message-bytes 1", ["--max-message-bytes", "1"], {}, "MAX_MESSAGE_BYTES"],
      ["UPDATE_INTERVAL=0 seconds", [], { UPDATE_INTERVAL: "0 seconds" }, "UPDATE_INTERVAL"],
      ["--port=abc", ["--port=abc"], {}, "PORT"],
      ["UPDATE_INTERVAL=soon", [], { UPDATE_INTERVAL: "soon" }, "UPDATE_INTERVAL"],
      ["MIN_FETCH_GAP=soon", [], { MIN_FETCH_GAP: "soon" }, "MIN_FETCH_GAP"],
      ["MAX_CONNECTIONS=0", [], { MAX_CONNECTIONS: "0" }, "MAX_CONNECTIONS"],
      ["LOG_LEVEL=verbose", [], { LOG_LEVEL: "verbose" }, "LOG_LEVEL"],
      ["TLS_CERT without TLS_KEY", [], { TLS_CERT: "/nonexistent/cert.pem" }, "TLS_CERT"],
      ["FRAME_ANCESTORS with commas", [], { FRAME_ANCESTORS: "https://a.example,https://b.example" }, "FRAME_ANCESTORS"],
      ["FRAME_ANCESTORS with another directive", [], { FRAME_ANCESTORS: "'self'; script-src *" }, "FRAME_ANCESTORS"],
      ["--frame-ancestors 'none' with an origin", ["--frame-ancestors", "'none' https://a.example"], {}, "FRAME_ANCESTORS"],
      ["WEBHOOK_RETRY_DELAY=0 seconds", [], { WEBHOOK_RETRY_DELAY: "0 seconds" }, "WEBHOOK_RETRY_DELAY"],
      ["WEBHOOK_RETRY_DELAY=2 minutes", [], { WEBHOOK_RETRY_DELAY: "2 minutes" }, "WEBHOOK_RETRY_DELAY"],
      ["--webhook-retry-delay soon", ["--webhook-retry-delay", "soon"], {}, "WEBHOOK_RETRY_DELAY"],
      ["WEBHOOK_TIMEOUT=5 minutes", [], { WEBHOOK_TIMEOUT: "5 minutes" }, "WEBHOOK_TIMEOUT"],
      ["WEBHOOK_ALLOW_PRIVATE=maybe", [], { WEBHOOK_ALLOW_PRIVATE: "maybe" }, "WEBHOOK_ALLOW_PRIVATE"],
      ["an unknown flag", ["--bogus", "1"], {}, "--bogus"],
      ["a flag without its value", ["--port"], {}, "PORT"]
    ]
    for (const [name, args, env, names] of cases) {
      it.live(name, () =>
        Effect.gen(function*() {
          const { code, stderr, stdout } = yield* runToExit(args, { ...env, ADMIN_TOKEN: "some-secret-value" })
          expect(code).toBe(2)
          expect(stderr.endsWith("\n")).toBe(true)
          expect(stderr.trimEnd().split("\n")).toHaveLength(1)
          expect(stderr).toContain(names)
          expect(stderr).not.toMatch(/to exist/)
          expect(stderr + stdout).not.toContain("some-secret-value")
        }))
    }

    // The watchlist: each problem named with its variable, and what is wrong with the list.
    const assets251 = Array.from({ length: 251 }, (_, i) => `coin-${i}`).join(",")
    const currencies11 = "usd,eur,gbp,jpy,chf,cad,aud,cny,inr,brl,sek"
    const watchlist: ReadonlyArray<readonly [string, ReadonlyArray<string>, Record<string, string>, string, RegExp]> = [
      ["ASSETS with an empty item", [], { ASSETS: "bitcoin,,ethereum" }, "ASSETS", /item 2 is empty/],
      ["ASSETS with a trailing comma", [], { ASSETS: "bitcoin," }, "ASSETS", /item 2 is empty/],
      ["ASSETS empty", [], { ASSETS: "" }, "ASSETS", /item 1 is empty/],
      ["ASSETS in upper case", [], { ASSETS: "bitcoin,Ethereum" }, "ASSETS", /"Ethereum" has upper case/],
      ["ASSETS with a space inside an id", [], { ASSETS: "bitcoin, bit coin" }, "ASSETS", /"bit coin" has a space inside/],
      ["ASSETS with a duplicate", [], { ASSETS: "bitcoin,ethereum, bitcoin" }, "ASSETS", /"bitcoin" is listed twice/],
      ["ASSETS with a character no id has", [], { ASSETS: "bitcoin;ethereum" }, "ASSETS", /"bitcoin;ethereum" is not a valid coin id/],
      ["251 ASSETS", [], { ASSETS: assets251 }, "ASSETS", /251 .* at most 250/],
      ["--assets with upper case", ["--assets", "BTC"], {}, "ASSETS", /"BTC" has upper case/],
      ["CURRENCIES with an empty item", [], { CURRENCIES: ",usd" }, "CURRENCIES", /item 1 is empty/],
      ["CURRENCIES in upper case", [], { CURRENCIES: "usd,EUR" }, "CURRENCIES", /"EUR" has upper case/],
      ["CURRENCIES with a space inside", [], { CURRENCIES: "us d" }, "CURRENCIES", /"us d" has a space inside/],
      ["CURRENCIES with a duplicate", [], { CURRENCIES: "usd,eur,usd" }, "CURRENCIES", /"usd" is listed twice/],
      ["CURRENCIES that is no currency code", [], { CURRENCIES: "usd,u$d" }, "CURRENCIES", /"u\$d" is not a valid currency/],
      ["11 CURRENCIES", [], { CURRENCIES: currencies11 }, "CURRENCIES", /11 .* at most 10/],
      ["--currencies with a duplicate", ["--currencies", "eur,eur"], {}, "CURRENCIES", /"eur" is listed twice/]
    ]
    for (const [name, args, env, variable, why] of watchlist) {
      it.live(name, () =>
        Effect.gen(function*() {
          // DEMO on a free port: if the list were accepted, the process would not call upstream.
          const { code, stderr, stdout } = yield* runToExit(args, { DEMO: "true", HOST: "127.0.0.1", PORT: "0", ...env })
          expect(code).toBe(2)
          expect(stderr.trimEnd().split("\n")).toHaveLength(1)
          expect(stderr).toContain(`${variable}: `)
          expect(stderr).toMatch(why)
          expect(stdout).toBe("")
        }))
    }

    // Flags and environment are one source: a value the primitive rejects is reported as what it
    // is, and an invalid flag never falls back to the environment's value.
    const badPrimitives: ReadonlyArray<readonly [string, ReadonlyArray<string>, Record<string, string>, string]> = [
      ["DEMO=maybe", [], { DEMO: "maybe" }, "DEMO"],
      ["PORT=abc in the environment", [], { PORT: "abc" }, "PORT"],
      ["--port abc with a valid PORT in the environment", ["--port", "abc", "--demo"], { PORT: String(freePort()) }, "PORT"]
    ]
    for (const [name, args, env, names] of badPrimitives) {
      it.live(`${name}`, () =>
        Effect.gen(function*() {
          const { code, stderr } = yield* Effect.scoped(
            Effect.flatMap(spawnDashcast(args, env), (running) => running.finish("3 seconds"))
          )
          expect(code).toBe(2)
          expect(stderr.trimEnd().split("\n")).toHaveLength(1)
          expect(stderr).toContain(names)
          expect(stderr).not.toMatch(/to exist|: : /)
        }))
    }
  })

  it.live("with DEMO=true and no UPDATE_INTERVAL, announces and keeps a 5 second schedule", () =>
    Effect.gen(function*() {
      const port = freePort()
      const running = yield* spawnDashcast(["--host", "127.0.0.1", "--port", String(port)], { DEMO: "true", LOG_FORMAT: "json" })
      yield* awaitHealthy(port, running)
      const client = yield* WsClient.connect(`ws://127.0.0.1:${port}/ws`)
      const scheduled = (m: { readonly type: string }) => m.type === "dashboard_update" && "source" in m && m.source === "scheduled_update"
      // The first scheduled update may already be out; two more prove the cadence (10 minutes would time out).
      yield* client.next(scheduled, { timeout: "8 seconds" })
      const first = Date.now()
      yield* client.next(scheduled, { timeout: "8 seconds" })
      expect(Date.now() - first).toBeGreaterThan(3_000)
      running.process.kill("SIGTERM")
      const { stdout } = yield* running.finish("5 seconds")
      const schedule = stdout.split("\n").flatMap((line) => {
        try {
          const log = JSON.parse(line) as { message?: unknown; annotations?: Record<string, unknown> }
          return String(log.message).startsWith("update schedule") ? [log] : []
        } catch {
          return []
        }
      })
      expect(schedule).toHaveLength(1)
      expect(schedule[0]?.annotations?.["update_interval_ms"]).toBe(5_000)
    }).pipe(Effect.scoped))

  it.live("starts with LOG_LEVEL=warning and logs nothing below warnings", () =>
    Effect.gen(function*() {
      const port = freePort()
      const running = yield* spawnDashcast(["--demo", "--host", "127.0.0.1", "--port", String(port)], { LOG_LEVEL: "warning", LOG_FORMAT: "json" })
      yield* awaitHealthy(port, running)
      running.process.kill("SIGTERM")
      const { code, stdout, stderr } = yield* running.finish("5 seconds")
      expect(code).toBe(0)
      expect(stderr).toBe("")
      const levels = stdout.split("\n").filter((l) => l.trim() !== "").map((l) => (JSON.parse(l) as { logLevel: string }).logLevel)
      expect(levels.filter((level) => level === "INFO" || level === "DEBUG")).toEqual([])
    }).pipe(Effect.scoped))

  it.live("serves the watchlist ASSETS and CURRENCIES name, spaces around items and all", () =>
    Effect.gen(function*() {
      const port = freePort()
      const running = yield* spawnDashcast(["--demo", "--host", "127.0.0.1", "--port", String(port)], {
        ASSETS: " ethereum , bitcoin ",
        CURRENCIES: "eur , usd"
      })
      yield* awaitHealthy(port, running)
      const get = (path: string) =>
        Effect.promise(() => fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(5000) }).then((r) => r.json()))
      const assets = (yield* get("/api/assets")) as { currencies: ReadonlyArray<string>; assets: ReadonlyArray<{ id: string }> }
      expect(assets.currencies).toEqual(["eur", "usd"])
      expect(assets.assets.map((a) => a.id)).toEqual(["ethereum", "bitcoin"])
      const client = yield* WsClient.connect(`ws://127.0.0.1:${port}/ws`)
      const first = yield* client.next((m) => m.type === "welcome" || m.type === "dashboard_update", { timeout: "8 seconds" })
      expect(first.message).toMatchObject({ currency: "eur" })
      running.process.kill("SIGTERM")
      expect((yield* running.finish("5 seconds")).code).toBe(0)
    }).pipe(Effect.scoped))

  it.live("on SIGTERM closes every socket with 1001 and exits 0", () =>
    Effect.gen(function*() {
      const port = freePort()
      const running = yield* spawnDashcast(["--demo", "--host", "127.0.0.1", "--port", String(port)])
      yield* awaitHealthy(port, running)
      const client = yield* WsClient.connect(`ws://127.0.0.1:${port}/ws`)
      yield* client.next((m) => m.type === "welcome" || m.type === "dashboard_update", { timeout: "5 seconds" })

      running.process.kill("SIGTERM")
      const closed = yield* client.closed({ timeout: "5 seconds" })
      expect(closed.code).toBe(1001)
      const { code } = yield* running.finish("5 seconds")
      expect(code).toBe(0)
    }).pipe(Effect.scoped))

  describe("never prints a secret given in the environment", () => {
    const ADMIN_TOKEN = "some-secret-value"
    const COINGECKO_API_KEY = "cg-secret-key-8c1d2e"
    for (const logging of [{}, { LOG_LEVEL: "debug", LOG_FORMAT: "json" }, { LOG_LEVEL: "trace" }]) {
      it.live(JSON.stringify(logging), () =>
        Effect.gen(function*() {
          const port = freePort()
          const running = yield* spawnDashcast(["--demo", "--host", "127.0.0.1", "--port", String(port)], {
            ...logging,
            ADMIN_TOKEN,
            COINGECKO_API_KEY,
            UPDATE_INTERVAL: "200 millis",
            MIN_FETCH_GAP: "0 millis"
          })
          yield* awaitHealthy(port, running)
          const client = yield* WsClient.connect(`ws://127.0.0.1:${port}/ws`)
          // Exercise what might log a secret: updates, a forced refresh, refused tokens.
          yield* client.next(isType("dashboard_update"), { timeout: "5 seconds" })
          for (const token of [ADMIN_TOKEN, "wrong-token", ""]) {
            yield* Effect.promise(() =>
              fetch(`http://127.0.0.1:${port}/api/dashboard/refresh`, {
                method: "POST",
                headers: { authorization: `Bearer ${token}` },
                signal: AbortSignal.timeout(5000)
              })
            )
          }
          yield* client.next(isType("dashboard_update"), { timeout: "5 seconds" })

          running.process.kill("SIGTERM")
          const { code, stderr, stdout } = yield* running.finish("5 seconds")
          expect(code).toBe(0)
          const output = stdout + stderr
          // It did log (so the check is not vacuous), in the format asked for.
          expect(output).toContain("listening on")
          if ("LOG_FORMAT" in logging) {
            for (const line of stdout.trimEnd().split("\n")) expect(() => JSON.parse(line), line).not.toThrow()
          }
          expect(output).not.toContain(ADMIN_TOKEN)
          expect(output).not.toContain(COINGECKO_API_KEY)
        }).pipe(Effect.scoped))
    }
  })
})
