/**
 * The pages as the server serves them from source (src/http/Pages.ts builds the bundles at the
 * first request; the compiled binary reads its manifest, checked in test/web/Dashboard.test.ts):
 * `/`, `/embed` and `/embed/` with `Content-Security-Policy: frame-ancestors` from FRAME_ANCESTORS,
 * their files at absolute paths, ETags, and nothing else answered as a page.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { absoluteAssetPaths } from "../../src/http/Pages.js"
import * as TestServer from "../support/TestServer.js"
import { watchlistView } from "../support/TestServer.js"

describe("the pages", () => {
  it("makes relative references to the bundle's files absolute, and leaves everything else alone", () => {
    const assets = new Set(["/chunk-a1.js", "/chunk-b2.css"])
    const html = `<link rel="stylesheet" href="./chunk-b2.css"><script type="module" src="../../chunk-a1.js"></script>` +
      `<script src="/chunk-a1.js"></script><a href="./elsewhere.html">x</a><img src="./chunk-a1.js?v=1">`
    expect(absoluteAssetPaths(html, assets)).toBe(
      `<link rel="stylesheet" href="/chunk-b2.css"><script type="module" src="/chunk-a1.js"></script>` +
        `<script src="/chunk-a1.js"></script><a href="./elsewhere.html">x</a><img src="./chunk-a1.js?v=1">`
    )
  })

  it.scopedLive("serves / and /embed with frame-ancestors and their files, answers 304 to a known ETag, and no page for other paths", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.start({
        config: { ASSETS: "bitcoin,ethereum", CURRENCIES: "usd,eur", FRAME_ANCESTORS: "'self' https://ha.example.com:8123" },
        first: watchlistView(["bitcoin", "ethereum"], ["usd", "eur"])
      })
      const files = new Set<string>()
      for (const route of ["/", "/embed", "/embed/"]) {
        const response = yield* server.fetch(route)
        expect(response.status, route).toBe(200)
        expect(response.headers.get("content-type"), route).toContain("text/html")
        expect(response.headers.get("content-security-policy"), route).toBe("frame-ancestors 'self' https://ha.example.com:8123")
        expect(response.headers.get("x-content-type-options"), route).toBe("nosniff")
        const html = yield* Effect.promise(() => response.text())
        expect(html, route).toContain(route === "/" ? 'id="watchlist"' : 'id="card"')
        for (const m of html.matchAll(/<(?:script|link)[^>]*\s(?:src|href)="(\/[^"]+)"/g)) files.add(m[1] ?? "")
      }
      expect(files.size).toBeGreaterThanOrEqual(3)
      for (const file of files) {
        const response = yield* server.fetch(file)
        expect(response.status, file).toBe(200)
        expect(response.headers.get("content-type"), file).toMatch(/^text\/(javascript|css)/)
        expect(response.headers.get("cache-control"), file).toBe("public, max-age=31536000, immutable")
      }
      const page = yield* server.fetch("/")
      const etag = page.headers.get("etag") ?? ""
      expect(etag).toMatch(/^".+"$/)
      expect((yield* server.fetch("/", { headers: { "if-none-match": etag } })).status).toBe(304)
      const head = yield* server.fetch("/embed", { method: "HEAD" })
      expect(head.status).toBe(200)
      expect(yield* Effect.promise(() => head.text())).toBe("")
      // Not a page: the API answers (404 as JSON), and a POST to a page is no page either.
      for (const [method, route] of [["GET", "/chunk-does-not-exist.js"], ["GET", "/embed/x"], ["POST", "/"]] as const) {
        const response = yield* server.fetch(route, { method })
        expect(response.status, `${method} ${route}`).toBe(404)
        expect(response.headers.get("content-type"), `${method} ${route}`).toContain("application/json")
      }
    }))
})
