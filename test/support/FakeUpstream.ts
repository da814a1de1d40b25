/**
 * A real HTTP server that answers the four upstream calls of DESIGN.md "Upstream calls" with the
 * exact CoinGecko and alternative.me response shapes, records every request and injects faults per
 * endpoint on command. Use it as a scoped Effect resource (`FakeUpstream`) in process, or with
 * `startFakeUpstream` / `stop()` from plain async code (end-to-end tests of the compiled binary:
 * pass `fake.env` to the subprocess).
 */
import type { Server } from "bun"
import { Data, Effect, type Scope } from "effect"
import type { Endpoint } from "../../src/market/MarketData.js"

/** The market as the fake reports it; each field maps to one place in one response body. */
export interface MarketValues {
  /** `bitcoin.usd` of simple/price. */
  readonly btcPrice: number
  /** `bitcoin.usd_24h_change` of simple/price; CoinGecko documents it as nullable. */
  readonly btcChange24h: number | null
  /** `data.total_market_cap.usd` of /global. */
  readonly totalMarketCap: number
  /** `data.total_volume.usd` of /global. */
  readonly totalVolume: number
  /** The `[ms, price]` second elements of market_chart's `prices`, oldest first (last: intraday). */
  readonly closes: ReadonlyArray<number>
  /** `data[0].value` of /fng/ (sent as a string, as alternative.me does). */
  readonly fearGreed: number
}

/** 61 daily closes (60 days and today), a gentle wave around 64k. */
export const defaultCloses: ReadonlyArray<number> = Array.from(
  { length: 61 },
  (_, i) => Math.round((64_000 + 1_800 * Math.sin(i / 4) + 35 * i) * 100) / 100
)

export const defaultValues: MarketValues = {
  btcPrice: 67_187.34,
  btcChange24h: 3.637,
  totalMarketCap: 2_721_226_850_772.63,
  totalVolume: 69_327_091_133.54,
  closes: defaultCloses,
  fearGreed: 54
}

/**
 * What an endpoint does instead of answering normally. Every variant is something real providers
 * (or the network in between) have been seen to do.
 */
export type Fault = Data.TaggedEnum<{
  /** A non-2xx status with CoinGecko's flat JSON error body. */
  ServerError: { readonly status?: number }
  /** 429 (or 418) with an optional `Retry-After` (seconds or HTTP-date), JSON or plain-text body. */
  RateLimited: { readonly status?: 429 | 418; readonly retryAfter?: string; readonly body?: "json" | "text" }
  /** HTTP 200 with the plain-text body `Throttled`. */
  Throttled: {}
  /** A Cloudflare-style HTML challenge page (status 403 unless given). */
  HtmlChallenge: { readonly status?: number }
  /** HTTP 200 with `{}`. */
  EmptyObject: {}
  /** HTTP 200 with a truncated JSON document. */
  MalformedJson: {}
  /** HTTP 200, right shape, numbers sent as numeric strings (and the F&G value as a number). */
  WrongTypes: {}
  /** HTTP 200, right shape, numbers sent as non-numeric strings such as `"N/A"`. */
  NonNumeric: {}
  /** HTTP 200, right shape, `null` where numbers belong. */
  NullValues: {}
  /** HTTP 200 with the provider's error body: CoinGecko's `status` object, alternative.me's `metadata.error`. */
  ProviderError: { readonly message?: string }
  /** No response until the client gives up (or the fake stops). */
  Hang: {}
  /**
   * The connection is reset before any response. Bun's `fetch` retries a request once when a reused
   * keep-alive connection is reset, so fail every request (the default), not `{ times: 1 }`.
   */
  Drop: {}
  /** HTTP 200 headers and half a body, then the connection is closed. */
  DropMidBody: {}
  /**
   * HTTP 200 with a JSON body of `bytes` bytes (a valid start, then padding), produced only as the
   * client reads it; `declareLength` sends its `Content-Length`. `sentBytes()` tells how much left.
   */
  Huge: { readonly bytes: number; readonly declareLength?: boolean }
  /** Anything else. */
  Raw: { readonly status: number; readonly body: string; readonly headers?: Record<string, string> }
}>
export const Fault = Data.taggedEnum<Fault>()

export interface RecordedRequest {
  /** The upstream call this path belongs to, or undefined for any other path (answered 404). */
  readonly endpoint: Endpoint | undefined
  readonly method: string
  readonly path: string
  readonly query: Readonly<Record<string, string>>
  /** Lower-case header names. */
  readonly headers: Readonly<Record<string, string>>
  /** `Date.now()` when the request arrived. */
  readonly time: number
}

