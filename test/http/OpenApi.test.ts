/**
 * `GET /api/openapi.json` (issue 14): the document the server serves is a valid OpenAPI document
 * (checked by a maintained validator, @seriousme/openapi-schema-validator), it declares every
 * endpoint, and every answer of the real server, success or error, matches the schema the document
 * declares for its path, method and status (checked with Ajv against the document itself).
 */
import { describe, expect, it } from "@effect/vitest"
import { Validator } from "@seriousme/openapi-schema-validator"
import { Ajv2020 } from "ajv/dist/2020.js"
import addFormats from "ajv-formats"
import { Effect, Layer } from "effect"
import { HistoryStore, HistoryStoreError } from "../../src/history/HistoryStore.js"
import * as TestServer from "../support/TestServer.js"
import { makeUpstreamError, watchlistView } from "../support/TestServer.js"
import { startWebhookReceiver } from "../support/WebhookReceiver.js"

const ADMIN_TOKEN = "openapi-admin-token"
const bearer = (token: string) => ({ authorization: `Bearer ${token}` })
const config = { ASSETS: "bitcoin,ethereum", CURRENCIES: "usd,eur" }

type Document = {
  readonly openapi: string
  readonly paths: Record<string, Record<string, { readonly responses: Record<string, unknown> }>>
  readonly components: { readonly securitySchemes?: Record<string, { readonly type: string; readonly scheme?: string }> }
}

/** JSON Pointer escaping of one path segment. */
const escape = (segment: string) => segment.replaceAll("~", "~0").replaceAll("/", "~1")

/** A checker of real answers against the document's declared responses. */
const checkerOf = (document: Document) => {
  const ajv = new Ajv2020({ strict: false, allErrors: true })
  addFormats.default(ajv)
  ajv.addSchema(document, "openapi")
  return (path: string, method: string, status: number, contentType: string, body: unknown) => {
    const response = document.paths[path]?.[method]?.responses[String(status)]
    expect(response, `${method.toUpperCase()} ${path} declares ${status}`).toBeDefined()
    const media = contentType.split(";")[0]!.trim()
    const pointer = `openapi#/paths/${escape(path)}/${method}/responses/${status}/content/${escape(media)}/schema`
    const validate = ajv.getSchema(pointer) ?? ajv.compile({ $ref: pointer })
    const valid = validate(body)
    expect(valid, `${method.toUpperCase()} ${path} ${status}: ${JSON.stringify(validate.errors)} in ${JSON.stringify(body).slice(0, 400)}`).toBe(true)
  }
}

