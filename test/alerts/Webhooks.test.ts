/**
 * Standard Webhooks signing, checked by the maintained `standardwebhooks` library (not by our own
 * code), and the retry schedule `webhookRetryPolicy`: its first retry exactly WEBHOOK_RETRY_DELAY
 * after the failure, then exponential with jitter, capped, a bounded number of attempts over about
 * ten minutes with the default, and `retryDelayAfter` (what a resumed delivery uses) following the
 * very same schedule.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Duration, Effect, FastCheck as fc, Option, Random, Redacted, Schedule } from "effect"
import { Webhook } from "standardwebhooks"
import {
  newSecret,
  retryDelayAfter,
  sign,
  WEBHOOK_MAX_ATTEMPTS,
  WEBHOOK_RETRY_CAP,
  webhookIdOf,
  webhookRetryPolicy
} from "../../src/alerts/Webhooks.js"

const CAP = Duration.toMillis(WEBHOOK_RETRY_CAP)

/** The waits after failures 1, 2, … until the schedule gives up, as `retryDelayAfter` reads them. */
const waits = (first: Duration.Duration, seed = 1) =>
  Effect.gen(function*() {
    const policy = webhookRetryPolicy(first)
    const out: Array<number> = []
    for (let failures = 1; failures <= WEBHOOK_MAX_ATTEMPTS + 2; failures++) {
      const delay = yield* retryDelayAfter(policy, failures).pipe(Effect.withRandom(Random.make(seed)))
      if (Option.isNone(delay)) break
      out.push(Duration.toMillis(delay.value))
    }
    return out
  })

describe("Standard Webhooks signing", () => {
  it("is what the standardwebhooks library verifies, and nothing else is", () => {
    const secret = newSecret()
    expect(Redacted.value(secret)).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/)
    const body = JSON.stringify({ type: "alert.fired", data: { value: 70_123.45 } })
    const id = webhookIdOf("alr_0123abcd", 42)
    const now = Math.floor(Date.now() / 1000)
    const headers = { "webhook-id": id, "webhook-timestamp": String(now), "webhook-signature": sign(secret, id, now, body) }
    expect(new Webhook(Redacted.value(secret)).verify(body, headers)).toEqual(JSON.parse(body))
    // The library's own signature is ours, byte for byte.
    expect(headers["webhook-signature"]).toBe(new Webhook(Redacted.value(secret)).sign(id, new Date(now * 1000), body))
    // Another body, id, timestamp or secret fails.
    expect(() => new Webhook(Redacted.value(secret)).verify(body.replace("70123.45", "70123.46"), headers)).toThrow()
    expect(() => new Webhook(Redacted.value(secret)).verify(body, { ...headers, "webhook-id": `${id}x` })).toThrow()
    expect(() => new Webhook(Redacted.value(secret)).verify(body, { ...headers, "webhook-timestamp": String(now - 1) })).toThrow()
    expect(() => new Webhook(Redacted.value(newSecret())).verify(body, headers)).toThrow()
  })

  it("gives every secret 32 random bytes", () => {
    const secrets = new Set(Array.from({ length: 50 }, () => Redacted.value(newSecret())))
    expect(secrets.size).toBe(50)
    for (const secret of secrets) expect(Buffer.from(secret.slice("whsec_".length), "base64").length).toBe(32)
  })
})

describe("webhookRetryPolicy", () => {
  it.effect("with the default 5 seconds: 5, then about 10, 20, 40, 80, then 150 s three times, about ten minutes for nine attempts", () =>
    Effect.gen(function*() {
      const delays = yield* waits(Duration.seconds(5))
      expect(delays.length).toBe(WEBHOOK_MAX_ATTEMPTS - 1)
      expect(delays[0]).toBe(5_000)
      const nominal = [5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 640_000]
      delays.forEach((delay, i) => {
        if (i === 0) return
        expect(delay, `wait after failure ${i + 1}`).toBeGreaterThanOrEqual(Math.min(0.8 * nominal[i]!, CAP))
        expect(delay, `wait after failure ${i + 1}`).toBeLessThanOrEqual(Math.min(1.2 * nominal[i]!, CAP))
      })
      expect(delays.slice(-3)).toEqual([CAP, CAP, CAP])
      const total = delays.reduce((a, b) => a + b, 0)
      expect(total).toBeGreaterThanOrEqual(9 * 60_000)
      expect(total).toBeLessThanOrEqual(11 * 60_000)
    }))

  it.effect.prop(
    "for any WEBHOOK_RETRY_DELAY: the first retry is exactly it, each wait is capped, and the attempts are bounded",
    [fc.integer({ min: 1, max: 60_000 }), fc.integer()],
    ([firstMs, seed]) =>
      Effect.gen(function*() {
        const delays = yield* waits(Duration.millis(firstMs), seed)
        expect(delays.length).toBe(WEBHOOK_MAX_ATTEMPTS - 1)
        expect(delays[0]).toBe(firstMs)
        for (const [i, delay] of delays.entries()) {
          expect(delay).toBeLessThanOrEqual(CAP)
          if (i > 0) expect(delay).toBeGreaterThanOrEqual(Math.min(0.8 * firstMs * 2 ** i, CAP))
          if (i > 0) expect(delay).toBeLessThanOrEqual(Math.min(1.2 * firstMs * 2 ** i, CAP))
        }
      })
  )

  it.effect.prop(
    "a resumed delivery (which knows only how many attempts failed) waits what the schedule run from the start decides",
    [fc.integer({ min: 1, max: 60_000 }), fc.integer(), fc.integer({ min: 1, max: WEBHOOK_MAX_ATTEMPTS - 1 })],
    ([firstMs, seed, failures]) =>
      Effect.gen(function*() {
        const policy = webhookRetryPolicy(Duration.millis(firstMs))
        const inputs = Array.from({ length: failures }, () => undefined)
        const run = yield* Schedule.run(Schedule.delays(policy), 0, inputs).pipe(Effect.withRandom(Random.make(seed)))
        const resumed = yield* retryDelayAfter(policy, failures).pipe(Effect.withRandom(Random.make(seed)))
        expect(Option.map(resumed, Duration.toMillis)).toEqual(Option.some(Duration.toMillis(Chunk.unsafeGet(run, failures - 1))))
      })
  )

  it.effect("gives up after the last attempt", () =>
    Effect.gen(function*() {
      const policy = webhookRetryPolicy(Duration.seconds(5))
      expect(Option.isSome(yield* retryDelayAfter(policy, WEBHOOK_MAX_ATTEMPTS - 1))).toBe(true)
      expect(yield* retryDelayAfter(policy, WEBHOOK_MAX_ATTEMPTS)).toEqual(Option.none())
      expect(yield* retryDelayAfter(policy, WEBHOOK_MAX_ATTEMPTS + 5)).toEqual(Option.none())
    }))
})
