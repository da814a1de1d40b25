/**
 * Reference peer (b): Node.js `http` + `ws`, broadcasting with a loop over `wss.clients`. A socket
 * gets a welcome on connection; `POST /api/dashboard/refresh` builds one same-size frame (encoded
 * once) and sends it to every open client. Usage: PORT=9000 node bench/peers/node-ws.mjs
 */
import { createServer } from "node:http"
import { WebSocket, WebSocketServer } from "ws"
import { nextSummary, WELCOME_TEXT } from "./summary.mjs"

const token = `Bearer ${process.env.ADMIN_TOKEN ?? "bench"}`
let seq = 1
let summary = nextSummary()
let fetchedAt = Date.now()

const json = (res, status, body) => {
  const text = JSON.stringify(body)
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
  res.end(text)
}

const http = createServer((req, res) => {
  const path = (req.url ?? "/").split("?")[0]
  if (path === "/api/dashboard/refresh" && req.method === "POST") {
    req.resume()
    if (req.headers.authorization !== token) return json(res, 401, { error: "unauthorized" })
    seq++
    summary = nextSummary()
    fetchedAt = Date.now()
    const frame = Buffer.from(JSON.stringify({
      type: "dashboard_update",
      data: summary,
      timestamp: new Date().toISOString(),
      source: "force_update",
      seq
    }))
    let recipients = 0
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) {
        client.send(frame, { binary: false })
        recipients++
      }
    }
    return json(res, 200, { data: summary, seq, recipients })
  }
  if (path === "/api/dashboard") return json(res, 200, { data: summary, seq })
  if (path === "/healthz") return json(res, 200, { status: "ok" })
  json(res, 404, { error: "not found" })
})

const wss = new WebSocketServer({ server: http, path: "/ws", perMessageDeflate: false, clientTracking: true })
wss.on("connection", (ws) => {
  const now = Date.now()
  ws.send(JSON.stringify({
    type: "welcome",
    data: summary,
    timestamp: new Date(now).toISOString(),
    message: WELCOME_TEXT,
    seq,
    age_seconds: Math.round((now - fetchedAt) / 100) / 10,
    stale: false
  }))
  ws.on("error", () => {})
})

http.listen(Number(process.env.PORT ?? 9000), process.env.HOST ?? "127.0.0.1", () => {
  console.log(`node-ws listening on ${process.env.HOST ?? "127.0.0.1"}:${http.address().port}`)
})
process.on("SIGTERM", () => process.exit(0))
