/**
 * A real HTTP server that answers the upstream calls of docs/ARCHITECTURE.md "Upstream calls" with
 * the exact CoinGecko and alternative.me response shapes, records every request and injects faults
 * per endpoint (and per currency or asset) on command. It behaves like the real APIs where dashcast
 * could get it wrong: `coins/markets` returns at most `per_page` rows (100 by default) and leaves
 * unknown ids out; `market_chart` of an unknown id is a 404; an unknown `vs_currency` is a 400.
 * Use it as a scoped Effect resource (`FakeUpstream`) in process, or with `startFakeUpstream` /
 * `stop()` from plain async code (end-to-end tests of the compiled binary: pass `fake.env`).
 */
import type { Server } from "bun"
import { Data, Effect, type Scope } from "effect"
import type { Endpoint } from "../../src/market/MarketData.js"

/** One asset as the fake reports it, in every currency it knows. */
export interface AssetValues {
  readonly name: string
  /** Lower case, as CoinGecko writes it. */
  readonly symbol: string
  /** `current_price` per vs-currency. */
  readonly prices: Readonly<Record<string, number>>
  /** `price_change_percentage_24h` (the same in every currency; `null` as CoinGecko sometimes sends). */
  readonly change24h: number | null
  /** `market_cap` in US dollars (other currencies scale with the price); 0 is CoinGecko's "unknown". */
  readonly marketCapUsd: number
  /** `total_volume` in US dollars (scaled likewise); `null` is allowed. */
  readonly volumeUsd: number | null
  /** Daily closes in the first currency the chart is asked for, oldest first; the last is intraday. */
  readonly closes: ReadonlyArray<number>
  /**
   * `sparkline_in_7d.price` in every currency, as sent (anything, to play a broken one); by default
   * `sparklineOf(price)` in each currency.
   */
  readonly sparkline?: ReadonlyArray<unknown>
}

/** The market as the fake reports it; each value maps to one place in one response body. */
export interface MarketValues {
  /** The coins the fake knows, by CoinGecko id; any other id is unknown (left out, or 404). */
  readonly assets: Readonly<Record<string, AssetValues>>
  /** `/global` totals per vs-currency (the currencies the fake knows). */
  readonly totals: Readonly<Record<string, { readonly marketCap: number; readonly volume: number }>>
  /** `data[0].value` of /fng/ (sent as a string, as alternative.me does). */
  readonly fearGreed: number
  /** `data[0].time_until_update` in seconds (sent as a string). */
  readonly fearGreedUpdateIn: number
}

const DAY_MS = 86_400_000

/** 61 daily closes (60 days and today) as a gentle wave around `level`, deterministic. */
export const wave = (level: number, phase = 0, length = 61): ReadonlyArray<number> =>
  Array.from({ length }, (_, i) => Math.round(level * (1 + 0.028 * Math.sin((i + phase) / 4) + 0.0005 * i) * 1e6) / 1e6)

/** Exchange ratios the default market uses: 1 USD in each currency. */
export const RATIOS: Readonly<Record<string, number>> = { usd: 1, eur: 0.92, gbp: 0.79, jpy: 150.25 }

const roundTo = (x: number, digits: number) => Math.round(x * 10 ** digits) / 10 ** digits

/** An asset priced `usd` in US dollars and at fixed ratios in the other currencies of `ratios`. */
export const assetAt = (
  name: string,
  symbol: string,
  usd: number,
  options: { readonly ratios?: Readonly<Record<string, number>>; readonly change24h?: number | null; readonly supply?: number; readonly phase?: number } = {}
): AssetValues => {
  const ratios = options.ratios ?? RATIOS
  return {
    name,
    symbol,
    prices: Object.fromEntries(Object.entries(ratios).map(([c, r]) => [c, roundTo(usd * r, usd * r >= 1 ? 2 : 8)])),
    change24h: options.change24h === undefined ? 1.234 : options.change24h,
    marketCapUsd: Math.round(usd * (options.supply ?? 1e9)),
    volumeUsd: Math.round(usd * (options.supply ?? 1e9) * 0.04),
    closes: wave(usd, options.phase ?? 0)
  }
}

