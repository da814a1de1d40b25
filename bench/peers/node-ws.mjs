/**
 * Reference peer (b): Node.js `http` + `ws`, broadcasting with a loop over `wss.clients`. A socket
 * picks its currency with `/ws?currency=eur` (default: the first of `CURRENCIES`) and gets a welcome
 * on connection; `POST /api/dashboard/refresh` moves the market, encodes one frame per currency once
 * (bench/peers/market.mjs, the same size as dashcast's) and sends each open client its currency's.
 * Usage: PORT=9000 ASSETS=bitcoin,ethereum CURRENCIES=usd,eur node bench/peers/node-ws.mjs
 */
import { createServer } from "node:http"
import { WebSocket, WebSocketServer } from "ws"
import { makeMarket } from "./market.mjs"

const market = makeMarket(process.env)
const currencies = new Set(market.currencies)
const defaultCurrency = market.currencies[0] ?? "usd"
const token = `Bearer ${process.env.ADMIN_TOKEN ?? "bench"}`
let seq = 1

const send = (res, status, text) => {
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
  res.end(text)
}

const http = createServer((req, res) => {
  const path = (req.url ?? "/").split("?")[0]
  if (path === "/api/dashboard/refresh" && req.method === "POST") {
    req.resume()
    if (req.headers.authorization !== token) return send(res, 401, "{\"error\":\"unauthorized\"}")
    seq++
    market.next()
    const now = Date.now()
    const frames = new Map(market.currencies.map((c) => [c, Buffer.from(market.update(c, seq, now))]))
    let recipients = 0
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) {
        client.send(frames.get(client.currency), { binary: false })
        recipients++
      }
    }
    return send(res, 200, `{${market.view(defaultCurrency)},"seq":${seq},"recipients":${recipients}}`)
  }
  if (path === "/api/dashboard") return send(res, 200, `{${market.view(defaultCurrency)},"seq":${seq}}`)
  if (path === "/healthz") return send(res, 200, "{\"status\":\"ok\"}")
  send(res, 404, "{\"error\":\"not found\"}")
})

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: true })
http.on("upgrade", (req, socket, head) => {
  const url = new URL(req.url ?? "/", "http://localhost")
  const currency = url.searchParams.get("currency") ?? defaultCurrency
  if (url.pathname !== "/ws" || !currencies.has(currency)) {
    socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    return
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.currency = currency
    ws.send(market.welcome(currency, seq, Date.now()))
    ws.on("error", () => {})
  })
})

http.listen(Number(process.env.PORT ?? 9000), process.env.HOST ?? "127.0.0.1", () => {
  console.log(`node-ws listening on ${process.env.HOST ?? "127.0.0.1"}:${http.address().port}`)
})
process.on("SIGTERM", () => process.exit(0))
