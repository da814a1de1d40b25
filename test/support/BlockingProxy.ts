/**
 * A reverse proxy on loopback that passes plain HTTP through (responses streamed as they come,
 * event streams included) and refuses every WebSocket upgrade with 403, as corporate proxies that
 * break WebSockets do. Browser tests put it in front of the compiled binary to see the client fall
 * back to Server-Sent Events without any test-only setting in dashcast itself.
 */
import type { Server } from "bun"

export interface BlockingProxy {
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  /** Upgrade requests refused so far, by path (with query). */
  readonly refusedUpgrades: () => ReadonlyArray<string>
  /** Requests passed through so far, by path (with query). */
  readonly passed: () => ReadonlyArray<string>
  readonly stop: () => Promise<void>
}

/** Headers that belong to one hop and are not forwarded. */
const HOP_BY_HOP = ["connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection", "te", "trailer", "content-length"]

export const startBlockingProxy = (target: string): BlockingProxy => {
  const refused: Array<string> = []
  const passed: Array<string> = []
  const server: Server<undefined> = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: async (request, self) => {
      const url = new URL(request.url)
      const where = url.pathname + url.search
      if (request.headers.get("upgrade")?.toLowerCase() === "websocket") {
        refused.push(where)
        return new Response("<html><body><h1>403 Forbidden</h1>WebSocket connections are not allowed.</body></html>", {
          status: 403,
          headers: { "content-type": "text/html" }
        })
      }
      passed.push(where)
      // Long-lived responses (event streams) must not be cut by the proxy's own idle timeout.
      self.timeout(request, 0)
      const headers = new Headers(request.headers)
      for (const name of HOP_BY_HOP) headers.delete(name)
      const upstream = await fetch(new URL(where, target), {
        method: request.method,
        headers,
        ...(request.method === "GET" || request.method === "HEAD" ? {} : { body: await request.arrayBuffer() }),
        redirect: "manual",
        signal: request.signal,
        decompress: false
      })
      const responseHeaders = new Headers(upstream.headers)
      for (const name of HOP_BY_HOP) responseHeaders.delete(name)
      return new Response(upstream.body, { status: upstream.status, statusText: upstream.statusText, headers: responseHeaders })
    }
  })
  return {
    url: `http://127.0.0.1:${server.port}`,
    refusedUpgrades: () => refused,
    passed: () => passed,
    stop: () => server.stop(true)
  }
}
