/**
 * The alert rules over the admin API (issue 15, scope 1 and 4): behind the bearer token; bad input
 * is a 400 whose JSON names the field; the signing secret is in the 201 answer and nowhere after;
 * webhook targets on loopback, private, link-local or metadata addresses are refused unless
 * WEBHOOK_ALLOW_PRIVATE=true; DELETE removes a rule and what it owns.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as TestServer from "../support/TestServer.js"
import { watchlistView } from "../support/TestServer.js"
import { type AlertEvent, connect } from "../../src/web/DashcastClient.js"
import * as SseClient from "../support/SseClient.js"
import { startWebhookReceiver } from "../support/WebhookReceiver.js"
import * as WsClient from "../support/WsClient.js"
import { isType } from "../support/WsClient.js"

const ADMIN_TOKEN = "alerts-admin-token"
const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" }
const config = { ASSETS: "bitcoin,ethereum", CURRENCIES: "usd,eur", ADMIN_TOKEN }
/** A public address as a literal: no DNS is asked, and no test here makes it fire. */
const PUBLIC_URL = "https://93.184.216.34/hooks/dashcast"

const rule = (fields: Record<string, unknown> = {}) => ({
  asset: "bitcoin",
  currency: "usd",
  condition: "price_above",
  threshold: 1_000_000,
  webhook_url: PUBLIC_URL,
  ...fields
})

const post = (server: TestServer.TestServer, body: string | Record<string, unknown>, headers: Record<string, string> = admin) =>
  Effect.gen(function*() {
    const response = yield* server.fetch("/api/alerts", { method: "POST", headers, body: typeof body === "string" ? body : JSON.stringify(body) })
    return { status: response.status, text: yield* Effect.promise(() => response.text()) }
  })

const get = (server: TestServer.TestServer, path: string, method = "GET") =>
  Effect.gen(function*() {
    const response = yield* server.fetch(path, { method, headers: admin })
    return { status: response.status, text: yield* Effect.promise(() => response.text()) }
  })