export interface FakeUpstream {
  /** Base URL for both providers, e.g. `http://127.0.0.1:41234` (no trailing slash). */
  readonly url: string
  /** `COINGECKO_BASE_URL` and `FNG_BASE_URL` pointing at the fake, for a subprocess environment. */
  readonly env: { readonly COINGECKO_BASE_URL: string; readonly FNG_BASE_URL: string }
  /** Every request so far, in arrival order. */
  readonly requests: () => ReadonlyArray<RecordedRequest>
  readonly requestsTo: (endpoint: Endpoint) => ReadonlyArray<RecordedRequest>
  /** Resolves once at least `count` requests (to `endpoint`, if given) have arrived. */
  readonly waitForRequests: (count: number, endpoint?: Endpoint) => Promise<void>
  readonly values: () => MarketValues
  readonly setValues: (values: Partial<MarketValues>) => void
  /** Makes the next `times` requests to `endpoint` (every one by default) misbehave; faults queue up. */
  readonly fail: (endpoint: Endpoint, fault: Fault, options?: { readonly times?: number }) => void
  readonly clearFaults: (endpoint?: Endpoint) => void
  /** Holds every answer (requests are still recorded) until `release`. */
  readonly hold: () => void
  readonly release: () => void
  /** Default values, no faults, no hold, no recorded requests. */
  readonly reset: () => void
  /** Body bytes the `Huge` fault has handed to the network so far. */
  readonly sentBytes: () => number
  readonly stop: () => Promise<void>
}

/** The query each call must carry, exactly (DESIGN.md); anything else is answered 400. */
const routes: ReadonlyArray<{ readonly path: string; readonly endpoint: Endpoint; readonly query: Record<string, string> }> = [
  {
    path: "/api/v3/simple/price",
    endpoint: "simple_price",
    query: {
      ids: "bitcoin",
      vs_currencies: "usd",
      include_market_cap: "true",
      include_24hr_vol: "true",
      include_24hr_change: "true",
      include_last_updated_at: "true"
    }
  },
  { path: "/api/v3/global", endpoint: "global", query: {} },
  {
    path: "/api/v3/coins/bitcoin/market_chart",
    endpoint: "market_chart",
    query: { vs_currency: "usd", days: "60", interval: "daily" }
  },
  { path: "/fng/", endpoint: "fear_greed", query: { limit: "1" } }
]

const DAY_MS = 86_400_000

const json = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json; charset=utf-8", ...headers } })

const text = (body: string, status: number, contentType: string, headers: Record<string, string> = {}) =>
  new Response(body, { status, headers: { "content-type": contentType, ...headers } })

const HTML_CHALLENGE = `<!DOCTYPE html>
<html lang="en-US"><head><title>Just a moment...</title><meta http-equiv="refresh" content="390"></head>
<body><div class="main-wrapper"><h1>api.coingecko.com</h1><p>Checking if the site connection is secure</p></div></body></html>`

const COINGECKO_RATE_LIMIT = {
  status: {
    error_code: 429,
    error_message:
      "You've exceeded the Rate Limit. Please visit https://www.coingecko.com/en/api/pricing to subscribe to our API plans for higher rate limits."
  }
}

/** The body of a normal answer, with `number` standing in for how numbers are written (faults). */
const body = (endpoint: Endpoint, v: MarketValues, number: (n: number | null) => unknown, now: number): unknown => {
  switch (endpoint) {
    case "simple_price":
      return {
        bitcoin: {
          usd: number(v.btcPrice),
          usd_market_cap: number(v.btcPrice * 19_700_000),
          usd_24h_vol: number(v.totalVolume * 0.4),
          usd_24h_change: number(v.btcChange24h),
          last_updated_at: Math.floor(now / 1000)
        }
      }
    case "global":
      return {
        data: {
          active_cryptocurrencies: 13_690,
          upcoming_icos: 0,
          ongoing_icos: 49,
          ended_icos: 3_376,
          markets: 1_046,
          total_market_cap: { btc: number(v.totalMarketCap / v.btcPrice), eth: number(v.totalMarketCap / 3_500), usd: number(v.totalMarketCap) },
          total_volume: { btc: number(v.totalVolume / v.btcPrice), eth: number(v.totalVolume / 3_500), usd: number(v.totalVolume) },
          market_cap_percentage: { btc: 50.45, eth: 14.92 },
          market_cap_change_percentage_24h_usd: 1.72,
          updated_at: Math.floor(now / 1000)
        }
      }
    case "market_chart": {
      const start = Math.floor(now / DAY_MS) * DAY_MS - (v.closes.length - 2) * DAY_MS
      // The last point is intraday ("now"), the others are daily closes at 00:00 UTC.
      const at = (i: number) => (i === v.closes.length - 1 ? now : start + i * DAY_MS)
      return {
        prices: v.closes.map((c, i) => [at(i), number(c)]),
        market_caps: v.closes.map((c, i) => [at(i), number(c * 19_700_000)]),
        total_volumes: v.closes.map((_, i) => [at(i), number(v.totalVolume * 0.4)])
      }
    }
    case "fear_greed":
      return {
        name: "Fear and Greed Index",
        data: [{
          value: number(v.fearGreed),
          value_classification: v.fearGreed < 25
            ? "Extreme Fear"
            : v.fearGreed < 47
            ? "Fear"
            : v.fearGreed <= 54
            ? "Neutral"
            : v.fearGreed < 76
            ? "Greed"
            : "Extreme Greed",
          timestamp: String(Math.floor(now / DAY_MS) * 86_400),
          time_until_update: "43200"
        }],
        metadata: { error: null }
      }
  }
}

