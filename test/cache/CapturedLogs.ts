/**
 * Collects the log lines of one test (the test runtime drops logs), so that a test can check that an
 * outage is logged once when it starts and once when it ends.
 */
import { Effect, Logger } from "effect"

export interface LogLine {
  readonly level: string
  readonly message: string
  readonly annotations: Readonly<Record<string, unknown>>
}

/** Runs `body` with a logger that appends every line to the array it is given. */
export const withCapturedLogs = <A, E, R>(body: (lines: ReadonlyArray<LogLine>) => Effect.Effect<A, E, R>) =>
  Effect.suspend(() => {
    const lines: Array<LogLine> = []
    const logger = Logger.make(({ annotations, logLevel, message }) => {
      lines.push({
        level: logLevel.label,
        message: Array.isArray(message) ? message.map(String).join(" ") : String(message),
        annotations: Object.fromEntries(annotations)
      })
    })
    return body(lines).pipe(Effect.provide(Logger.add(logger)))
  })

export const linesAt = (lines: ReadonlyArray<LogLine>, level: "WARN" | "INFO", fragment: string) =>
  lines.filter((line) => line.level === level && line.message.includes(fragment))