describe("GET /api/openapi.json", () => {
  it.scopedLive("is a valid OpenAPI document declaring every endpoint, and every real answer matches its declaration", () =>
    Effect.gen(function*() {
      const receiver = startWebhookReceiver()
      yield* Effect.addFinalizer(() => Effect.promise(() => receiver.stop()))
      const server = yield* TestServer.start({
        config: { ...config, ADMIN_TOKEN, WEBHOOK_ALLOW_PRIVATE: "true", WEBHOOK_RETRY_DELAY: "100 millis" }
      })
      const served = yield* server.fetch("/api/openapi.json")
      expect(served.status).toBe(200)
      const document = (yield* Effect.promise(() => served.json())) as Document

      const result = yield* Effect.promise(() => new Validator().validate(document as never))
      expect(result.errors ?? [], "validator errors").toEqual([])
      expect(result.valid).toBe(true)
      expect(document.openapi).toMatch(/^3\.1\./)
      expect(Object.keys(document.paths).sort()).toEqual([
        "/api/alerts",
        "/api/alerts/{id}",
        "/api/alerts/{id}/deliveries",
        "/api/assets",
        "/api/dashboard",
        "/api/dashboard/refresh",
        "/api/history",
        "/api/sparklines",
        "/healthz",
        "/readyz"
      ])
      expect(Object.values(document.components.securitySchemes ?? {})).toEqual([
        expect.objectContaining({ type: "http", scheme: "bearer" })
      ])

      const check = checkerOf(document)
      const call = (
        method: "get" | "post" | "delete",
        path: string,
        expected: number,
        init: { readonly headers?: Record<string, string>; readonly body?: string; readonly template?: string } = {}
      ) =>
        Effect.gen(function*() {
          const response = yield* server.fetch(path, {
            method: method.toUpperCase(),
            ...(init.headers === undefined ? {} : { headers: init.headers }),
            ...(init.body === undefined ? {} : { body: init.body })
          })
          expect(response.status, `${method.toUpperCase()} ${path}`).toBe(expected)
          const declared = init.template ?? new URL(path, server.url).pathname
          if (expected === 204) {
            expect(document.paths[declared]?.[method]?.responses["204"], `${method.toUpperCase()} ${declared} declares 204`).toBeDefined()
            expect(yield* Effect.promise(() => response.text())).toBe("")
            return undefined
          }
          const contentType = response.headers.get("content-type") ?? ""
          expect(contentType, `${method.toUpperCase()} ${path} ${expected}`).toContain("application/json")
          const body: unknown = yield* Effect.promise(() => response.json())
          check(declared, method, expected, contentType, body)
          return body
        })

      // Before the first snapshot: not ready.
      yield* call("get", "/readyz", 503)
      yield* call("get", "/api/dashboard", 503)
      yield* call("get", "/api/assets", 200)

      yield* server.market.succeed(watchlistView(["bitcoin", "ethereum"], ["usd", "eur"], { stale: { rsi: ["ethereum"] } }))
      yield* server.awaitSeq(1)
      yield* call("get", "/healthz", 200)
      yield* call("get", "/readyz", 200)
      yield* call("get", "/api/dashboard", 200)
      yield* call("get", "/api/dashboard?currency=eur", 200)
      yield* call("get", "/api/dashboard?currency=chf", 400)
      yield* call("get", "/api/assets", 200)
      yield* call("get", "/api/history", 200)
      yield* call("get", "/api/history?asset=ethereum&currency=eur&range=7d", 200)
      yield* call("get", "/api/history?asset=dogecoin", 400)
      yield* call("get", "/api/history?range=1y", 400)
      yield* call("get", "/api/sparklines", 200)
      yield* call("get", "/api/sparklines?currency=chf", 400)

      yield* call("post", "/api/dashboard/refresh", 401)
      yield* call("post", "/api/dashboard/refresh", 401, { headers: bearer("wrong") })
      yield* server.market.succeed(watchlistView(["bitcoin", "ethereum"], ["usd", "eur"]))
      yield* call("post", "/api/dashboard/refresh", 200, { headers: bearer(ADMIN_TOKEN) })
      yield* server.market.fail(makeUpstreamError(500))
      yield* call("post", "/api/dashboard/refresh", 502, { headers: bearer(ADMIN_TOKEN) })

      // Alerts: every endpoint, every status it answers with.
      const admin = { ...bearer(ADMIN_TOKEN), "content-type": "application/json" }
      const rule = (fields: Record<string, unknown>) =>
        JSON.stringify({ asset: "bitcoin", currency: "usd", condition: "price_above", threshold: 1, webhook_url: receiver.url(), ...fields })
      yield* call("get", "/api/alerts", 401)
      yield* call("post", "/api/alerts", 401, { body: rule({}), headers: { "content-type": "application/json" } })
      yield* call("get", "/api/alerts", 200, { headers: admin })
      const created = (yield* call("post", "/api/alerts", 201, { headers: admin, body: rule({ cooldown: "1 minute" }) })) as { id: string; secret: string }
      expect(created.secret).toMatch(/^whsec_/)
      receiver.expectSecret("/hook", created.secret)
      const id = created.id
      yield* call("get", `/api/alerts/${id}`, 200, { headers: admin, template: "/api/alerts/{id}" })
      yield* call("get", "/api/alerts/alr_nope", 404, { headers: admin, template: "/api/alerts/{id}" })
      yield* call("get", `/api/alerts/${id}`, 401, { headers: bearer("wrong"), template: "/api/alerts/{id}" })
      yield* call("post", "/api/alerts", 400, { headers: admin, body: rule({ currency: "chf" }) })
      yield* call("post", "/api/alerts", 400, { headers: admin, body: rule({ threshold: "high" }) })
      yield* call("post", "/api/alerts", 400, { headers: admin, body: "{not json" })
      // A firing: the receiver fails once, then takes it; both attempts are listed.
      receiver.answer("/hook", 500)
      yield* server.market.succeed(watchlistView(["bitcoin", "ethereum"], ["usd", "eur"], { scale: 1.01 }))
      yield* call("post", "/api/dashboard/refresh", 200, { headers: bearer(ADMIN_TOKEN) })
      yield* Effect.promise(() => receiver.waitFor(2))
      // The second attempt is recorded just after the receiver answered it.
      yield* Effect.promise(() => Bun.sleep(200))
      const deliveries = (yield* call("get", `/api/alerts/${id}/deliveries`, 200, { headers: admin, template: "/api/alerts/{id}/deliveries" })) as {
        deliveries: ReadonlyArray<{ outcome: string; error?: string }>
      }
      expect(deliveries.deliveries.map((d) => [d.outcome, d.error])).toEqual([["failed", "HTTP 500: receiver says 500"], ["delivered", undefined]])
      expect(receiver.received().map((r) => r.verified.ok)).toEqual([true, true])
      yield* call("get", "/api/alerts/alr_nope/deliveries", 404, { headers: admin, template: "/api/alerts/{id}/deliveries" })
      yield* call("delete", `/api/alerts/${id}`, 204, { headers: admin, template: "/api/alerts/{id}" })
      yield* call("delete", `/api/alerts/${id}`, 404, { headers: admin, template: "/api/alerts/{id}" })

      // Without ADMIN_TOKEN the admin endpoint does not exist; within MIN_FETCH_GAP it says when to come back.
      const noAdmin = yield* TestServer.start({ config, first: watchlistView(["bitcoin"], ["usd"]) })
      const missing = yield* noAdmin.fetch("/api/dashboard/refresh", { method: "POST", headers: bearer(ADMIN_TOKEN) })
      expect(missing.status).toBe(404)
      check("/api/dashboard/refresh", "post", 404, missing.headers.get("content-type") ?? "", yield* Effect.promise(() => missing.json()))

      const gapped = yield* TestServer.start({ config: { ...config, ADMIN_TOKEN, MIN_FETCH_GAP: "1 hour" }, first: watchlistView(["bitcoin"], ["usd"]) })
      const tooSoon = yield* gapped.fetch("/api/dashboard/refresh", { method: "POST", headers: bearer(ADMIN_TOKEN) })
      expect(tooSoon.status).toBe(429)
      const retryAfter = Number(tooSoon.headers.get("retry-after"))
      const body = (yield* Effect.promise(() => tooSoon.json())) as { retry_after: number }
      check("/api/dashboard/refresh", "post", 429, tooSoon.headers.get("content-type") ?? "", body)
      expect(body.retry_after).toBe(retryAfter)
      expect(retryAfter).toBeGreaterThan(3_500)

      // An alert store that cannot be opened: 503, and the server keeps serving.
      const broken = yield* TestServer.start({ config: { ...config, ADMIN_TOKEN, CACHE_PATH: "/proc/dashcast-nowhere/cache.sqlite" } })
      for (const [method, path, template] of [["GET", "/api/alerts", "/api/alerts"], ["GET", "/api/alerts/alr_x", "/api/alerts/{id}"]] as const) {
        const unavailable = yield* broken.fetch(path, { method, headers: bearer(ADMIN_TOKEN) })
        expect(unavailable.status).toBe(503)
        check(template, "get", 503, unavailable.headers.get("content-type") ?? "", yield* Effect.promise(() => unavailable.json()))
      }
      expect((yield* broken.fetch("/healthz")).status).toBe(200)

      // The history's store cannot be reached: 503, as declared.
      const unreachable = Layer.succeed(HistoryStore, HistoryStore.of({
        kind: "redis",
        location: "redis://127.0.0.1:1",
        write: () => Effect.void,
        read: () => Effect.fail(new HistoryStoreError({ store: "redis", operation: "read", reason: "Unavailable", cause: new Error("connection refused") })),
        trim: () => Effect.void
      }))
      const noHistory = yield* TestServer.start({ config, first: watchlistView(["bitcoin"], ["usd"]), historyStore: unreachable })
      for (const route of ["/api/history", "/api/sparklines"]) {
        const response = yield* noHistory.fetch(route)
        expect(response.status, route).toBe(503)
        check(route, "get", 503, response.headers.get("content-type") ?? "", yield* Effect.promise(() => response.json()))
      }
    }))
})