export const defaultValues: MarketValues = {
  assets: {
    bitcoin: { ...assetAt("Bitcoin", "btc", 67_187.34, { change24h: 3.637, supply: 19_700_000 }), closes: wave(64_000) },
    ethereum: assetAt("Ethereum", "eth", 3_512.09, { change24h: -1.84, supply: 120_000_000, phase: 3 }),
    solana: assetAt("Solana", "sol", 151.37, { change24h: 5.02, supply: 470_000_000, phase: 7 }),
    tether: assetAt("Tether", "usdt", 1.0002, { change24h: 0.01, supply: 140_000_000_000, phase: 11 })
  },
  totals: Object.fromEntries(
    Object.entries(RATIOS).map(([c, r]) => [c, { marketCap: roundTo(2_721_226_850_772.63 * r, 2), volume: roundTo(69_327_091_133.54 * r, 2) }])
  ),
  fearGreed: 54,
  fearGreedUpdateIn: 43_200
}

/**
 * A market of `ids` (each known, with distinct deterministic prices) in `currencies` (ratios from
 * `RATIOS`, or derived), for watchlist tests of any size.
 */
export const generatedMarket = (ids: ReadonlyArray<string>, currencies: ReadonlyArray<string>): MarketValues => {
  const ratios = Object.fromEntries(currencies.map((c, i) => [c, RATIOS[c] ?? 1 + i * 0.37]))
  const assets = Object.fromEntries(ids.map((id, i) => {
    // The growth restarts every 60 assets, so that prices and market caps of 250 assets stay within
    // the plausibility bounds (src/market/Bounds.ts) and are all different.
    const usd = roundTo(0.05 * 1.23 ** (i % 60) + i, 4)
    const change = roundTo(((i * 7) % 23) - 11.5 + i / 100, 3)
    return [id, assetAt(`Coin ${id}`, id.slice(0, 4), usd, { ratios, change24h: change, supply: 1e7 * (i + 1), phase: i })]
  }))
  return {
    assets,
    totals: Object.fromEntries(currencies.map((c) => [c, { marketCap: roundTo(2.5e12 * (ratios[c] ?? 1), 2), volume: roundTo(8.1e10 * (ratios[c] ?? 1), 2) }])),
    fearGreed: 61,
    fearGreedUpdateIn: 43_200
  }
}

/**
 * What an endpoint does instead of answering normally. Every variant is something real providers
 * (or the network in between) have been seen to do.
 */
export type Fault = Data.TaggedEnum<{
  /** A non-2xx status with CoinGecko's flat JSON error body. */
  ServerError: { readonly status?: number }
  /**
   * 429 (or 418) with an optional `Retry-After` (seconds or HTTP-date) and CoinGecko's
   * `x-ratelimit-reset` (`2025-07-25 14:54:00 +0000`), JSON or plain-text body.
   */
  RateLimited: {
    readonly status?: 429 | 418
    readonly retryAfter?: string
    readonly rateLimitReset?: string
    readonly body?: "json" | "text"
  }
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
  /** The currency (`coins_markets`) or coin id (`market_chart`) the request was for. */
  readonly target: string | undefined
  readonly method: string
  readonly path: string
  readonly query: Readonly<Record<string, string>>
  /** Lower-case header names. */
  readonly headers: Readonly<Record<string, string>>
  /** `Date.now()` when the request arrived. */
  readonly time: number
}

export interface FaultOptions {
  /** How many requests misbehave (every one by default). */
  readonly times?: number
  /** Only requests for this currency (`coins_markets`) or coin id (`market_chart`). */
  readonly target?: string
}

