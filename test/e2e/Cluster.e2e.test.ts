/**
 * Three compiled binaries clustered over a real redis-server, against the fake upstream
 * (docs/ARCHITECTURE.md "Clustering", issues 7 and 12): one instance polls, every client of every
 * instance gets each update once with the same `seq` (in its own currency, from each instance's
 * topic of that currency), a force update anywhere is one upstream round, the death of the leader
 * (kill -9) is covered within a lease, and a Redis outage degrades to every instance polling on its
 * own, then back to one poller. Timing is real: UPDATE_INTERVAL 2 s, LEASE_TTL 3 s.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { RedisClient } from "bun"
import { Effect, Exit, Scope } from "effect"
import { LEADER_KEY, UPDATES_CHANNEL } from "../../src/cluster/RedisCluster.js"
import type { Endpoint } from "../../src/market/MarketData.js"
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
import { type FakeUpstream, Fault, startFakeUpstream } from "../support/FakeUpstream.js"
import { makeRedisServer, type RedisServer } from "../support/RedisServer.js"
import { hasTool } from "../support/SystemTools.js"
import { assetOf, ENDPOINTS, expectedAsset } from "./Market.js"

/** The calls of every round; the chart (hourly per asset) and Fear & Greed (when a new value exists) are not. */
const ROUND_ENDPOINTS: ReadonlyArray<Endpoint> = ["coins_markets", "global"]
const INTERVAL_MS = 2_000
const LEASE_MS = 3_000
const MIN_GAP_MS = 1_000
const TOKEN = "cluster-e2e-token"

type Update = Extract<ServerMessage, { type: "dashboard_update" }>
type UpdateFrame = ReceivedFrame & { readonly message: Update }

const updatesOf = (client: WsClient): ReadonlyArray<UpdateFrame> =>
  client.frames().filter((f): f is UpdateFrame => f.message.type === "dashboard_update")

/** The first update after the client's `after`-th frame (by frame index). */
const nextUpdate = (client: WsClient, after: number, label: string, timeoutMs = 5_000) =>
  client.waitFor((m): m is Update => m.type === "dashboard_update", { after, label, timeoutMs }) as Promise<UpdateFrame>

/** Requests per endpoint among `requests`. */
const perEndpoint = (requests: FakeUpstream["requests"] extends () => infer R ? R : never) =>
  Object.fromEntries(ENDPOINTS.map((e) => [e, requests.filter((r) => r.endpoint === e).length])) as Record<Endpoint, number>

interface Cluster extends AsyncDisposable {
  readonly redis: RedisServer
  /** A plain client, as an operator would look at Redis. */
  readonly inspector: RedisClient
  readonly fake: FakeUpstream
  readonly apps: ReadonlyArray<RunningBinary>
  /** Two WebSocket clients per instance, opened once all three answer. */
  readonly clients: ReadonlyArray<WsClient>
  /** The instance a client is connected to. */
  readonly appOf: (clientIndex: number) => RunningBinary
  /** The instance named by `dashcast:leader` (its id is `hostname:pid:uuid`). */
  readonly leader: () => Promise<RunningBinary | undefined>
}

/**
 * `startBinary` picks a port that was free a moment ago; with other suites (and the instances' own
 * outgoing connections) taking ephemeral ports meanwhile, it is sometimes taken by the time the
 * binary listens, which exits with 1 ("cannot listen"). One more try, on another port.
 */
const startOnFreePort = async (env: Record<string, string>): Promise<RunningBinary> => {
  try {
    return await startBinary({ env })
  } catch (error) {
    if (!/exited with 1 before answering|cannot listen/.test(String(error))) throw error
    return startBinary({ env })
  }
}

/**
 * Three instances with `env` over the defaults; each instance's two clients ask for the two
 * `currencies` (the server's default for `undefined`).
 */
