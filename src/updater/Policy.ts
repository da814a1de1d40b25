/**
 * When the next upstream attempt happens (docs/ARCHITECTURE.md, "The schedule"): one `Schedule` fed with the
 * outcome of each attempt. It counts attempts and consecutive failures, then delays by the rule:
 * the interval while failures stay within the threshold, doubling past it up to the cap, never
 * shorter than an upstream `Retry-After`; the initial load retries sooner, `INITIAL_RETRY_DELAY` apart.
 */
import { Data, Duration, Option, Schedule } from "effect"

export type Attempt = Data.TaggedEnum<{
  Success: {}
  Failure: { readonly retryAfter: Option.Option<Duration.Duration> }
}>
export const Attempt = Data.taggedEnum<Attempt>()

export interface PolicySettings {
  /** `UPDATE_INTERVAL` */
  readonly interval: Duration.Duration
  /** `MAX_CONSECUTIVE_FAILURES` */
  readonly threshold: number
  /** `MAX_BACKOFF` */
  readonly cap: Duration.Duration
  /** `INITIAL_FETCH_RETRIES`: attempts of the initial load, the first included */
  readonly initialAttempts: number
  /** `INITIAL_RETRY_DELAY` */
  readonly initialDelay: Duration.Duration
}

/** What the schedule knows after an attempt, and the delay it chose before the next one. */
export interface Decision {
  readonly attempts: number
  /** Consecutive failures, this attempt included; 0 after a success. */
  readonly failures: number
  readonly everSucceeded: boolean
  readonly last: Attempt
  readonly delay: Duration.Duration
}

interface Tally {
  readonly attempts: number
  readonly failures: number
  readonly everSucceeded: boolean
}

const noAttempts: Tally = { attempts: 0, failures: 0, everSucceeded: false }

const countAttempt = (tally: Tally, attempt: Attempt): Tally =>
  Attempt.$is("Success")(attempt)
    ? { attempts: tally.attempts + 1, failures: 0, everSucceeded: true }
    : { attempts: tally.attempts + 1, failures: tally.failures + 1, everSucceeded: tally.everSucceeded }

/** The steady rule: `I` up to the threshold, then `max(I, min(I * 2^(f - T), B))`. */
export const backoffDelay = (settings: PolicySettings, failures: number): Duration.Duration => {
  const interval = Duration.toMillis(settings.interval)
  if (failures <= settings.threshold) return settings.interval
  const doubled = interval * 2 ** (failures - settings.threshold)
  return Duration.millis(Math.max(interval, Math.min(doubled, Duration.toMillis(settings.cap))))
}

const delayAfter = (settings: PolicySettings, tally: Tally, attempt: Attempt): Duration.Duration => {
  if (Attempt.$is("Success")(attempt)) return settings.interval
  const inInitialLoad = !tally.everSucceeded && tally.attempts < settings.initialAttempts
  const ruled = inInitialLoad ? settings.initialDelay : backoffDelay(settings, tally.failures)
  return Option.match(attempt.retryAfter, {
    onNone: () => ruled,
    onSome: (asked) => Duration.max(ruled, asked)
  })
}

/**
 * The rule without its waiting: each outcome in, the decision out at once. The updater steps it
 * with `Schedule.driver` and sleeps `decision.delay` itself, so that a round outside the schedule
 * (a force update, a refresh) can end the wait early: its outcome is the schedule's next input.
 */
export const updateDecisions = (settings: PolicySettings): Schedule.Schedule<Decision, Attempt> =>
  Schedule.identity<Attempt>().pipe(
    Schedule.intersect(Schedule.identity<Attempt>().pipe(Schedule.reduce(noAttempts, countAttempt))),
    Schedule.map(([attempt, before]): Decision => {
      const tally = countAttempt(before, attempt)
      return { ...tally, last: attempt, delay: delayAfter(settings, tally, attempt) }
    })
  )

/**
 * The update schedule. Its input is the outcome of the round that just ended (whoever asked for
 * it); its output is the decision, including the delay, so that the updater can tell clients when
 * the next attempt is due.
 */
export const updatePolicy = (settings: PolicySettings): Schedule.Schedule<Decision, Attempt> =>
  updateDecisions(settings).pipe(Schedule.addDelay((decision) => decision.delay))