export interface FakeUpstream {
  /** Base URL for both providers, e.g. `http://127.0.0.1:41234` (no trailing slash). */
  readonly url: string
  /** `COINGECKO_BASE_URL` and `FNG_BASE_URL` pointing at the fake, for a subprocess environment. */
  readonly env: { readonly COINGECKO_BASE_URL: string; readonly FNG_BASE_URL: string }
  /** Every request so far, in arrival order. */
  readonly requests: () => ReadonlyArray<RecordedRequest>
  readonly requestsTo: (endpoint: Endpoint, target?: string) => ReadonlyArray<RecordedRequest>
  /** Resolves once at least `count` requests (to `endpoint`, if given) have arrived. */
  readonly waitForRequests: (count: number, endpoint?: Endpoint) => Promise<void>
  readonly values: () => MarketValues
  readonly setValues: (values: Partial<MarketValues>) => void
  /** Changes one known asset. */
  readonly setAsset: (id: string, change: Partial<AssetValues>) => void
  /** Makes the next `times` requests to `endpoint` (for `target`, if given) misbehave; faults queue up. */
  readonly fail: (endpoint: Endpoint, fault: Fault, options?: FaultOptions) => void
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

interface Route {
  readonly endpoint: Endpoint
  readonly target: string | undefined
}

/** Which call a path is, and for which currency or coin. */
const routeOf = (url: URL): Route | undefined => {
  if (url.pathname === "/api/v3/coins/markets") return { endpoint: "coins_markets", target: url.searchParams.get("vs_currency") ?? undefined }
  if (url.pathname === "/api/v3/global") return { endpoint: "global", target: undefined }
  if (url.pathname === "/fng/") return { endpoint: "fear_greed", target: undefined }
  const chart = /^\/api\/v3\/coins\/([^/]+)\/market_chart$/.exec(url.pathname)
  if (chart !== null) return { endpoint: "market_chart", target: decodeURIComponent(chart[1]!) }
  return undefined
}

/** The queries each call must carry (dashcast's contract with itself); anything else is answered 400. */
const expectedQuery = (route: Route, query: Readonly<Record<string, string>>): string | undefined => {
  const required: Record<string, string | undefined> = route.endpoint === "coins_markets"
    ? { vs_currency: route.target, sparkline: "true", price_change_percentage: "24h" }
    : route.endpoint === "market_chart"
    ? { days: "60", interval: "daily" }
    : route.endpoint === "fear_greed"
    ? { limit: "1" }
    : {}
  const allowed = new Set([
    ...Object.keys(required),
    ...(route.endpoint === "coins_markets" ? ["ids", "per_page", "page", "order"] : []),
    ...(route.endpoint === "market_chart" ? ["vs_currency"] : [])
  ])
  for (const [key, value] of Object.entries(required)) if (value !== undefined && query[key] !== value) return `${key} must be ${value}`
  for (const key of Object.keys(query)) if (!allowed.has(key)) return `unexpected parameter ${key}`
  if (route.endpoint === "coins_markets" && query["ids"] === undefined) return "ids is required"
  return undefined
}

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

/** alternative.me's words for a value. */
export const fearGreedLabel = (value: number): string =>
  value <= 24 ? "Extreme Fear" : value <= 46 ? "Fear" : value <= 54 ? "Neutral" : value <= 75 ? "Greed" : "Extreme Greed"

/** The 168 hourly prices of a 7-day sparkline ending at `price`, as the fake sends them by default. */
export const sparklineOf = (price: number): ReadonlyArray<number> =>
  Array.from({ length: 168 }, (_, i) => roundTo(price * (1 + 0.01 * Math.sin(i / 9) - 0.0002 * (167 - i)), 8))

/** The body of a normal answer, with `number` standing in for how numbers are written (faults). */
const body = (route: Route, query: Readonly<Record<string, string>>, v: MarketValues, number: (n: number | null) => unknown, now: number): unknown => {
  switch (route.endpoint) {
    case "coins_markets": {
      const currency = route.target ?? ""
      const ids = (query["ids"] ?? "").split(",")
      const perPage = Math.min(250, Number(query["per_page"] ?? 100))
      const rows = ids.flatMap((id) => {
        const asset = v.assets[id]
        const price = asset?.prices[currency]
        if (asset === undefined || price === undefined) return []
        const scale = price / (asset.prices["usd"] ?? price)
        return [{ id, asset, price, scale }]
      })
      // Ordered by market cap, as CoinGecko's default `order=market_cap_desc`, then cut to one page.
      rows.sort((a, b) => b.asset.marketCapUsd - a.asset.marketCapUsd)
      return rows.slice(0, perPage).map(({ asset, id, price, scale }, i) => ({
        id,
        symbol: asset.symbol,
        name: asset.name,
        image: `https://coin-images.coingecko.com/coins/images/${i + 1}/large/${id}.png`,
        current_price: number(price),
        market_cap: number(Math.round(asset.marketCapUsd * scale)),
        market_cap_rank: i + 1,
        fully_diluted_valuation: number(Math.round(asset.marketCapUsd * scale * 1.05)),
        total_volume: number(asset.volumeUsd === null ? null : Math.round(asset.volumeUsd * scale)),
        high_24h: number(price * 1.02),
        low_24h: number(price * 0.97),
        price_change_24h: number(asset.change24h === null ? null : price * asset.change24h / 100),
        price_change_percentage_24h: number(asset.change24h),
        market_cap_change_24h: 1_000_000,
        market_cap_change_percentage_24h: 0.8,
        circulating_supply: 19_700_000,
        total_supply: 21_000_000,
        max_supply: 21_000_000,
        ath: price * 1.4,
        ath_change_percentage: -28.6,
        ath_date: "2024-03-14T07:10:36.635Z",
        atl: price / 1000,
        atl_change_percentage: 99_900,
        atl_date: "2013-07-06T00:00:00.000Z",
        roi: null,
        last_updated: new Date(now - 30_000).toISOString(),
        sparkline_in_7d: { price: asset.sparkline ?? sparklineOf(price).map((p) => number(p)) },
        price_change_percentage_24h_in_currency: number(asset.change24h)
      }))
    }
    case "global":
      return {
        data: {
          active_cryptocurrencies: 13_690,
          upcoming_icos: 0,
          ongoing_icos: 49,
          ended_icos: 3_376,
          markets: 1_046,
          total_market_cap: Object.fromEntries(Object.entries(v.totals).map(([c, t]) => [c, number(t.marketCap)])),
          total_volume: Object.fromEntries(Object.entries(v.totals).map(([c, t]) => [c, number(t.volume)])),
          market_cap_percentage: { btc: 50.45, eth: 14.92 },
          market_cap_change_percentage_24h_usd: 1.72,
          updated_at: Math.floor(now / 1000)
        }
      }
    case "market_chart": {
      const closes = v.assets[route.target ?? ""]?.closes ?? []
      const start = Math.floor(now / DAY_MS) * DAY_MS - (closes.length - 2) * DAY_MS
      // The last point is intraday ("now"), the others are daily closes at 00:00 UTC.
      const at = (i: number) => (i === closes.length - 1 ? now : start + i * DAY_MS)
      return {
        prices: closes.map((c, i) => [at(i), number(c)]),
        market_caps: closes.map((c, i) => [at(i), number(c * 19_700_000)]),
        total_volumes: closes.map((c, i) => [at(i), number(c * 1_000_000)])
      }
    }
    case "fear_greed":
      return {
        name: "Fear and Greed Index",
        data: [{
          value: number(v.fearGreed),
          value_classification: fearGreedLabel(v.fearGreed),
          timestamp: String(Math.floor(now / DAY_MS) * 86_400),
          time_until_update: String(v.fearGreedUpdateIn)
        }],
        metadata: { error: null }
      }
  }
}

/** alternative.me writes the index as a string; everything else is a JSON number. */
const asWritten = (endpoint: Endpoint) => (n: number | null): unknown => endpoint === "fear_greed" && n !== null ? String(n) : n

/** Starts the fake on `hostname` (default 127.0.0.1) and `port` (default 0: a free one). */
export const startFakeUpstream = (
  options: { readonly hostname?: string; readonly port?: number; readonly values?: Partial<MarketValues> } = {}
): FakeUpstream => {
  let values: MarketValues = { ...defaultValues, ...options.values }
  let recorded: Array<RecordedRequest> = []
  let faults: Array<{ readonly endpoint: Endpoint; readonly target: string | undefined; readonly fault: Fault; remaining: number }> = []
  let gate: { readonly opened: Promise<void>; readonly open: () => void } | undefined
  let hugeBytesSent = 0
  const waiters = new Set<() => void>()
  const pending = new Set<() => void>()

  const takeFault = (route: Route): Fault | undefined => {
    const index = faults.findIndex((f) => f.endpoint === route.endpoint && (f.target === undefined || f.target === route.target))
    const head = faults[index]
    if (head === undefined) return undefined
    head.remaining -= 1
    if (head.remaining <= 0) faults.splice(index, 1)
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

  const faulty = (route: Route, query: Readonly<Record<string, string>>, fault: Fault, request: Request, now: number): Response | Promise<Response> => {
    const normal = (number: (n: number | null) => unknown) => body(route, query, values, number, now)
    return Fault.$match(fault, {
      ServerError: ({ status }) => json({ error: "Internal server error" }, status ?? 500),
      RateLimited: ({ status, retryAfter, rateLimitReset, body: kind }) => {
        const headers: Record<string, string> = {
          ...(retryAfter === undefined ? {} : { "retry-after": retryAfter }),
          ...(rateLimitReset === undefined ? {} : { "x-ratelimit-reset": rateLimitReset })
        }
        return kind === "text"
          ? text("Throttled", status ?? 429, "text/plain", headers)
          : json(route.endpoint === "fear_greed" ? { error: "Too many requests" } : COINGECKO_RATE_LIMIT, status ?? 429, headers)
      },
      Throttled: () => text("Throttled", 200, "text/plain"),
      HtmlChallenge: ({ status }) => text(HTML_CHALLENGE, status ?? 403, "text/html; charset=UTF-8"),
      EmptyObject: () => json({}),
      MalformedJson: () => text(JSON.stringify(normal(asWritten(route.endpoint))).slice(0, 40), 200, "application/json"),
      WrongTypes: () => json(normal((n) => (n === null ? null : route.endpoint === "fear_greed" ? n : String(n)))),
      NonNumeric: () => json(normal(() => "N/A")),
      NullValues: () => json(normal(() => null)),
      ProviderError: ({ message }) =>
        route.endpoint === "fear_greed"
          ? json({ name: "Fear and Greed Index", data: [], metadata: { error: message ?? "Service temporarily unavailable" } })
          : json({ status: { error_code: 10_005, error_message: message ?? "This request is limited to paid plan subscribers" } }),
      Hang: () => hang(request),
      // An errored body stream makes Bun reset the connection: before the headers if nothing was sent.
      Drop: () => new Response(new ReadableStream({ start: (controller) => controller.error() })),
      DropMidBody: () =>
        new Response(
          new ReadableStream({
            start: (controller) => {
              controller.enqueue(new TextEncoder().encode(JSON.stringify(normal(asWritten(route.endpoint))).slice(0, 40)))
              setTimeout(() => controller.error(), 20)
            }
          }),
          { status: 200, headers: { "content-type": "application/json" } }
        ),
      Huge: ({ bytes, declareLength }) => {
        const head = new TextEncoder().encode(`[{"id":"bitcoin","pad":"`)
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
  }

  const answer = (request: Request, url: URL, route: Route | undefined, now: number): Response | Promise<Response> => {
    if (route === undefined) return json({ error: "Not Found" }, 404)
    const query = Object.fromEntries(url.searchParams)
    const wrong = expectedQuery(route, query)
    if (wrong !== undefined) return json({ error: `unexpected query for ${route.endpoint}: ${wrong} (${url.search})` }, 400)
    const fault = takeFault(route)
    if (fault !== undefined) return faulty(route, query, fault, request, now)
    // What the real API does with what it does not know.
    if (route.endpoint === "coins_markets" && values.totals[route.target ?? ""] === undefined) return json({ error: "invalid vs_currency" }, 400)
    if (route.endpoint === "market_chart" && values.assets[route.target ?? ""] === undefined) return json({ error: "coin not found" }, 404)
    return json(body(route, query, values, asWritten(route.endpoint), now))
  }

  const server: Server<undefined> = Bun.serve({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 0,
    // Hangs last until the client gives up; Bun's own idle timeout would end them first.
    idleTimeout: 0,
    fetch: async (request) => {
      const url = new URL(request.url)
      const now = Date.now()
      const route = routeOf(url)
      recorded.push({
        endpoint: route?.endpoint,
        target: route?.target,
        method: request.method,
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        headers: Object.fromEntries(request.headers),
        time: now
      })
      for (const wake of [...waiters]) wake()
      if (gate !== undefined) await gate.opened
      return answer(request, url, route, now)
    }
  })

  const url = `http://${server.hostname}:${server.port}`
  const requestsTo = (endpoint: Endpoint, target?: string) =>
    recorded.filter((r) => r.endpoint === endpoint && (target === undefined || r.target === target))
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
    setAsset: (id, change) => {
      const current = values.assets[id]
      if (current === undefined) throw new Error(`the fake does not know ${id}`)
      values = { ...values, assets: { ...values.assets, [id]: { ...current, ...change } } }
    },
    fail: (endpoint, fault, { target, times = Number.POSITIVE_INFINITY } = {}) => {
      faults.push({ endpoint, target, fault, remaining: times })
    },
    clearFaults: (endpoint) => {
      faults = endpoint === undefined ? [] : faults.filter((f) => f.endpoint !== endpoint)
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
      faults = []
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
