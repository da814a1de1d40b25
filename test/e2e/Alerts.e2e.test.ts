/**
 * Price alerts against the compiled binary (issue 15, acceptance), with the fake upstream moving
 * bitcoin's price and force updates making each snapshot: a rule fires once on a crossing, not
 * again while the price stays above, again after it re-arms; a receiver that fails twice gets the
 * third attempt with the same webhook-id; a restart between firing and delivery delivers once. The
 * receiver on loopback verifies every delivery with the standardwebhooks library. The binaries log
 * at debug level, and no secret ever appears in their output.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { ensureBinary, isType, openWs, type RunningBinary, startBinary, stopAllBinaries, tempDir, waitFor } from "../support/Binary.js"
import { type FakeUpstream, startFakeUpstream } from "../support/FakeUpstream.js"
import { startWebhookReceiver, type WebhookReceiver } from "../support/WebhookReceiver.js"
import * as path from "node:path"

const TOKEN = "alerts-e2e-token"
const json = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" }

interface Created {
  readonly id: string
  readonly secret: string
}

/** Every secret a test created, to look for in every line the binaries wrote. */
const secrets: Array<string> = []
const binaries: Array<RunningBinary> = []

const start = async (fake: FakeUpstream, env: Record<string, string> = {}) => {
  const app = await startBinary({
    env: {
      ...fake.env,
      ADMIN_TOKEN: TOKEN,
      UPDATE_INTERVAL: "1 hour",
      MIN_FETCH_GAP: "0 millis",
      WEBHOOK_ALLOW_PRIVATE: "true",
      WEBHOOK_RETRY_DELAY: "500 millis",
      LOG_LEVEL: "debug",
      ...env
    }
  })
  binaries.push(app)
  await app.ready()
  return app
}

const createRule = async (app: RunningBinary, receiver: WebhookReceiver, hookPath: string, fields: Record<string, unknown>): Promise<Created> => {
  const response = await app.fetch("/api/alerts", {
    method: "POST",
    headers: json,
    body: JSON.stringify({ asset: "bitcoin", currency: "usd", condition: "price_above", webhook_url: receiver.url(hookPath), ...fields })
  })
  const body = (await response.json()) as Created
  expect(response.status, JSON.stringify(body)).toBe(201)
  secrets.push(body.secret)
  receiver.expectSecret(hookPath, body.secret)
  return body
}

const setBitcoin = (fake: FakeUpstream, usd: number) => {
  const bitcoin = fake.values().assets["bitcoin"]
  if (bitcoin === undefined) throw new Error("the fake upstream does not know bitcoin")
  fake.setAsset("bitcoin", { prices: { ...bitcoin.prices, usd } })
}

/** A force update at `usd`; resolves to the new snapshot's seq. */
const roundAt = async (app: RunningBinary, fake: FakeUpstream, usd: number): Promise<number> => {
  setBitcoin(fake, usd)
  const response = await app.fetch("/api/dashboard/refresh", { method: "POST", headers: { authorization: `Bearer ${TOKEN}` } })
  expect(response.status).toBe(200)
  return ((await response.json()) as { seq: number }).seq
}

const getJson = async <A>(app: RunningBinary, pathname: string): Promise<A> => {
  const response = await app.fetch(pathname, { headers: { authorization: `Bearer ${TOKEN}` } })
  expect(response.status, pathname).toBe(200)
  return (await response.json()) as A
}

interface Attempt {
  readonly webhook_id: string
  readonly attempt: number
  readonly status: number | null
  readonly outcome: string
  readonly error?: string
}
const deliveriesOf = (app: RunningBinary, id: string) => getJson<{ deliveries: Array<Attempt> }>(app, `/api/alerts/${id}/deliveries`).then((d) => d.deliveries)

/** Time for an evaluation that must not fire to have happened (it runs right after the round, on loopback). */
const quiet = () => Bun.sleep(1_000)

beforeAll(() => ensureBinary(), 120_000)
afterAll(async () => {
  try {
    // No secret in any line any binary wrote (logs at debug level, stderr included).
    for (const app of binaries) {
      for (const line of app.output()) {
        for (const secret of secrets) expect(line.text).not.toContain(secret.slice("whsec_".length))
        expect(line.text).not.toContain("whsec_")
      }
    }
    expect(secrets.length).toBeGreaterThan(0)
  } finally {
    await stopAllBinaries()
  }
})

