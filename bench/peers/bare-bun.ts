/**
 * Reference peer (a): bare `Bun.serve` pub/sub, no framework. One topic per currency of `CURRENCIES`;
 * a socket picks its currency with `/ws?currency=eur` (default: the first), gets a welcome on open
 * and joins its topic. `POST /api/dashboard/refresh` moves the market and publishes one frame per
 * currency, each encoded once (bench/peers/market.mjs), the same size as dashcast's.
 * Usage: PORT=9000 ASSETS=bitcoin,ethereum CURRENCIES=usd,eur bun bench/peers/bare-bun.ts
 */
import { makeMarket } from "./market.mjs"

const market = makeMarket(process.env)
const currencies = new Set(market.currencies)
const [defaultCurrency = "usd"] = market.currencies
const token = `Bearer ${process.env["ADMIN_TOKEN"] ?? "bench"}`
let seq = 1

const server = Bun.serve<{ currency: string }>({
  hostname: process.env["HOST"] ?? "127.0.0.1",
  port: Number(process.env["PORT"] ?? 9000),
  fetch(request, server) {
    const url = new URL(request.url)
    if (url.pathname === "/ws") {
      const currency = url.searchParams.get("currency") ?? defaultCurrency
      if (!currencies.has(currency)) return Response.json({ error: `unknown currency ${currency}` }, { status: 400 })
      if (server.upgrade(request, { data: { currency } })) return undefined
      return new Response("expected a WebSocket upgrade", { status: 426 })
    }
    if (url.pathname === "/api/dashboard/refresh" && request.method === "POST") {
      if (request.headers.get("authorization") !== token) return new Response("unauthorized", { status: 401 })
      seq++
      market.next()
      const now = Date.now()
      let recipients = 0
      for (const currency of market.currencies) {
        const topic = `dashboard:${currency}`
        server.publish(topic, market.update(currency, seq, now))
        recipients += server.subscriberCount(topic)
      }
      return new Response(`{${market.view(defaultCurrency)},"seq":${seq},"recipients":${recipients}}`, {
        headers: { "content-type": "application/json" }
      })
    }
    if (url.pathname === "/api/dashboard") {
      return new Response(`{${market.view(defaultCurrency)},"seq":${seq}}`, { headers: { "content-type": "application/json" } })
    }
    if (url.pathname === "/healthz") return Response.json({ status: "ok" })
    return new Response("not found", { status: 404 })
  },
  websocket: {
    // The same socket options as dashcast's Server.ts, so only the code around them differs.
    backpressureLimit: 256 * 1024,
    closeOnBackpressureLimit: false,
    idleTimeout: 120,
    sendPings: true,
    perMessageDeflate: false,
    open(ws) {
      ws.sendText(market.welcome(ws.data.currency, seq, Date.now()))
      ws.subscribe(`dashboard:${ws.data.currency}`)
    },
    message() {}
  }
})
console.log(`bare-bun listening on ${server.url.href}`)
process.on("SIGTERM", () => {
  server.stop(true)
  process.exit(0)
})
