/**
 * Two compiled binaries clustered over a real redis-server that hangs (SIGSTOP) for 6 s, then
 * continues (issue 11, point 5): a hung Redis answers nothing but keeps its connections open, so
 * every command waits for its timeout. Clients must keep getting updates about once an interval
 * meanwhile (no gap over 3 s with `UPDATE_INTERVAL=1 seconds`), and once Redis answers again the
 * cluster is one again: one poller, the same updates with the same `seq` everywhere.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { RedisClient } from "bun"
import { Effect, Exit, Scope } from "effect"
import { LEADER_KEY } from "../../src/cluster/RedisCluster.js"
import type { ServerMessage } from "../../src/realtime/Protocol.js"
import {
  ensureBinary,
  openWs,
  type ReceivedFrame,
  type RunningBinary,
  startBinary,
  stopAllBinaries,
  waitFor,
  type WsClient
} from "../support/Binary.js"
import { startFakeUpstream } from "../support/FakeUpstream.js"
import { makeRedisServer } from "../support/RedisServer.js"
import { hasTool } from "../support/SystemTools.js"

const INTERVAL_MS = 1_000
const LEASE_MS = 3_000
const HANG_MS = 6_000
/** How long a client may wait between two updates, hang or not (issue 11: 3 intervals). */
const MAX_GAP_MS = 3_000
/** After SIGCONT, the window goes on this long: the recovery is part of it. */
const AFTER_RESUME_MS = 4_000

type Update = Extract<ServerMessage, { type: "dashboard_update" }>
type UpdateFrame = ReceivedFrame & { readonly message: Update }

const updatesOf = (client: WsClient): ReadonlyArray<UpdateFrame> =>
  client.frames().filter((f): f is UpdateFrame => f.message.type === "dashboard_update")

const nextUpdate = (client: WsClient, after: number, label: string, timeoutMs = 5_000) =>
  client.waitFor((m): m is Update => m.type === "dashboard_update", { after, label, timeoutMs }) as Promise<UpdateFrame>

const updateWithSeq = (client: WsClient, seq: number, label: string, timeoutMs = 5_000) =>
  client.waitFor((m): m is Update => m.type === "dashboard_update" && m.seq >= seq, { label, timeoutMs }) as Promise<UpdateFrame>

/** See Cluster.e2e.test.ts: a port picked free may be taken by the time the binary listens. */
const startOnFreePort = async (env: Record<string, string>): Promise<RunningBinary> => {
  try {
    return await startBinary({ env })
  } catch (error) {
    if (!/exited with 1 before answering|cannot listen/.test(String(error))) throw error
    return startBinary({ env })
  }
}

/**
 * The longest wait of a client between `from` and `to`: between consecutive updates, from `from` to
 * the first (counting from the last update before `from`), and from the last one to `to`.
 */
const longestWait = (client: WsClient, from: number, to: number): number => {
  const all = updatesOf(client)
  const before = all.filter((f) => f.at <= from).at(-1)
  const times = [before?.at ?? from, ...all.filter((f) => f.at > from && f.at <= to).map((f) => f.at), to]
  return Math.max(...times.slice(1).map((t, k) => t - times[k]!))
}

beforeAll(() => ensureBinary(), 120_000)
afterAll(stopAllBinaries)

