import { describe, expect, it } from "@effect/vitest"
import { Chunk, Duration, Effect, FastCheck as fc, Option, Schedule } from "effect"
import { Attempt, type PolicySettings, updatePolicy } from "../../src/updater/Policy.js"

const MINUTE = 60_000

/** The delays the schedule really applies (read with `Schedule.delays`) for a run of outcomes. */
const delaysOf = (settings: PolicySettings, outcomes: ReadonlyArray<Attempt>): ReadonlyArray<number> =>
  Effect.runSync(Schedule.run(Schedule.delays(updatePolicy(settings)), 0, outcomes)).pipe(
    Chunk.toReadonlyArray,
    (delays) => delays.map(Duration.toMillis)
  )

const defaults: PolicySettings = {
  interval: Duration.minutes(10),
  threshold: 3,
  cap: Duration.minutes(30),
  initialAttempts: 3,
  initialDelay: Duration.seconds(5)
}

const failure = (retryAfter?: Duration.DurationInput) =>
  Attempt.Failure({ retryAfter: retryAfter === undefined ? Option.none() : Option.some(Duration.decode(retryAfter)) })
const success = Attempt.Success()

const settingsArb = fc.record({
  interval: fc.integer({ min: 1_000, max: 60 * MINUTE }).map(Duration.millis),
  threshold: fc.integer({ min: 0, max: 6 }),
  cap: fc.integer({ min: 1_000, max: 180 * MINUTE }).map(Duration.millis),
  initialAttempts: fc.integer({ min: 1, max: 5 }),
  initialDelay: fc.integer({ min: 100, max: 60_000 }).map(Duration.millis)
})

const outcomeArb: fc.Arbitrary<Attempt> = fc.oneof(
  { weight: 1, arbitrary: fc.constant(success) },
  { weight: 3, arbitrary: fc.constant(failure()) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 4 * 60 * MINUTE }).map((ms) => failure(Duration.millis(ms))) }
)
const outcomesArb = fc.array(outcomeArb, { minLength: 1, maxLength: 40 })

/** Indexes past the initial load: a success happened, or the initial attempts are used up. */
const steadyIndexes = (settings: PolicySettings, outcomes: ReadonlyArray<Attempt>): ReadonlyArray<number> => {
  const firstSuccess = outcomes.findIndex((o) => o._tag === "Success")
  const initialEnd = settings.initialAttempts - 1
  return outcomes.map((_, i) => i).filter((i) => i >= initialEnd || (firstSuccess >= 0 && i >= firstSuccess))
}

const retryAfterMillis = (o: Attempt) => (o._tag === "Failure" ? Option.match(o.retryAfter, { onNone: () => 0, onSome: Duration.toMillis }) : 0)

describe("updatePolicy", () => {
  it("follows the worked example with the defaults: failures at 0, 10, 20, 30, then 50, 80, 110", () => {
    // Steady failures (the initial load succeeded long ago) followed by one success.
    const outcomes = [success, failure(), failure(), failure(), failure(), failure(), failure(), success, failure()]
    expect(delaysOf(defaults, outcomes).map((ms) => ms / MINUTE)).toEqual([10, 10, 10, 10, 20, 30, 30, 10, 10])
  })

  it("retries the initial load INITIAL_RETRY_DELAY apart, then hands over to the rule", () => {
    // Three failed initial attempts count as three failures: the fourth is at the interval, the fifth backs off.
    expect(delaysOf(defaults, [failure(), failure(), failure(), failure(), failure()])).toEqual([
      5_000,
      5_000,
      10 * MINUTE,
      20 * MINUTE,
      30 * MINUTE
    ])
    // The first success ends the initial load.
    expect(delaysOf(defaults, [failure(), success, failure()])).toEqual([5_000, 10 * MINUTE, 10 * MINUTE])
  })

  it("lengthens a delay to an upstream Retry-After", () => {
    expect(delaysOf(defaults, [success, failure("45 minutes"), failure("1 minutes")])).toEqual([
      10 * MINUTE,
      45 * MINUTE,
      10 * MINUTE
    ])
    expect(delaysOf(defaults, [failure("2 minutes")])).toEqual([2 * MINUTE])
  })

  it.prop("is never below the interval once the initial load is over", [settingsArb, outcomesArb], ([settings, outcomes]) => {
    const delays = delaysOf(settings, outcomes)
    for (const i of steadyIndexes(settings, outcomes)) {
      expect(delays[i]).toBeGreaterThanOrEqual(Duration.toMillis(settings.interval))
    }
  })

  it.prop("is never above max(interval, cap, retryAfter)", [settingsArb, outcomesArb], ([settings, outcomes]) => {
    const delays = delaysOf(settings, outcomes)
    outcomes.forEach((outcome, i) => {
      const bound = Math.max(
        Duration.toMillis(settings.interval),
        Duration.toMillis(settings.cap),
        Duration.toMillis(settings.initialDelay),
        retryAfterMillis(outcome)
      )
      expect(delays[i]).toBeLessThanOrEqual(bound)
    })
    for (const i of steadyIndexes(settings, outcomes)) {
      const outcome = outcomes[i]!
      expect(delays[i]).toBeLessThanOrEqual(
        Math.max(Duration.toMillis(settings.interval), Duration.toMillis(settings.cap), retryAfterMillis(outcome))
      )
    }
  })

  it.prop(
    "does not decrease while failures continue",
    [settingsArb, fc.integer({ min: 0, max: 3 }), fc.integer({ min: 1, max: 30 })],
    ([settings, successes, failures]) => {
      const outcomes = [...Array(successes).fill(success), ...Array(failures).fill(failure())]
      const delays = delaysOf(settings, outcomes)
      for (const i of steadyIndexes(settings, outcomes)) {
        if (i + 1 < delays.length && i >= successes) expect(delays[i + 1]).toBeGreaterThanOrEqual(delays[i]!)
      }
    }
  )

  it.prop("returns to the interval after one success", [settingsArb, outcomesArb], ([settings, outcomes]) => {
    const delays = delaysOf(settings, [...outcomes, success, failure()])
    const interval = Duration.toMillis(settings.interval)
    expect(delays[outcomes.length]).toBe(interval)
    // The failure count restarted: one failure after the success is within any threshold of 1 or more.
    if (settings.threshold >= 1) expect(delays[outcomes.length + 1]).toBe(interval)
  })

  it.prop(
    "doubles past the threshold up to the cap",
    [settingsArb, fc.integer({ min: 1, max: 20 })],
    ([settings, extra]) => {
      const failures = settings.threshold + extra
      const outcomes = [success, ...Array(failures).fill(failure())]
      const last = delaysOf(settings, outcomes)[failures]!
      const interval = Duration.toMillis(settings.interval)
      expect(last).toBe(Math.max(interval, Math.min(interval * 2 ** extra, Duration.toMillis(settings.cap))))
    }
  )
})