const startCluster = async (
  options: { readonly env?: Readonly<Record<string, string>>; readonly currencies?: readonly [string | undefined, string | undefined] } = {}
): Promise<Cluster> => {
  const scope = Effect.runSync(Scope.make())
  const redis = await Effect.runPromise(Scope.extend(makeRedisServer, scope))
  const fake = startFakeUpstream()
  const inspector = new RedisClient(redis.url, { autoReconnect: true, enableOfflineQueue: false })
  await inspector.connect()
  const env = {
    ...fake.env,
    REDIS_URL: redis.url,
    UPDATE_INTERVAL: `${INTERVAL_MS / 1000} seconds`,
    LEASE_TTL: `${LEASE_MS / 1000} seconds`,
    MIN_FETCH_GAP: `${MIN_GAP_MS} millis`,
    ADMIN_TOKEN: TOKEN,
    CACHE_PATH: ":memory:",
    ...options.env
  }
  const apps = await Promise.all([0, 1, 2].map(() => startOnFreePort(env)))
  const urlFor = (app: RunningBinary, currency: string | undefined) => (currency === undefined ? app.wsUrl : `${app.wsUrl}?currency=${currency}`)
  const [first, second] = options.currencies ?? [undefined, undefined]
  const clients = apps.flatMap((app) => [openWs(urlFor(app, first)), openWs(urlFor(app, second))])
  const appOf = (clientIndex: number) => apps[Math.floor(clientIndex / 2)]!
  const leader = async () => {
    const id = await inspector.get(LEADER_KEY).catch(() => null)
    const pid = id === null ? undefined : Number(id.split(":").at(-2))
    return apps.find((app) => app.pid === pid)
  }
  return {
    redis,
    inspector,
    fake,
    apps,
    clients,
    appOf,
    leader,
    [Symbol.asyncDispose]: async () => {
      for (const client of clients) client.close()
      await Promise.all(apps.map((app) => app.kill9()))
      inspector.close()
      await fake.stop()
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  }
}

/**
 * A frame's text without its `timestamp` (when the instance sent it): what every instance must
 * agree on, since each one encodes the snapshot it received (docs/ARCHITECTURE.md "Clustering").
 */
const contentOf = (frame: ReceivedFrame) => {
  const content = frame.raw.replace(/,"timestamp":"[^"]*"/, "")
  if (content === frame.raw) throw new Error(`a frame without a timestamp: ${frame.raw}`)
  return content
}

/**
 * Every client saw every update from `fromSeq` to `toSeq` exactly once, in order, and the same
 * frame (byte for byte but the send time), the one of the first client of its currency.
 */
const expectSameUpdates = (clients: ReadonlyArray<WsClient>, fromSeq: number, toSeq: number) => {
  const expected = Array.from({ length: toSeq - fromSeq + 1 }, (_, k) => fromSeq + k)
  const inRange = (client: WsClient) => updatesOf(client).filter((f) => f.message.seq >= fromSeq && f.message.seq <= toSeq)
  const references = new Map<string, ReadonlyArray<string>>()
  for (const [k, client] of clients.entries()) {
    const seen = inRange(client)
    expect(seen.map((f) => f.message.seq), `seqs seen by client ${k}`).toEqual(expected)
    const currency = seen[0]?.message.currency ?? ""
    expect(seen.map((f) => f.message.currency), `currencies seen by client ${k}`).toEqual(seen.map(() => currency))
    const reference = references.get(currency) ?? seen.map(contentOf)
    references.set(currency, reference)
    expect(seen.map(contentOf), `frames seen by client ${k}`).toEqual(reference)
  }
}

/** No client ever saw a seq twice or going backwards. */
const expectIncreasing = (clients: ReadonlyArray<WsClient>) => {
  for (const [k, client] of clients.entries()) {
    const seqs = updatesOf(client).map((f) => f.message.seq)
    for (let i = 1; i < seqs.length; i++) expect(seqs[i]!, `client ${k}: seq after ${seqs[i - 1]}`).toBeGreaterThan(seqs[i - 1]!)
  }
}

const healthy = (app: RunningBinary) => app.fetch("/healthz").then((r) => r.status, () => 0)

const forceUpdate = (app: RunningBinary) =>
  app.fetch("/api/dashboard/refresh", { method: "POST", headers: { authorization: `Bearer ${TOKEN}` } })

beforeAll(() => ensureBinary(), 120_000)
afterAll(stopAllBinaries)

describe.skipIf(!hasTool("redis-server"))("dashcast binary: three instances over Redis", () => {
  it("one poller for the cluster, each update once everywhere, one round per force update, takeover after kill -9", async () => {
    await using cluster = await startCluster()
    const { apps, clients, fake } = cluster
    // Everyone has data, and one instance leads.
    await Promise.all(clients.map((c, k) => nextUpdate(c, 0, `a first update on client ${k}`, 8_000)))
    const leader = await waitFor(cluster.leader, "an instance named in dashcast:leader")
    const followers = apps.filter((app) => app !== leader)
    expect(leader.logs().some((l) => /holds the lease/.test(String(l.message)))).toBe(true)
    for (const f of followers) expect(f.logs().some((l) => /holds the lease/.test(String(l.message)))).toBe(false)

    // --- Steady state: over 10 s, about five rounds (one poller, not three) and the same updates everywhere.
    // The window starts half an interval after an update, so that no round sits on its edges.
    const windowMs = 10_000
    const aligned = await nextUpdate(clients[0]!, clients[0]!.frames().length, "an update to align the window on")
    await Bun.sleep(INTERVAL_MS / 2)
    const firstIndex = fake.requests().length
    const windowStart = performance.now()
    const lastBefore = Math.max(aligned.message.seq, ...clients.map((c) => updatesOf(c).at(-1)!.message.seq))
    await Bun.sleep(windowMs)
    const rounds = perEndpoint(fake.requests().slice(firstIndex))
    for (const endpoint of ROUND_ENDPOINTS) {
      expect(rounds[endpoint], `${endpoint} calls in ${windowMs} ms`).toBeGreaterThanOrEqual(4)
      expect(rounds[endpoint], `${endpoint} calls in ${windowMs} ms`).toBeLessThanOrEqual(6)
    }
    // The leader asked for the chart and Fear & Greed in its first round; neither is due again within the hour.
    expect(rounds).toMatchObject({ market_chart: 0, fear_greed: 0 })
    const lastSeq = Math.max(...clients.map((c) => updatesOf(c).at(-1)!.message.seq))
    await Promise.all(clients.map((c, k) => c.waitFor((m) => m.type === "dashboard_update" && m.seq >= lastSeq, { label: `seq ${lastSeq} on client ${k}` })))
    expectSameUpdates(clients, lastBefore + 1, lastSeq)
    expect(lastSeq - lastBefore).toBeGreaterThanOrEqual(4)
    expect(lastSeq - lastBefore).toBeLessThanOrEqual(6)
    expect(updatesOf(clients[0]!).filter((f) => f.at > windowStart).every((f) => f.message.source === "scheduled_update")).toBe(true)

    // --- A force update on a follower: one upstream round, one `force_update` broadcast everywhere.
    // Just after a scheduled update and past MIN_FETCH_GAP, so the next scheduled one is a second away.
    const scheduled = await nextUpdate(clients[0]!, clients[0]!.frames().length, "a scheduled update")
    await Bun.sleep(MIN_GAP_MS + 100 - (performance.now() - scheduled.at))
    const beforeForce = fake.requests().length
    const forced = await forceUpdate(followers[0]!)
    expect(forced.status).toBe(200)
    const forcedBody = (await forced.json()) as { seq: number }
    const forcedRound = perEndpoint(fake.requests().slice(beforeForce))
    expect(forcedRound).toMatchObject({ coins_markets: 1, global: 1 })
    // The hourly calls are the cluster's, not an instance's: the follower knows from the relayed
    // snapshot that the leader has them (closes read from the shared L2), so it makes none.
    expect(forcedRound.market_chart ?? 0).toBe(0)
    expect(forcedRound.fear_greed ?? 0).toBe(0)
    expect(forcedBody.seq).toBe(scheduled.message.seq + 1)
    // The gap is cluster-wide: another instance refuses a force update right after.
    const refused = await forceUpdate(followers[1]!)
    expect(refused.status).toBe(429)
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1)
    // The next scheduled update follows on every client, with the next seq: nothing lost or repeated.
    await Promise.all(clients.map((c, k) => c.waitFor((m) => m.type === "dashboard_update" && m.seq >= forcedBody.seq + 1, { label: `seq ${forcedBody.seq + 1} on client ${k}`, timeoutMs: 4_000 })))
    expectSameUpdates(clients, scheduled.message.seq, forcedBody.seq + 1)
    for (const client of clients) {
      const forcedFrames = updatesOf(client).filter((f) => f.message.source === "force_update")
      expect(forcedFrames.map((f) => f.message.seq)).toEqual([forcedBody.seq])
    }
    expect(perEndpoint(fake.requests().slice(beforeForce))).toEqual({ ...forcedRound, coins_markets: 2, global: 2 })

    // --- kill -9 of the leader just after it published: a survivor takes over within the lease, with no burst.
    const survivors = clients.filter((_, k) => cluster.appOf(k) !== leader)
    const watcher = survivors[0]!
    const last = await nextUpdate(watcher, watcher.frames().length, "an update before the kill")
    await leader.kill9()
    const killedAt = performance.now()
    const beforeTakeover = fake.requests().length
    const first = await nextUpdate(watcher, watcher.frames().indexOf(last) + 1, "the first update after the kill", LEASE_MS + INTERVAL_MS + 3_000)
    const gapMs = first.at - last.at
    expect(gapMs, `gap between the last update before the kill and the first after (killed ${(killedAt - last.at).toFixed(0)} ms after it)`)
      .toBeLessThanOrEqual(LEASE_MS + INTERVAL_MS + 500)
    expect(first.message.seq).toBe(last.message.seq + 1)
    const newLeader = await waitFor(cluster.leader, "a new leader in dashcast:leader")
    expect(newLeader).not.toBe(leader)
    const second = await nextUpdate(watcher, watcher.frames().indexOf(first) + 1, "the second update after the kill")
    // Back on the interval, not a burst: one round per update.
    expect(second.at - first.at).toBeGreaterThan(INTERVAL_MS - 500)
    const takeoverRounds = perEndpoint(fake.requests().slice(beforeTakeover))
    expect(takeoverRounds).toMatchObject({ coins_markets: 2, global: 2 })
    expect(takeoverRounds.market_chart ?? 0).toBe(0)
    expect(takeoverRounds.fear_greed ?? 0).toBe(0)
    await Promise.all(survivors.map((c, k) => c.waitFor((m) => m.type === "dashboard_update" && m.seq >= second.message.seq, { label: `seq ${second.message.seq} on survivor ${k}` })))
    expectSameUpdates(survivors, last.message.seq, second.message.seq)
    expectIncreasing(clients)
    console.log(
      `cluster e2e: ${rounds.coins_markets} rounds in ${windowMs} ms; takeover gap ${gapMs.toFixed(0)} ms (kill ${(killedAt - last.at).toFixed(0)} ms after the last update)`
    )
  }, 45_000)

  it("a Redis restart: no instance stops, each polls on its own meanwhile, then one poller again", async () => {
    await using cluster = await startCluster()
    const { apps, clients, fake, redis } = cluster
    await Promise.all(clients.map((c, k) => nextUpdate(c, 0, `a first update on client ${k}`, 8_000)))
    const leaderBefore = await waitFor(cluster.leader, "an instance named in dashcast:leader")
    const follower = apps.find((app) => app !== leaderBefore)!

    // --- Outage (SIGKILL, restarted empty): every instance keeps its clients updated by polling itself.
    const outageMs = 5_000
    await nextUpdate(clients[0]!, clients[0]!.frames().length, "an update before the outage")
    const framesAtStop = clients.map((c) => c.frames().length)
    const outageStartIndex = fake.requests().length
    await Effect.runPromise(redis.stop)
    const stoppedAt = performance.now()
    await Promise.all(clients.map((c, k) => nextUpdate(c, framesAtStop[k]!, `an update on client ${k} during the outage`, outageMs)))
    expect(await Promise.all(apps.map(healthy))).toEqual([200, 200, 200])
    // Nothing to coordinate with: a force update is allowed, and puts this instance's own sequence
    // ahead of the others' (the leader after the outage must still number above it).
    // (Retried while the instance's own last poll is within MIN_FETCH_GAP.)
    await waitFor(() => forceUpdate(follower).then((r) => (r.status === 200 ? true : undefined)), "a force update during the outage", 2_500, 200)
    await Bun.sleep(outageMs - (performance.now() - stoppedAt))
    const outageRounds = perEndpoint(fake.requests().slice(outageStartIndex))
    for (const app of apps) {
      expect(app.exitCode()).toBeNull()
      expect(app.logs().some((l) => l.logLevel === "WARN" && /Redis unreachable/.test(String(l.message)))).toBe(true)
    }

    // --- Redis is back: one leader, every instance subscribed again, and one poller.
    await Effect.runPromise(redis.start)
    const restartedAt = performance.now()
    const resubscribed = await waitFor(
      () =>
        cluster.inspector.send("PUBSUB", ["NUMSUB", UPDATES_CHANNEL]).then(
          (r) => (Number((r as [string, number])[1]) >= 3 ? performance.now() - restartedAt : undefined),
          () => undefined
        ),
      "three instances subscribed to dashcast:updates again",
      8_000
    )
    await waitFor(cluster.leader, "a leader in dashcast:leader", 8_000)
    // Once the lease is settled (one lease step), count a few intervals.
    await Bun.sleep(LEASE_MS / 3 + 200)
    const settledIndex = fake.requests().length
    const settledFrames = clients.map((c) => c.frames().length)
    const windowMs = 3 * INTERVAL_MS
    await Bun.sleep(windowMs)
    const afterRounds = perEndpoint(fake.requests().slice(settledIndex))
    // Every instance asked for the hourly calls while on its own, if it ever needed to: none are due now.
    expect(afterRounds).toMatchObject({ market_chart: 0, fear_greed: 0 })
    for (const endpoint of ROUND_ENDPOINTS) {
      expect(afterRounds[endpoint], `${endpoint} calls in ${windowMs} ms after Redis returned`).toBeGreaterThanOrEqual(2)
      expect(afterRounds[endpoint], `${endpoint} calls in ${windowMs} ms after Redis returned`).toBeLessThanOrEqual(4)
    }
    const leader = await cluster.leader()
    expect(leader).toBeDefined()
    // Every client gets the leader's updates through the channel again: the same frames everywhere.
    const relayed = await nextUpdate(clients[0]!, settledFrames[0]!, "an update after Redis returned")
    const upTo = relayed.message.seq + 1
    await Promise.all(clients.map((c, k) => c.waitFor((m) => m.type === "dashboard_update" && m.seq >= upTo, { label: `seq ${upTo} on client ${k}`, after: settledFrames[k]!, timeoutMs: 4_000 })))
    try {
      expectSameUpdates(clients, relayed.message.seq, upTo)
      expectIncreasing(clients)
    } catch (error) {
      // seq, source initial and arrival (ms after Redis stopped) of every update, per instance.
      for (const [k, c] of clients.entries()) {
        const app = cluster.appOf(k)
        const role = [app === leaderBefore && "leader before", app === leader && "leader after", app === follower && "forced"].filter(Boolean).join(", ")
        console.log(`client ${k} (${role}): ${updatesOf(c).map((f) => `${f.message.seq}${f.message.source[0]}@${Math.round(f.at - stoppedAt)}`).join(" ")}`)
      }
      throw error
    }
    expect(await Promise.all(apps.map(healthy))).toEqual([200, 200, 200])
    console.log(
      `cluster e2e: during a ${outageMs} ms outage ${outageRounds.coins_markets} rounds (3 pollers); ${afterRounds.coins_markets} in ${windowMs} ms after; ` +
        `all three subscribed again ${resubscribed.toFixed(0)} ms after Redis restarted`
    )
  }, 45_000)

  it("every instance publishes each currency's frame on its own topic: the same seq everywhere, each currency's own values", async () => {
    const assets = ["bitcoin", "ethereum"]
    const currencies = ["usd", "eur"] as const
    await using cluster = await startCluster({ env: { ASSETS: assets.join(","), CURRENCIES: currencies.join(",") }, currencies })
    const { clients, fake } = cluster
    const currencyOf = (k: number) => currencies[k % 2]!
    await Promise.all(clients.map((c, k) => nextUpdate(c, 0, `a first update on client ${k}`, 8_000)))
    const leader = await waitFor(cluster.leader, "an instance named in dashcast:leader")
    // Two rounds from now, on every client of every instance.
    const from = Math.max(...clients.map((c) => updatesOf(c).at(-1)!.message.seq)) + 1
    const to = from + 1
    await Promise.all(clients.map((c, k) => c.waitFor((m) => m.type === "dashboard_update" && m.seq >= to, { label: `seq ${to} on client ${k}`, timeoutMs: 3 * INTERVAL_MS + 2_000 })))
    expectSameUpdates(clients, from, to)

    const values = fake.values()
    // (The fake's prices differ per currency, so a frame in the wrong currency cannot pass.)
    expect(values.assets["bitcoin"]?.prices["eur"]).not.toBe(values.assets["bitcoin"]?.prices["usd"])
    for (const [k, client] of clients.entries()) {
      const currency = currencyOf(k)
      const where = `client ${k} (${currency}, ${cluster.appOf(k) === leader ? "leader" : "follower"})`
      // Only its own currency, ever: the welcome and every update.
      expect(client.messages().filter((m) => m.type === "welcome" || m.type === "dashboard_update").map((m) => m.currency), where)
        .toEqual(client.messages().filter((m) => m.type === "welcome" || m.type === "dashboard_update").map(() => currency))
      for (const frame of updatesOf(client).filter((f) => f.message.seq >= from && f.message.seq <= to)) {
        expect(frame.message.assets.map(assetOf), `${where}, seq ${frame.message.seq}`).toEqual(assets.map((id) => expectedAsset(values, id, currency)))
        expect(frame.message.market.total_market_cap, where).toBe(values.totals[currency]?.marketCap)
        expect(frame.message.data?.btc_price, where).toBe(values.assets["bitcoin"]?.prices[currency])
      }
    }
  }, 45_000)

  it("a 429 the leader got holds every instance: a force update on a follower inside its Retry-After is refused and nothing is sent", async () => {
    await using cluster = await startCluster()
    const { clients, fake } = cluster
    await Promise.all(clients.map((c, k) => nextUpdate(c, 0, `a first update on client ${k}`, 8_000)))
    const leader = await waitFor(cluster.leader, "an instance named in dashcast:leader")
    // The leader's next round gets CoinGecko's 429 with an hour's wait. (Frames from before are not
    // its answer: under load an earlier round may have failed on its own.)
    const before = clients[0]!.frames().length
    fake.fail("coins_markets", Fault.RateLimited({ retryAfter: "3600" }), { times: 1 })
    await fake.waitForRequests(fake.requestsTo("coins_markets").length + 1, "coins_markets")
    const error = await clients[0]!.waitFor((m) => m.type === "error", { label: "the error after the 429", timeoutMs: 4_000, after: before })
    if (error.message.type !== "error") throw new Error("unreachable")
    expect(error.message.retry_after).toBeGreaterThan(3_500)
    const sent = fake.requests().length
    await Bun.sleep(MIN_GAP_MS + 200)
    for (const app of cluster.apps.filter((a) => a !== leader)) {
      const refused = await forceUpdate(app)
      expect(refused.status).toBe(429)
      expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(3_500)
    }
    // Nor does any instance's schedule call meanwhile.
    await Bun.sleep(2 * INTERVAL_MS)
    expect(fake.requests().length).toBe(sent)
  }, 45_000)
})
