/**
 * The SDK's HTTP calls against the real server: made through `HttpApiClient` with the server's
 * own declarations (`DashcastApi`), so successes are decoded into typed values (dates included)
 * and declared errors arrive as their own classes.
 */
import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect } from "effect"
import { apiClient, callApi, fetchHistory, fetchSparklines } from "../../src/web/DashcastClient.js"
import * as TestServer from "../support/TestServer.js"
import { watchlistView } from "../support/TestServer.js"

describe("the SDK's HTTP client", () => {
  it.scopedLive("decodes the dashboard, the assets and the history, and surfaces declared errors as their classes", () =>
    Effect.gen(function*() {
      const first = watchlistView(["bitcoin", "ethereum"], ["usd", "eur"])
      const server = yield* TestServer.start({ config: { ASSETS: "bitcoin,ethereum", CURRENCIES: "usd,eur" }, first })
      const base = server.url.href

      const eur = yield* Effect.promise(() => callApi(base, (client) => client.dashboard({ urlParams: { currency: "eur" } })))
      expect(eur.currency).toBe("eur")
      expect(eur.assets.map((a) => a.id)).toEqual(["bitcoin", "ethereum"])
      expect(DateTime.isDateTime(eur.assets[0]?.last_updated)).toBe(true)
      expect(eur.seq).toBe(1)

      const assets = yield* Effect.promise(() => callApi(base, (client) => client.assets()))
      expect(assets.currencies).toEqual(["usd", "eur"])
      expect(assets.assets.every((a) => !a.missing && a.last_good_at !== null && DateTime.isDateTime(a.last_good_at))).toBe(true)

      const history = yield* Effect.promise(() => fetchHistory(base, { asset: "ethereum", currency: "eur", range: "7d" }))
      expect([history.asset, history.currency, history.range]).toEqual(["ethereum", "eur", "7d"])
      expect(history.points.every(([t, price]) => Number.isInteger(t) && price > 0)).toBe(true)
      const sparklines = yield* Effect.promise(() => fetchSparklines(base, "eur"))
      expect(sparklines.series.map((s) => s.asset)).toEqual(["bitcoin", "ethereum"])

      const refused = yield* Effect.flatMap(apiClient(base), (client) => client.dashboard({ urlParams: { currency: "chf" } })).pipe(
        Effect.provide((yield* Effect.promise(() => import("@effect/platform"))).FetchHttpClient.layer),
        Effect.flip
      )
      expect(refused._tag).toBe("BadRequest")
      if (refused._tag === "BadRequest") expect(refused.error).toMatch(/unknown currency "chf"/)
    }))
})
