/**
 * The command line: `dashcast [serve] [--flag value ...]`, `dashcast healthcheck`, `--help`,
 * `--version`. Every setting is also a flag (`--update-interval "1 minutes"` sets UPDATE_INTERVAL);
 * flags win over the environment. Invalid input ends with one line on stderr and exit code 2.
 */
import { Cause, ConfigError, ConfigProvider, Data, Effect, Either, Exit, Layer, Option } from "effect"
import { AppConfig, describeConfigError, settings } from "./Config.js"
import { VERSION } from "./Version.js"


export type Command = "serve" | "healthcheck" | "help" | "version"

export interface Invocation {
  readonly command: Command
  /** Settings given as flags, by their environment name. */
  readonly flags: ReadonlyMap<string, string>
}

/** A start that must stop with exit code 2: bad flags or bad configuration. */
export class UsageError extends Data.TaggedError("UsageError")<{ readonly message: string }> {}

const flagName = (envName: string) => `--${envName.toLowerCase().replaceAll("_", "-")}`
const byFlag = new Map(settings.map((s) => [flagName(s.name), s.name]))
const BOOLEAN_SETTINGS = new Set(["DEMO", "WEBHOOK_ALLOW_PRIVATE"])

export const parseArgs = (argv: ReadonlyArray<string>): Either.Either<Invocation, UsageError> => {
  let command: Command = "serve"
  const flags = new Map<string, string>()
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === "--help" || arg === "-h" || arg === "help") return Either.right({ command: "help", flags })
    if (arg === "--version" || arg === "-v") return Either.right({ command: "version", flags })
    if (arg === "serve" || arg === "healthcheck") {
      command = arg
      continue
    }
    const [flag, inline] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined]
    const name = byFlag.get(flag)
    if (name === undefined) {
      return Either.left(new UsageError({ message: `unknown argument ${JSON.stringify(flag)}; see --help` }))
    }
    if (inline !== undefined) {
      flags.set(name, inline)
    } else if (BOOLEAN_SETTINGS.has(name) && (argv[i + 1] === undefined || argv[i + 1]!.startsWith("--"))) {
      flags.set(name, "true")
    } else {
      const value = argv[i + 1]
      if (value === undefined) return Either.left(new UsageError({ message: `${flag} needs a value (${name})` }))
      flags.set(name, value)
      i++
    }
  }
  return Either.right({ command, flags })
}

export const helpText = (): string => {
  const rows = settings.map((s) => `  ${flagName(s.name).padEnd(28)} ${s.name.padEnd(26)} ${s.description} [default: ${s.default}]`)
  return [
    `dashcast ${VERSION}: a real-time market dashboard server`,
    "",
    "usage: dashcast [serve] [--flag value ...]   start the server",
    "       dashcast healthcheck                  exit 0 if the server on PORT answers /healthz",
    "       dashcast --help | --version",
    "",
    "Every setting is an environment variable and a flag (flags win). Durations read like",
    "\"10 minutes\", \"90 seconds\" or \"500 millis\".",
    "",
    "  flag                         variable                   meaning",
    ...rows,
    ""
  ].join("\n")
}

/**
 * The environment with the flags laid over it, as one map: a flag wins, and a bad value, from
 * either place, is reported as what it is rather than falling back to the other source.
 */
export const configProvider = (invocation: Invocation, env: NodeJS.ProcessEnv = process.env): ConfigProvider.ConfigProvider =>
  ConfigProvider.fromMap(
    new Map([
      ...Object.entries(env).flatMap(([name, value]): Array<[string, string]> => (value === undefined ? [] : [[name, value]])),
      ...invocation.flags
    ])
  )

const healthcheck = Effect.gen(function*() {
  const config = yield* AppConfig
  const scheme = Option.isSome(config.tlsCert) ? "https" : "http"
  const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host
  const response = yield* Effect.tryPromise(() =>
    fetch(`${scheme}://${host}:${config.port}/healthz`, {
      signal: AbortSignal.timeout(3000),
      tls: { rejectUnauthorized: false }
    })
  ).pipe(Effect.option)
  const ok = Option.exists(response, (r) => r.ok)
  if (!ok) return yield* Effect.fail(new UsageError({ message: "unhealthy" }))
})

/**
 * Runs one invocation: prints help or version, checks health, or builds the server layer and
 * keeps it running until interrupted (SIGINT or SIGTERM, handled by the runtime).
 */
export const run = <E>(argv: ReadonlyArray<string>, server: Layer.Layer<never, E, AppConfig>) =>
  Effect.gen(function*() {
    const invocation = yield* parseArgs(argv)
    switch (invocation.command) {
      case "help":
        return yield* Effect.sync(() => process.stdout.write(helpText()))
      case "version":
        return yield* Effect.sync(() => process.stdout.write(`dashcast ${VERSION}\n`))
      case "healthcheck":
        return yield* healthcheck.pipe(Effect.provide(AppConfig.Default), Effect.withConfigProvider(configProvider(invocation)))
      case "serve":
        return yield* Layer.launch(Layer.provide(server, AppConfig.Default)).pipe(
          Effect.withConfigProvider(configProvider(invocation))
        )
    }
  }).pipe(
    Effect.catchIf(ConfigError.isConfigError, (error) => Effect.fail(new UsageError({ message: describeConfigError(error) }))),
    Effect.tapError((error) => Effect.sync(() => process.stderr.write(`dashcast: ${error instanceof Error ? error.message : String(error)}\n`)))
  )

/** Exit codes: 0 on success or a signal, 2 for usage and configuration errors, 1 otherwise. */
export const exitCode = (exit: Exit.Exit<unknown, unknown>): number => {
  if (Exit.isSuccess(exit) || Cause.isInterruptedOnly(exit.cause)) return 0
  return Option.match(Cause.failureOption(exit.cause), {
    onNone: () => 1,
    onSome: (error) => (error instanceof UsageError && error.message !== "unhealthy" ? 2 : 1)
  })
}