describe("alert rules over the admin API", () => {
  it.scopedLive("need the admin token: 404 without one configured, 401 for a wrong one", () =>
    Effect.gen(function*() {
      const none = yield* TestServer.start({ config: { ASSETS: "bitcoin" } })
      expect((yield* post(none, rule())).status).toBe(404)
      expect((yield* get(none, "/api/alerts")).status).toBe(404)
      const server = yield* TestServer.start({ config })
      expect((yield* post(server, rule(), { authorization: "Bearer nope", "content-type": "application/json" })).status).toBe(401)
      for (const path of ["/api/alerts", "/api/alerts/alr_x", "/api/alerts/alr_x/deliveries"]) {
        const response = yield* server.fetch(path, { headers: { authorization: "Bearer nope" } })
        expect(response.status, path).toBe(401)
      }
      expect((yield* server.fetch("/api/alerts/alr_x", { method: "DELETE" })).status).toBe(401)
    }))

  it.scopedLive("refuse bad input with a 400 naming the field, and store nothing", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ config })
      const cases: ReadonlyArray<readonly [string, string | Record<string, unknown>, string]> = [
        ["unknown currency", rule({ currency: "chf" }), "currency"],
        ["unknown asset", rule({ asset: "dogecoin" }), "asset"],
        ["no asset for a price", rule({ asset: undefined }), "asset"],
        ["an RSI beyond 100", rule({ condition: "rsi_above", threshold: 150 }), "threshold"],
        ["not http(s)", rule({ webhook_url: "ftp://93.184.216.34/x" }), "webhook_url"],
        ["not a URL", rule({ webhook_url: "hooks, please" }), "webhook_url"],
        ["credentials in the URL", rule({ webhook_url: "https://me:pw@93.184.216.34/x" }), "webhook_url"],
        ["loopback", rule({ webhook_url: "http://127.0.0.1:8080/hook" }), "webhook_url"],
        ["loopback by name", rule({ webhook_url: "http://localhost/hook" }), "webhook_url"],
        ["loopback, IPv6", rule({ webhook_url: "http://[::1]/hook" }), "webhook_url"],
        ["loopback, hex", rule({ webhook_url: "http://0x7f000001/hook" }), "webhook_url"],
        ["private", rule({ webhook_url: "http://10.0.0.8/hook" }), "webhook_url"],
        ["link-local", rule({ webhook_url: "http://169.254.1.1/hook" }), "webhook_url"],
        ["metadata", rule({ webhook_url: "http://169.254.169.254/latest/meta-data/" }), "webhook_url"],
        ["metadata, IPv4-mapped", rule({ webhook_url: "http://[::ffff:a9fe:a9fe]/" }), "webhook_url"],
        ["not a duration", rule({ cooldown: "soon" }), "cooldown"],
        ["a negative duration", rule({ cooldown: "-5 minutes" }), "cooldown"],
        ["too long a cooldown", rule({ cooldown: "31 days" }), "cooldown"]
      ]
      for (const [what, body, field] of cases) {
        const answer = yield* post(server, body)
        expect(answer.status, what).toBe(400)
        expect(JSON.parse(answer.text), what).toMatchObject({ _tag: "BadRequest", field })
        expect((JSON.parse(answer.text) as { error: string }).error, what).toMatch(new RegExp(`^${field}: `))
      }
      // A threshold that is not finite: JSON's 1e999 is Infinity.
      const infinite = yield* post(server, JSON.stringify(rule()).replace("1000000", "1e999"))
      expect(infinite.status).toBe(400)
      expect(JSON.parse(infinite.text)).toMatchObject({ _tag: "BadRequest", field: "threshold", error: "threshold: must be a finite number" })
      // Wrong JSON types and unknown conditions: the platform's decode error, naming the member by its path.
      for (const [body, field] of [[rule({ threshold: "70000" }), "threshold"], [rule({ condition: "price_sideways" }), "condition"], [{ currency: "usd" }, "condition"]] as const) {
        const answer = yield* post(server, body)
        expect(answer.status).toBe(400)
        const error = JSON.parse(answer.text) as { _tag: string; issues: Array<{ path: Array<string> }> }
        expect(error._tag).toBe("HttpApiDecodeError")
        expect(error.issues.map((i) => i.path[0])).toContain(field)
      }
      const malformed = yield* post(server, "{\"asset\": ")
      expect(malformed.status).toBe(400)
      expect(JSON.parse(malformed.text)).toEqual({ _tag: "BadRequest", error: "the request body is not valid JSON" })
      expect(JSON.parse((yield* get(server, "/api/alerts")).text)).toEqual({ alerts: [] })
    }))

  it.scopedLive("show the secret in the 201 answer only; list, read and delete rules", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({ config })
      const created = yield* post(server, rule({ cooldown: "15 minutes" }))
      expect(created.status).toBe(201)
      const body = JSON.parse(created.text) as Record<string, unknown> & { id: string; secret: string }
      expect(body).toMatchObject({
        asset: "bitcoin",
        currency: "usd",
        condition: "price_above",
        threshold: 1_000_000,
        webhook_url: PUBLIC_URL,
        cooldown: "15 minutes",
        armed: true,
        last_fired_at: null
      })
      expect(body.id).toMatch(/^alr_[0-9a-f]{24}$/)
      expect(body.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/)
      const fearGreed = yield* post(server, { currency: "eur", condition: "fear_greed_below", threshold: 20, webhook_url: PUBLIC_URL })
      expect(fearGreed.status).toBe(201)
      const second = JSON.parse(fearGreed.text) as { id: string; secret: string; asset: unknown }
      expect(second.asset).toBeNull()
      expect(second.secret).not.toBe(body.secret)

      const listed = yield* get(server, "/api/alerts")
      expect(listed.status).toBe(200)
      expect((JSON.parse(listed.text) as { alerts: Array<{ id: string }> }).alerts.map((a) => a.id)).toEqual([body.id, second.id])
      const one = yield* get(server, `/api/alerts/${body.id}`)
      expect(one.status).toBe(200)
      const { secret: _secret, ...withoutSecret } = body
      expect(JSON.parse(one.text)).toEqual(withoutSecret)
      const deliveries = yield* get(server, `/api/alerts/${body.id}/deliveries`)
      expect(JSON.parse(deliveries.text)).toEqual({ deliveries: [] })
      // No GET answer carries a secret, in any form.
      for (const answer of [listed, one, deliveries]) {
        expect(answer.text).not.toContain("whsec_")
        expect(answer.text).not.toContain(body.secret.slice("whsec_".length))
        expect(answer.text).not.toContain("secret")
      }

      expect((yield* get(server, `/api/alerts/${body.id}`, "DELETE")).status).toBe(204)
      expect((yield* get(server, `/api/alerts/${body.id}`)).status).toBe(404)
      expect((yield* get(server, `/api/alerts/${body.id}/deliveries`)).status).toBe(404)
      expect(JSON.parse((yield* get(server, `/api/alerts/${body.id}`, "DELETE")).text)).toMatchObject({ _tag: "NotFound" })
      expect((JSON.parse((yield* get(server, "/api/alerts")).text) as { alerts: Array<{ id: string }> }).alerts.map((a) => a.id)).toEqual([second.id])
    }))

  it.scopedLive("a firing reaches the WebSocket and event-stream clients of the rule's currency, and no other currency's", () =>
    Effect.gen(function*() {
      const receiver = startWebhookReceiver()
      yield* Effect.addFinalizer(() => Effect.promise(() => receiver.stop()))
      const view = (scale: number) => watchlistView(["bitcoin", "ethereum"], ["usd", "eur"], { scale })
      const server = yield* TestServer.start({ config: { ...config, WEBHOOK_ALLOW_PRIVATE: "true" }, first: view(1) })
      const created = yield* post(server, rule({ currency: "eur", threshold: 60_000, webhook_url: receiver.url() }))
      expect(created.status).toBe(201)
      const eurSocket = yield* WsClient.connect(`${server.wsUrl}?currency=eur`)
      const usdSocket = yield* WsClient.connect(`${server.wsUrl}?currency=usd`)
      const eurStream = yield* SseClient.open(new URL("/api/stream?currency=eur", server.url))
      const usdStream = yield* SseClient.open(new URL("/api/stream?currency=usd", server.url))
      // The SDK, on the event stream only.
      const sdk = connect(server.wsUrl, { currency: "eur", transports: "sse" })
      yield* Effect.addFinalizer(() => Effect.sync(() => sdk.close()))
      const sdkAlerts: Array<AlertEvent> = []
      sdk.onAlert((event) => sdkAlerts.push(event))
      yield* Effect.promise(async () => {
        for (let i = 0; i < 250 && sdk.latestMarket() === undefined; i++) await Bun.sleep(20)
      })
      expect(sdk.status().transport).toBe("sse")
      yield* eurSocket.next(isType("welcome"))
      yield* usdSocket.next(isType("welcome"))
      yield* eurStream.next((m) => m.type === "welcome")
      yield* usdStream.next((m) => m.type === "welcome")
      // Bitcoin at 64,123.45 USD is 58,993.57 EUR: below; 1.05 times that is above.
      yield* server.market.succeed(view(1.05))
      expect((yield* server.fetch("/api/dashboard/refresh", { method: "POST", headers: admin })).status).toBe(200)
      const socketAlert = yield* eurSocket.next(isType("alert"))
      const streamAlert = yield* eurStream.next((m) => m.type === "alert")
      expect(streamAlert.event).toBe("alert")
      expect(streamAlert.data).toBe(socketAlert.raw)
      expect(socketAlert.message).toMatchObject({ currency: "eur", asset: "bitcoin", threshold: 60_000, seq: 2 })
      yield* Effect.promise(async () => {
        for (let i = 0; i < 250 && sdkAlerts.length === 0; i++) await Bun.sleep(20)
      })
      expect(sdkAlerts.map((a) => [a.currency, a.asset, a.seq])).toEqual([["eur", "bitcoin", 2]])
      // The usd clients: the update, then (a ping's pong, in order) nothing about the eur rule.
      yield* usdSocket.next(isType("dashboard_update"))
      const before = yield* usdSocket.sync()
      expect(before.filter((f) => f.message.type === "alert")).toEqual([])
      yield* usdStream.next((m) => m.type === "dashboard_update")
      expect(usdStream.events().filter((e) => e.event === "alert")).toEqual([])
    }))

  it.scopedLive("with WEBHOOK_ALLOW_PRIVATE=true, loopback receivers are allowed and get signed deliveries", () =>
    Effect.gen(function*() {
      const receiver = startWebhookReceiver()
      yield* Effect.addFinalizer(() => Effect.promise(() => receiver.stop()))
      const server = yield* TestServer.start({ config: { ...config, WEBHOOK_ALLOW_PRIVATE: "true" }, first: watchlistView(["bitcoin", "ethereum"], ["usd", "eur"]) })
      const created = yield* post(server, rule({ threshold: 1, webhook_url: receiver.url() }))
      expect(created.status).toBe(201)
      const { id, secret } = JSON.parse(created.text) as { id: string; secret: string }
      receiver.expectSecret("/hook", secret)
      yield* server.market.succeed(watchlistView(["bitcoin", "ethereum"], ["usd", "eur"], { scale: 1.02 }))
      expect((yield* server.fetch("/api/dashboard/refresh", { method: "POST", headers: admin })).status).toBe(200)
      const [delivery] = yield* Effect.promise(() => receiver.waitFor(1))
      expect(delivery?.verified).toMatchObject({ ok: true, payload: { type: "alert.fired", data: { alert_id: id, asset: "bitcoin", currency: "usd", seq: 2 } } })
    }))
})
