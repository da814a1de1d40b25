/**
 * Reference peer (a): bare `Bun.serve` pub/sub, no framework. A socket gets a welcome on open and
 * joins the topic; `POST /api/dashboard/refresh` builds one same-size frame and publishes it.
 * Usage: PORT=9000 bun bench/peers/bare-bun.ts
 */
import { nextSummary, WELCOME_TEXT } from "./summary.mjs"

const TOPIC = "dashboard"
const token = `Bearer ${process.env["ADMIN_TOKEN"] ?? "bench"}`
let seq = 1
let summary = nextSummary()
let fetchedAt = Date.now()

const server = Bun.serve({
  hostname: process.env["HOST"] ?? "127.0.0.1",
  port: Number(process.env["PORT"] ?? 9000),
  fetch(request, server) {
    const path = new URL(request.url).pathname
    if (path === "/ws") {
      if (server.upgrade(request, { data: undefined })) return undefined
      return new Response("expected a WebSocket upgrade", { status: 426 })
    }
    if (path === "/api/dashboard/refresh" && request.method === "POST") {
      if (request.headers.get("authorization") !== token) return new Response("unauthorized", { status: 401 })
      seq++
      summary = nextSummary()
      fetchedAt = Date.now()
      const frame = JSON.stringify({
        type: "dashboard_update",
        data: summary,
        timestamp: new Date().toISOString(),
        source: "force_update",
        seq
      })
      const recipients = server.publish(TOPIC, frame)
      return Response.json({ data: summary, seq, recipients })
    }
    if (path === "/api/dashboard") return Response.json({ data: summary, seq })
    if (path === "/healthz") return Response.json({ status: "ok" })
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
      const now = Date.now()
      ws.sendText(JSON.stringify({
        type: "welcome",
        data: summary,
        timestamp: new Date(now).toISOString(),
        message: WELCOME_TEXT,
        seq,
        age_seconds: Math.round((now - fetchedAt) / 100) / 10,
        stale: false
      }))
      ws.subscribe(TOPIC)
    },
    message() {}
  }
})
console.log(`bare-bun listening on ${server.url.href}`)
process.on("SIGTERM", () => {
  server.stop(true)
  process.exit(0)
})