/** alternative.me writes the index as a string; everything else is a JSON number. */
const asWritten = (endpoint: Endpoint) => (n: number | null): unknown =>
  endpoint === "fear_greed" && n !== null ? String(n) : n

/** Starts the fake on `hostname` (default 127.0.0.1) and `port` (default 0: a free one). */
export const startFakeUpstream = (
  options: { readonly hostname?: string; readonly port?: number; readonly values?: Partial<MarketValues> } = {}
): FakeUpstream => {
  let values: MarketValues = { ...defaultValues, ...options.values }
  let recorded: Array<RecordedRequest> = []
  let faults = new Map<Endpoint, Array<{ fault: Fault; remaining: number }>>()
  let gate: { readonly opened: Promise<void>; readonly open: () => void } | undefined
  let hugeBytesSent = 0
  const waiters = new Set<() => void>()
  const pending = new Set<() => void>()

  const takeFault = (endpoint: Endpoint): Fault | undefined => {
    const queue = faults.get(endpoint)
    const head = queue?.[0]
    if (queue === undefined || head === undefined) return undefined
    head.remaining -= 1
    if (head.remaining <= 0) queue.shift()
    return head.fault
  }

  /** Resolves when the client goes away or the fake stops; the answer is never read. */
  const hang = (request: Request) =>
    new Promise<Response>((resolve) => {
      const done = () => {
        pending.delete(done)
        resolve(new Response(null, { status: 504 }))
      }
      pending.add(done)
      request.signal.addEventListener("abort", done, { once: true })
    })

  const faulty = (endpoint: Endpoint, fault: Fault, request: Request, now: number): Response | Promise<Response> =>
    Fault.$match(fault, {
      ServerError: ({ status }) => json({ error: "Internal server error" }, status ?? 500),
      RateLimited: ({ status, retryAfter, body: kind }) => {
        const headers: Record<string, string> = retryAfter === undefined ? {} : { "retry-after": retryAfter }
        return kind === "text"
          ? text("Throttled", status ?? 429, "text/plain", headers)
          : json(endpoint === "fear_greed" ? { error: "Too many requests" } : COINGECKO_RATE_LIMIT, status ?? 429, headers)
      },
      Throttled: () => text("Throttled", 200, "text/plain"),
      HtmlChallenge: ({ status }) => text(HTML_CHALLENGE, status ?? 403, "text/html; charset=UTF-8"),
      EmptyObject: () => json({}),
      MalformedJson: () => text(JSON.stringify(body(endpoint, values, asWritten(endpoint), now)).slice(0, 40), 200, "application/json"),
      WrongTypes: () =>
        json(body(endpoint, values, (n) => (n === null ? null : endpoint === "fear_greed" ? n : String(n)), now)),
      NonNumeric: () => json(body(endpoint, values, () => "N/A", now)),
      NullValues: () => json(body(endpoint, values, () => null, now)),
      ProviderError: ({ message }) =>
        endpoint === "fear_greed"
          ? json({ name: "Fear and Greed Index", data: [], metadata: { error: message ?? "Service temporarily unavailable" } })
          : json({ status: { error_code: 10_005, error_message: message ?? "This request is limited to paid plan subscribers" } }),
      Hang: () => hang(request),
      // An errored body stream makes Bun reset the connection: before the headers if nothing was sent.
      Drop: () => new Response(new ReadableStream({ start: (controller) => controller.error() })),
      DropMidBody: () =>
        new Response(
          new ReadableStream({
            start: (controller) => {
              controller.enqueue(new TextEncoder().encode(JSON.stringify(body(endpoint, values, asWritten(endpoint), now)).slice(0, 40)))
              setTimeout(() => controller.error(), 20)
            }
          }),
          { status: 200, headers: { "content-type": "application/json" } }
        ),
      Huge: ({ bytes, declareLength }) => {
        const head = new TextEncoder().encode(`{"bitcoin":{"usd":${values.btcPrice},"pad":"`)
        const chunk = new Uint8Array(64 * 1024).fill(0x61)
        let left = bytes
        const stream = new ReadableStream<Uint8Array>({
          // Pulled: nothing is made (or buffered here) beyond what the client takes.
          pull: (controller) => {
            const piece = left === bytes ? head : chunk.subarray(0, Math.min(chunk.byteLength, left))
            left -= piece.byteLength
            hugeBytesSent += piece.byteLength
            controller.enqueue(piece)
            if (left <= 0) controller.close()
          }
        }, { highWaterMark: 0 })
        const headers: Record<string, string> = { "content-type": "application/json" }
        if (declareLength === true) headers["content-length"] = String(bytes)
        return new Response(stream, { status: 200, headers })
      },
      Raw: ({ status, body: raw, headers }) => new Response(raw, { status, headers: headers ?? {} })
    })

  const answer = (request: Request, url: URL, now: number): Response | Promise<Response> => {
    const route = routes.find((r) => r.path === url.pathname)
    if (route === undefined) return json({ error: "Not Found" }, 404)
    const query = Object.fromEntries(url.searchParams)
    const expected = Object.entries(route.query)
    if (Object.keys(query).length !== expected.length || expected.some(([k, v]) => query[k] !== v)) {
      return json({ error: `unexpected query for ${route.endpoint}: ${url.search}` }, 400)
    }
    const fault = takeFault(route.endpoint)
    if (fault !== undefined) return faulty(route.endpoint, fault, request, now)
    return json(body(route.endpoint, values, asWritten(route.endpoint), now))
  }

  const server: Server<undefined> = Bun.serve({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 0,
    // Hangs last until the client gives up; Bun's own idle timeout would end them first.
    idleTimeout: 0,
    fetch: async (request) => {
      const url = new URL(request.url)
      const now = Date.now()
      recorded.push({
        endpoint: routes.find((r) => r.path === url.pathname)?.endpoint,
        method: request.method,
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        headers: Object.fromEntries(request.headers),
        time: now
      })
      for (const wake of [...waiters]) wake()
      if (gate !== undefined) await gate.opened
      return answer(request, url, now)
    }
  })

  const url = `http://${server.hostname}:${server.port}`
  const requestsTo = (endpoint: Endpoint) => recorded.filter((r) => r.endpoint === endpoint)
  const release = () => {
    gate?.open()
    gate = undefined
  }

  return {
    url,
    env: { COINGECKO_BASE_URL: url, FNG_BASE_URL: url },
    requests: () => recorded,
    requestsTo,
    waitForRequests: (count, endpoint) =>
      new Promise<void>((resolve) => {
        const check = () => {
          if ((endpoint === undefined ? recorded : requestsTo(endpoint)).length < count) return
          waiters.delete(check)
          resolve()
        }
        waiters.add(check)
        check()
      }),
    values: () => values,
    setValues: (next) => {
      values = { ...values, ...next }
    },
    fail: (endpoint, fault, { times = Number.POSITIVE_INFINITY } = {}) => {
      faults.set(endpoint, [...(faults.get(endpoint) ?? []), { fault, remaining: times }])
    },
    clearFaults: (endpoint) => {
      if (endpoint === undefined) faults = new Map()
      else faults.delete(endpoint)
    },
    hold: () => {
      if (gate !== undefined) return
      let open = () => {}
      const opened = new Promise<void>((resolve) => {
        open = resolve
      })
      gate = { opened, open }
    },
    release,
    reset: () => {
      values = { ...defaultValues }
      recorded = []
      faults = new Map()
      release()
    },
    sentBytes: () => hugeBytesSent,
    stop: async () => {
      release()
      for (const done of [...pending]) done()
      await server.stop(true)
    }
  }
}

/** The fake as a scoped resource: started on acquire, stopped when the scope closes. */
export const scopedFakeUpstream = (
  options?: Parameters<typeof startFakeUpstream>[0]
): Effect.Effect<FakeUpstream, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => startFakeUpstream(options)),
    (fake) => Effect.promise(() => fake.stop())
  )

export const FakeUpstream: Effect.Effect<FakeUpstream, never, Scope.Scope> = scopedFakeUpstream()
