/**
 * Webhook delivery as the Standard Webhooks specification has it (docs/ARCHITECTURE.md, "Alerts:
 * delivery"): `webhook-id` (the same on every attempt of a firing), `webhook-timestamp` (the
 * attempt's, in seconds) and `webhook-signature` (`v1,` and base64 of HMAC-SHA256 over
 * `id.timestamp.body`, keyed with the base64 bytes after `whsec_`). One attempt is one POST to the
 * checked address (`TargetGuard`), redirects not followed, within `WEBHOOK_TIMEOUT`, reading at most
 * a few KiB of the answer. When to try again is the named schedule `webhookRetryPolicy`.
 */
import { FetchHttpClient, HttpClient, type HttpClientError, HttpClientRequest, type HttpClientResponse } from "@effect/platform"
import { Clock, Context, Data, Duration, Effect, Option, Redacted, Schedule, ScheduleDecision, ScheduleIntervals, Stream } from "effect"
import { createHmac, randomBytes } from "node:crypto"
import { lookup } from "node:dns/promises"
import { AppConfig } from "../Config.js"
import { VERSION } from "../Version.js"
import type { AlertRule } from "./AlertRule.js"
import { pinTarget, type Resolver, type TargetRefused } from "./TargetGuard.js"

// ---------------------------------------------------------------------------------------------
// Signing

const SECRET_PREFIX = "whsec_"

/** A new signing secret: `whsec_` and base64 of 32 random bytes (the specification asks for 24 to 64). */
export const newSecret = (): Redacted.Redacted<string> => Redacted.make(`${SECRET_PREFIX}${randomBytes(32).toString("base64")}`)

/** `v1,<base64 HMAC-SHA256 of id.timestamp.body>` with the secret's bytes as the key. */
export const sign = (secret: Redacted.Redacted<string>, id: string, timestampSeconds: number, body: string): string => {
  const key = Buffer.from(Redacted.value(secret).slice(SECRET_PREFIX.length), "base64")
  return `v1,${createHmac("sha256", key).update(`${id}.${timestampSeconds}.${body}`).digest("base64")}`
}

/**
 * The id of the firing of `ruleId` at snapshot `seq`: a rule fires at most once per snapshot, so
 * the id is the same whichever instance fires it, and receivers can use it to drop a repeat.
 */
export const webhookIdOf = (ruleId: string, seq: number): string => `msg_${ruleId.replace(/^alr_/, "")}_${seq}`

/** What a firing says, as sent (the body is built once and signed as is on every attempt). */
export interface Firing {
  readonly webhookId: string
  readonly rule: AlertRule
  readonly value: number
  readonly seq: number
  /** The snapshot's time, epoch ms. */
  readonly at: number
}

/** The JSON body: Standard Webhooks' recommended `{type, timestamp, data}`. */
export const webhookBody = (firing: Firing): string =>
  JSON.stringify({
    type: "alert.fired",
    timestamp: new Date(firing.at).toISOString(),
    data: {
      alert_id: firing.rule.id,
      asset: firing.rule.asset,
      currency: firing.rule.currency,
      condition: firing.rule.condition,
      threshold: firing.rule.threshold,
      value: firing.value,
      seq: firing.seq
    }
  })

// ---------------------------------------------------------------------------------------------
// When to try again

/** Attempts of one firing, the first included. */
export const WEBHOOK_MAX_ATTEMPTS = 9
/** The longest wait between two attempts. */
export const WEBHOOK_RETRY_CAP = Duration.seconds(150)

/**
 * The retry schedule of one firing, fed with each failed attempt: the first retry `firstRetry`
 * (`WEBHOOK_RETRY_DELAY`) after the first failure, then doubling from twice that with ±20 % jitter,
 * each wait capped at `WEBHOOK_RETRY_CAP`, and no more than `WEBHOOK_MAX_ATTEMPTS` attempts. With
 * the default 5 seconds: 5, 10, 20, 40, 80, 150, 150, 150 seconds, about ten minutes in all.
 */
export const webhookRetryPolicy = (firstRetry: Duration.Duration): Schedule.Schedule<unknown> =>
  Schedule.spaced(firstRetry).pipe(
    Schedule.intersect(Schedule.recurs(1)),
    Schedule.andThen(
      Schedule.exponential(Duration.times(firstRetry, 2)).pipe(Schedule.jittered, Schedule.union(Schedule.spaced(WEBHOOK_RETRY_CAP)))
    ),
    Schedule.intersect(Schedule.recurs(WEBHOOK_MAX_ATTEMPTS - 1))
  )

/**
 * The wait the schedule decides after the `failures`-th failed attempt, or none when it gives up.
 * The schedule is stepped from its start each time, so a firing resumed after a restart or a
 * takeover (which only knows how many attempts were made) follows the same schedule.
 */
export const retryDelayAfter = (policy: Schedule.Schedule<unknown>, failures: number) =>
  Effect.gen(function*() {
    let state = policy.initial
    let now = 0
    let delay = Duration.zero
    for (let i = 0; i < failures; i++) {
      const [next, , decision] = yield* policy.step(now, undefined, state)
      if (ScheduleDecision.isDone(decision)) return Option.none<Duration.Duration>()
      const start = ScheduleIntervals.start(decision.intervals)
      delay = Duration.millis(start - now)
      now = start
      state = next
    }
    return Option.some(delay)
  })

