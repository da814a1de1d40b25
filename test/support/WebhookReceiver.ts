/**
 * A webhook receiver on loopback for tests: it records every request and verifies each one's
 * signature with the maintained Standard Webhooks library from npm (`standardwebhooks`), never with
 * dashcast's own code, against the secret the test registered for the request's path. Answers are
 * scripted per path (a status, `hang` to never answer, `redirect`); 200 when none is scripted.
 */
import type { Server } from "bun"
import { Webhook } from "standardwebhooks"

export type Answer = number | "hang" | "redirect"

export interface ReceivedWebhook {
  readonly path: string
  /** `performance.now()` when the request arrived. */
  readonly at: number
  readonly id: string
  readonly timestamp: string
  readonly signature: string
  readonly host: string
  readonly body: string
  /** What `Webhook.verify` returned (the parsed body), or why it threw. */
  readonly verified: { readonly ok: true; readonly payload: unknown } | { readonly ok: false; readonly error: string }
  readonly answer: Answer
}

export interface WebhookReceiver {
  readonly port: number
  /** `http://127.0.0.1:<port><path>` */
  readonly url: (path?: string) => string
  /** The secret deliveries to `path` must be signed with. */
  readonly expectSecret: (path: string, secret: string) => void
  /** The answers to the next requests to `path`, in order; after them, 200. */
  readonly answer: (path: string, ...answers: ReadonlyArray<Answer>) => void
  readonly received: (path?: string) => ReadonlyArray<ReceivedWebhook>
  /** Resolves once `count` requests (to `path`, if given) have arrived. */
  readonly waitFor: (count: number, path?: string, timeoutMs?: number) => Promise<ReadonlyArray<ReceivedWebhook>>
  /** Answers requests left hanging with 503, then stops. */
  readonly stop: () => Promise<void>
}

export const startWebhookReceiver = (): WebhookReceiver => {
  const secrets = new Map<string, string>()
  const scripts = new Map<string, Array<Answer>>()
  const received: Array<ReceivedWebhook> = []
  const hanging: Array<() => void> = []
  const watchers = new Set<() => void>()

  const server: Server<undefined> = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 0,
    fetch: async (request) => {
      const url = new URL(request.url)
      const body = await request.text()
      const headers = Object.fromEntries(request.headers)
      const secret = secrets.get(url.pathname)
      let verified: ReceivedWebhook["verified"]
      try {
        if (secret === undefined) throw new Error(`no secret registered for ${url.pathname}`)
        verified = { ok: true, payload: new Webhook(secret).verify(body, headers) }
      } catch (error) {
        verified = { ok: false, error: error instanceof Error ? error.message : String(error) }
      }
      const answer = scripts.get(url.pathname)?.shift() ?? 200
      received.push({
        path: url.pathname,
        at: performance.now(),
        id: headers["webhook-id"] ?? "",
        timestamp: headers["webhook-timestamp"] ?? "",
        signature: headers["webhook-signature"] ?? "",
        host: headers["host"] ?? "",
        body,
        verified,
        answer
      })
      for (const watch of [...watchers]) watch()
      if (answer === "hang") {
        return new Promise<Response>((resolve) => hanging.push(() => resolve(new Response("gave up", { status: 503 }))))
      }
      if (answer === "redirect") return new Response(null, { status: 302, headers: { location: `http://127.0.0.1:${server.port}/elsewhere` } })
      return new Response(answer >= 200 && answer < 300 ? "thanks" : `receiver says ${answer}`, { status: answer })
    }
  })
  const port = server.port ?? 0

  return {
    port,
    url: (path = "/hook") => `http://127.0.0.1:${port}${path}`,
    expectSecret: (path, secret) => {
      secrets.set(path, secret)
    },
    answer: (path, ...answers) => {
      scripts.set(path, [...answers])
    },
    received: (path) => received.filter((r) => path === undefined || r.path === path),
    waitFor: (count, path, timeoutMs = 10_000) =>
      new Promise((resolve, reject) => {
        const matching = () => received.filter((r) => path === undefined || r.path === path)
        const timer = setTimeout(() => {
          watchers.delete(check)
          reject(new Error(`${count} webhooks${path === undefined ? "" : ` to ${path}`}: only ${matching().length} within ${timeoutMs} ms`))
        }, timeoutMs)
        const check = () => {
          if (matching().length < count) return
          watchers.delete(check)
          clearTimeout(timer)
          resolve(matching())
        }
        watchers.add(check)
        check()
      }),
    stop: async () => {
      for (const release of hanging.splice(0)) release()
      await server.stop(true)
    }
  }
}