describe("alerts against the binary", () => {
  it("fires once on a crossing, not again while the price stays above, again after it re-arms", async () => {
    const fake = startFakeUpstream()
    const receiver = startWebhookReceiver()
    try {
      const app = await start(fake)
      const rule = await createRule(app, receiver, "/hook", { threshold: 70_000 })
      using client = openWs(app.wsUrl)
      await client.waitFor(isType("welcome"))

      await roundAt(app, fake, 69_000)
      await quiet()
      expect(receiver.received()).toEqual([])
      const crossing = await roundAt(app, fake, 71_000)
      const [first] = await receiver.waitFor(1)
      expect(first?.verified).toEqual({
        ok: true,
        payload: {
          type: "alert.fired",
          timestamp: expect.any(String),
          data: { alert_id: rule.id, asset: "bitcoin", currency: "usd", condition: "price_above", threshold: 70_000, value: 71_000, seq: crossing }
        }
      })
      // The clients of the currency get it too, with the webhook's id.
      const frame = await client.waitFor(isType("alert"))
      expect(frame.message).toMatchObject({ id: first?.id, alert_id: rule.id, value: 71_000, seq: crossing, currency: "usd" })

      // Above, and above again: no firing.
      await roundAt(app, fake, 71_500)
      await roundAt(app, fake, 72_000)
      await quiet()
      expect(receiver.received().length).toBe(1)
      expect(await getJson(app, `/api/alerts/${rule.id}`)).toMatchObject({ armed: false })

      // Below re-arms it; the next crossing fires again, with a new webhook-id.
      await roundAt(app, fake, 69_500)
      await waitFor(() => getJson<{ armed: boolean }>(app, `/api/alerts/${rule.id}`).then((r) => (r.armed ? true : undefined)), "the rule re-armed")
      const again = await roundAt(app, fake, 70_250.5)
      const deliveries = await receiver.waitFor(2)
      expect(deliveries.map((d) => d.verified.ok)).toEqual([true, true])
      expect(deliveries[1]?.verified).toMatchObject({ payload: { data: { value: 70_250.5, seq: again } } })
      expect(deliveries[1]?.id).not.toBe(deliveries[0]?.id)
      await quiet()
      expect(receiver.received().length).toBe(2)
      expect(client.messages().filter((m) => m.type === "alert").length).toBe(2)

      const recorded = await waitFor(
        () => deliveriesOf(app, rule.id).then((d) => (d.length === 2 ? d : undefined)),
        "two deliveries recorded"
      )
      expect(recorded.map((d) => [d.webhook_id, d.attempt, d.status, d.outcome])).toEqual([
        [deliveries[0]?.id, 1, 200, "delivered"],
        [deliveries[1]?.id, 1, 200, "delivered"]
      ])
      const metrics = await (await app.fetch("/metrics")).text()
      expect(metrics).toMatch(/^dashcast_alerts_fired_total\{condition="price_above"\} 2$/m)
      expect(metrics).toMatch(/^dashcast_webhook_deliveries_total\{outcome="delivered"\} 2$/m)
      expect(metrics).toMatch(/^dashcast_webhook_attempts_total\{outcome="delivered"\} 2$/m)
    } finally {
      await receiver.stop()
      await fake.stop()
    }
  }, 45_000)

  it("retries a receiver that fails twice: the third attempt, with the same webhook-id, succeeds", async () => {
    const fake = startFakeUpstream()
    const receiver = startWebhookReceiver()
    try {
      const app = await start(fake)
      const rule = await createRule(app, receiver, "/flaky", { threshold: 70_000 })
      receiver.answer("/flaky", 500, 503)
      await roundAt(app, fake, 71_000)
      const attempts = await receiver.waitFor(3, "/flaky")
      expect(attempts.map((a) => a.answer)).toEqual([500, 503, 200])
      expect(new Set(attempts.map((a) => a.id)).size).toBe(1)
      expect(attempts.map((a) => a.verified.ok)).toEqual([true, true, true])
      // The first retry WEBHOOK_RETRY_DELAY (500 ms) after the failure; the next about twice that (±20 %).
      expect(attempts[1]!.at - attempts[0]!.at).toBeGreaterThanOrEqual(480)
      expect(attempts[2]!.at - attempts[1]!.at).toBeGreaterThanOrEqual(780)
      await quiet()
      expect(receiver.received().length).toBe(3)
      const recorded = await waitFor(() => deliveriesOf(app, rule.id).then((d) => (d.length === 3 ? d : undefined)), "three attempts recorded")
      expect(recorded.map((d) => [d.webhook_id, d.attempt, d.status, d.outcome, d.error])).toEqual([
        [attempts[0]?.id, 1, 500, "failed", "HTTP 500: receiver says 500"],
        [attempts[0]?.id, 2, 503, "failed", "HTTP 503: receiver says 503"],
        [attempts[0]?.id, 3, 200, "delivered", undefined]
      ])
      const warnings = app.logs().filter((l) => l.message === "webhook attempt failed: HTTP 500: receiver says 500; next in 500ms")
      expect(warnings.map((l) => l.annotations["webhook_id"])).toEqual([attempts[0]?.id])
    } finally {
      await receiver.stop()
      await fake.stop()
    }
  }, 45_000)

  it("delivers once, with the same webhook-id, when the process is killed between firing and delivery", async () => {
    const fake = startFakeUpstream()
    const receiver = startWebhookReceiver()
    const cachePath = path.join(tempDir(), "cache.sqlite")
    try {
      const first = await start(fake, { CACHE_PATH: cachePath, WEBHOOK_RETRY_DELAY: "2 seconds" })
      // Two rules on one crossing: one whose receiver has not answered when the process dies, one
      // whose first attempt failed and waits for its retry.
      const inFlight = await createRule(first, receiver, "/in-flight", { threshold: 70_000 })
      const retrying = await createRule(first, receiver, "/retrying", { threshold: 70_000 })
      receiver.answer("/in-flight", "hang")
      receiver.answer("/retrying", 503)
      const crossing = await roundAt(first, fake, 71_000)
      await Promise.all([receiver.waitFor(1, "/in-flight"), receiver.waitFor(1, "/retrying")])
      await waitFor(() => deliveriesOf(first, retrying.id).then((d) => (d.length === 1 ? true : undefined)), "the failed attempt recorded")
      await first.kill9()

      const second = await start(fake, { CACHE_PATH: cachePath, WEBHOOK_RETRY_DELAY: "2 seconds" })
      const [lost, resent] = await receiver.waitFor(2, "/in-flight")
      const [failed, retried] = await receiver.waitFor(2, "/retrying")
      expect([lost?.answer, resent?.answer]).toEqual(["hang", 200])
      expect(resent?.id).toBe(lost?.id)
      expect([failed?.answer, retried?.answer]).toEqual([503, 200])
      expect(retried?.id).toBe(failed?.id)
      for (const r of receiver.received()) expect(r.verified).toMatchObject({ ok: true, payload: { data: { seq: crossing } } })
      // Nothing fires again: the rules' state survived, and the price is still above.
      await roundAt(second, fake, 72_000)
      await quiet()
      expect(receiver.received().length).toBe(4)
      expect((await deliveriesOf(second, retrying.id)).map((d) => [d.attempt, d.status, d.outcome])).toEqual([[1, 503, "failed"], [2, 200, "delivered"]])
      expect((await deliveriesOf(second, inFlight.id)).map((d) => [d.attempt, d.status, d.outcome])).toEqual([[1, 200, "delivered"]])
    } finally {
      await receiver.stop()
      await fake.stop()
    }
  }, 45_000)

  it("refuses a loopback webhook target unless WEBHOOK_ALLOW_PRIVATE=true", async () => {
    const fake = startFakeUpstream()
    try {
      const app = await start(fake, { WEBHOOK_ALLOW_PRIVATE: "false" })
      for (const url of ["http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://[::1]:9/hook", "http://169.254.169.254/latest/meta-data/"]) {
        const response = await app.fetch("/api/alerts", {
          method: "POST",
          headers: json,
          body: JSON.stringify({ asset: "bitcoin", currency: "usd", condition: "price_above", threshold: 1, webhook_url: url })
        })
        expect(response.status, url).toBe(400)
        expect(await response.json(), url).toMatchObject({ _tag: "BadRequest", field: "webhook_url" })
      }
      expect(await getJson(app, "/api/alerts")).toEqual({ alerts: [] })
    } finally {
      await fake.stop()
    }
  }, 30_000)
})