describe.skipIf(!hasTool("redis-server"))("dashcast binary: two instances while Redis hangs", () => {
  it("no client waits over 3 intervals while Redis is stopped (SIGSTOP) for 6 s; then one cluster again", async () => {
    const scope = Effect.runSync(Scope.make())
    await using stack = new AsyncDisposableStack()
    stack.defer(() => Effect.runPromise(Scope.close(scope, Exit.void)))
    const redis = await Effect.runPromise(Scope.extend(makeRedisServer, scope))
    const fake = startFakeUpstream()
    stack.defer(() => fake.stop())
    const inspector = new RedisClient(redis.url, { autoReconnect: true, enableOfflineQueue: false })
    await inspector.connect()
    stack.defer(() => inspector.close())
    const env = {
      ...fake.env,
      REDIS_URL: redis.url,
      UPDATE_INTERVAL: `${INTERVAL_MS / 1000} seconds`,
      LEASE_TTL: `${LEASE_MS / 1000} seconds`,
      CACHE_PATH: ":memory:"
    }
    const apps = await Promise.all([0, 1].map(() => startOnFreePort(env)))
    for (const app of apps) stack.defer(() => app.kill9())
    const clients = apps.flatMap((app) => [openWs(app.wsUrl), openWs(app.wsUrl)])
    for (const client of clients) stack.defer(() => client.close())
    const leader = async () => {
      const id = await inspector.get(LEADER_KEY).catch(() => null)
      const pid = id === null ? undefined : Number(id.split(":").at(-2))
      return apps.find((app) => app.pid === pid)
    }

    // --- A cluster: one leader, whose updates reach the clients of both instances.
    await Promise.all(clients.map((c, k) => nextUpdate(c, 0, `a first update on client ${k}`, 8_000)))
    const leaderBefore = await waitFor(leader, "an instance named in dashcast:leader")
    const relayed = await nextUpdate(clients[0]!, clients[0]!.frames().length, "an update before the hang")
    await Promise.all(clients.map((c, k) => updateWithSeq(c, relayed.message.seq, `seq ${relayed.message.seq} on client ${k}`)))

    // --- Redis hangs: its connections stay open, nothing answers.
    await Bun.sleep(200)
    const stoppedAt = performance.now()
    await Effect.runPromise(redis.pause)
    await Bun.sleep(HANG_MS)
    await Effect.runPromise(redis.resume)
    const resumedAt = performance.now()
    await Bun.sleep(AFTER_RESUME_MS)
    const windowEnd = performance.now()

    const waits = clients.map((c) => longestWait(c, stoppedAt, windowEnd))
    const timeline = clients.map((c, k) =>
      `client ${k} (of the ${apps[Math.floor(k / 2)] === leaderBefore ? "leader" : "follower"}): ` +
      updatesOf(c).filter((f) => f.at > stoppedAt - 1_500 && f.at <= windowEnd).map((f) => `${f.message.seq}@${Math.round(f.at - stoppedAt)}`).join(" ")
    )
    console.log(
      `redis hang e2e: longest wait per client from SIGSTOP to ${AFTER_RESUME_MS} ms after SIGCONT (at ${Math.round(resumedAt - stoppedAt)} ms): ` +
        `${waits.map((w) => w.toFixed(0)).join(", ")} ms; updates as seq@ms after SIGSTOP:\n${timeline.join("\n")}`
    )
    for (const [k, wait] of waits.entries()) expect(wait, `longest wait of client ${k} between updates`).toBeLessThanOrEqual(MAX_GAP_MS)
    for (const app of apps) {
      expect(app.exitCode()).toBeNull()
      expect((await app.fetch("/healthz")).status).toBe(200)
    }

    // --- One cluster again: one instance holds the lease and polls, and every client gets the same updates.
    await waitFor(leader, "an instance named in dashcast:leader after the hang", 5_000)
    const settledRequests = fake.requestsTo("coins_markets").length
    const settledFrames = clients.map((c) => c.frames().length)
    await Bun.sleep(3 * INTERVAL_MS)
    const rounds = fake.requestsTo("coins_markets").length - settledRequests
    // One poller: about 3 rounds in 3 intervals; two would make about 6.
    expect(rounds, `upstream rounds in ${3 * INTERVAL_MS} ms after the cluster settled`).toBeGreaterThanOrEqual(2)
    expect(rounds, `upstream rounds in ${3 * INTERVAL_MS} ms after the cluster settled`).toBeLessThanOrEqual(4)
    const latest = await nextUpdate(clients[0]!, settledFrames[0]!, "an update after the hang")
    const upTo = latest.message.seq + 1
    const last = await Promise.all(clients.map((c, k) => updateWithSeq(c, upTo, `seq ${upTo} on client ${k}`)))
    for (const [k, frame] of last.entries()) {
      expect(frame.message.seq, `client ${k}: the same update as client 0`).toBe(upTo)
      // Each instance builds its own frames from the relayed snapshot: equal but for their timestamp.
      const { timestamp: _, ...content } = frame.message
      const { timestamp: __, ...first } = last[0]!.message
      expect(content, `client ${k}: the very update client 0 got`).toEqual(first)
    }
    // No client ever saw an update twice or out of order: late replies after SIGCONT change nothing.
    for (const [k, client] of clients.entries()) {
      const seqs = updatesOf(client).map((f) => f.message.seq)
      for (let i = 1; i < seqs.length; i++) expect(seqs[i]!, `client ${k}: seq after ${seqs[i - 1]}`).toBeGreaterThan(seqs[i - 1]!)
    }
  }, 60_000)
})