// ---------------------------------------------------------------------------------------------
// Sending

/** How names are resolved; the system's resolver (with `/etc/hosts`) unless a test provides another. */
export class DnsResolver extends Context.Reference<DnsResolver>()("dashcast/DnsResolver", {
  defaultValue: (): Resolver => async (hostname) => (await lookup(hostname, { all: true, verbatim: true })).map((a) => a.address)
}) {}

/** How one attempt ended, for the log, the metrics and the deliveries list. */
export type AttemptResult = Data.TaggedEnum<{
  Delivered: { readonly status: number }
  HttpStatus: { readonly status: number; readonly detail: string }
  Timeout: { readonly after: Duration.Duration }
  Network: { readonly detail: string }
  Refused: { readonly error: TargetRefused }
}>
export const AttemptResult = Data.taggedEnum<AttemptResult>()

export const describeResult = (result: AttemptResult): string =>
  AttemptResult.$match(result, {
    Delivered: ({ status }) => `HTTP ${status}`,
    HttpStatus: ({ detail, status }) => `HTTP ${status}${status >= 300 && status < 400 ? " (redirects are not followed)" : ""}${detail === "" ? "" : `: ${detail}`}`,
    Timeout: ({ after }) => `no answer within ${Duration.format(after)}`,
    Network: ({ detail }) => detail,
    Refused: ({ error }) => `refused: ${error.message}`
  })

/** How much of a receiver's answer is read: enough for an error message, never a whole large body. */
export const RESPONSE_BYTES_READ = 4096

/** Up to `limit` bytes of the body as text; the rest is not read (the stream is cancelled). */
const readSome = (response: HttpClientResponse.HttpClientResponse, limit: number) =>
  response.stream.pipe(
    Stream.runFoldWhile({ chunks: [] as Array<Uint8Array>, size: 0 }, (acc) => acc.size < limit, (acc, chunk) => {
      acc.chunks.push(chunk)
      return { chunks: acc.chunks, size: acc.size + chunk.byteLength }
    }),
    Effect.map(({ chunks }) => new TextDecoder().decode(Buffer.concat(chunks).subarray(0, limit))),
    Effect.orElseSucceed(() => "")
  )

const excerpt = (text: string) => {
  const flat = text.replace(/\s+/g, " ").trim()
  return flat.length > 200 ? `${flat.slice(0, 200)}…` : flat
}

const networkDetail = (error: HttpClientError.HttpClientError): string => {
  const cause = "cause" in error ? error.cause : undefined
  return cause instanceof Error ? cause.message : error.message
}

/** Sends webhooks: one attempt at a time, to a checked address, never following a redirect. */
export class WebhookSender extends Effect.Service<WebhookSender>()("dashcast/WebhookSender", {
  effect: Effect.gen(function*() {
    const config = yield* AppConfig
    const resolve = yield* DnsResolver
    // No trace headers to third parties.
    const client = (yield* HttpClient.HttpClient).pipe(HttpClient.withTracerPropagation(false))
    const timeout = config.webhookTimeout

    /** One attempt of `body` to `url`, signed with `secret` at the attempt's time. */
    const attempt = Effect.fn("WebhookSender.attempt")(
      function*(url: URL, secret: Redacted.Redacted<string>, webhookId: string, body: string) {
        const target = yield* pinTarget(url, { allowPrivate: config.webhookAllowPrivate, resolve })
        const timestamp = Math.floor((yield* Clock.currentTimeMillis) / 1000)
        const request = HttpClientRequest.post(target.url.href).pipe(
          HttpClientRequest.setHeaders({
            host: target.host,
            "user-agent": `dashcast/${VERSION}`,
            "webhook-id": webhookId,
            "webhook-timestamp": String(timestamp),
            "webhook-signature": sign(secret, webhookId, timestamp, body)
          }),
          HttpClientRequest.bodyText(body, "application/json")
        )
        const init: BunFetchRequestInit = { redirect: "manual", tls: { serverName: target.serverName } }
        return yield* client.execute(request).pipe(
          Effect.flatMap((response) =>
            Effect.map(readSome(response, RESPONSE_BYTES_READ), (text): AttemptResult =>
              response.status >= 200 && response.status < 300
                ? AttemptResult.Delivered({ status: response.status })
                : AttemptResult.HttpStatus({ status: response.status, detail: excerpt(text) }))
          ),
          Effect.catchAll((error) => Effect.succeed(AttemptResult.Network({ detail: networkDetail(error) }))),
          Effect.timeoutTo({ duration: timeout, onTimeout: () => AttemptResult.Timeout({ after: timeout }), onSuccess: (r) => r }),
          Effect.provideService(FetchHttpClient.RequestInit, init)
        )
      },
      (effect) => Effect.catchTag(effect, "TargetRefused", (error) => Effect.succeed(AttemptResult.Refused({ error })))
    )

    return { attempt }
  }),
  dependencies: [FetchHttpClient.layer]
}) {}
