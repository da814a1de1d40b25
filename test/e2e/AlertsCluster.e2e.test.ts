/**
 * Alerts in a cluster (issue 15, acceptance): three compiled binaries over a real redis-server and
 * the fake upstream. One crossing gives exactly one delivery, made by the leader, and every
 * instance's clients get the alert frame; when the leader is killed with kill -9 right after the
 * crossing (its delivery in flight, or the snapshot just published), the new leader finishes it
 * with the same webhook-id and nothing fires twice. Rules are made and rounds forced on followers.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { RedisClient } from "bun"
import { Effect, Exit, Scope } from "effect"
import { LEADER_KEY } from "../../src/cluster/RedisCluster.js"
import { ensureBinary, isType, openWs, type RunningBinary, startBinary, stopAllBinaries, waitFor, type WsClient } from "../support/Binary.js"
import { type FakeUpstream, startFakeUpstream } from "../support/FakeUpstream.js"
import { makeRedisServer } from "../support/RedisServer.js"
import { hasTool } from "../support/SystemTools.js"
import { startWebhookReceiver, type WebhookReceiver } from "../support/WebhookReceiver.js"

const TOKEN = "alerts-cluster-token"
const LEASE_MS = 3_000
const json = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" }

interface AlertCluster extends AsyncDisposable {
  readonly fake: FakeUpstream
  readonly receiver: WebhookReceiver
  readonly apps: ReadonlyArray<RunningBinary>
  /** One client per instance. */
  readonly clients: ReadonlyArray<WsClient>
  readonly leader: () => Promise<RunningBinary | undefined>
}

/** A port taken meanwhile makes the binary exit with "cannot listen": one more try (see Cluster.e2e.test.ts). */
const startOnFreePort = async (env: Record<string, string>): Promise<RunningBinary> => {
  try {
    return await startBinary({ env })
  } catch (error) {
    if (!/exited with 1 before answering|cannot listen/.test(String(error))) throw error
    return startBinary({ env })
  }
}

const startCluster = async (): Promise<AlertCluster> => {
  const scope = Effect.runSync(Scope.make())
  const redis = await Effect.runPromise(Scope.extend(makeRedisServer, scope))
  const fake = startFakeUpstream()
  const receiver = startWebhookReceiver()
  const inspector = new RedisClient(redis.url, { autoReconnect: true, enableOfflineQueue: false })
  await inspector.connect()
  const env = {
    ...fake.env,
    REDIS_URL: redis.url,
    ADMIN_TOKEN: TOKEN,
    // Rounds are forced by the tests; the schedule stays out of the way.
    UPDATE_INTERVAL: "1 hour",
    LEASE_TTL: `${LEASE_MS / 1000} seconds`,
    MIN_FETCH_GAP: "0 millis",
    CACHE_PATH: ":memory:",
    WEBHOOK_ALLOW_PRIVATE: "true",
    WEBHOOK_RETRY_DELAY: "500 millis",
    LOG_LEVEL: "debug"
  }
  const apps = await Promise.all([0, 1, 2].map(() => startOnFreePort(env)))
  started.push(...apps)
  await Promise.all(apps.map((app) => app.ready()))
  const clients = apps.map((app) => openWs(app.wsUrl))
  await Promise.all(clients.map((c) => c.waitFor(isType("welcome"))))
  const leader = async () => {
    const id = await inspector.get(LEADER_KEY).catch(() => null)
    const pid = id === null ? undefined : Number(id.split(":").at(-2))
    return apps.find((app) => app.pid === pid)
  }
  await waitFor(leader, "a leader in dashcast:leader", 8_000)
  return {
    fake,
    receiver,
    apps,
    clients,
    leader,
    [Symbol.asyncDispose]: async () => {
      for (const client of clients) client.close()
      await Promise.all(apps.map((app) => app.kill9()))
      inspector.close()
      await receiver.stop()
      await fake.stop()
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  }
}

/** Every instance started and every secret made, to look for the secrets in every line written. */
const started: Array<RunningBinary> = []
const secrets: Array<string> = []

const createRule = async (app: RunningBinary, receiver: WebhookReceiver, threshold: number) => {
  const response = await app.fetch("/api/alerts", {
    method: "POST",
    headers: json,
    body: JSON.stringify({ asset: "bitcoin", currency: "usd", condition: "price_above", threshold, webhook_url: receiver.url() })
  })
  const body = (await response.json()) as { id: string; secret: string }
  expect(response.status).toBe(201)
  secrets.push(body.secret)
  receiver.expectSecret("/hook", body.secret)
  return body
}

const setBitcoin = (fake: FakeUpstream, usd: number) => {
  const bitcoin = fake.values().assets["bitcoin"]
  if (bitcoin === undefined) throw new Error("the fake upstream does not know bitcoin")
  fake.setAsset("bitcoin", { prices: { ...bitcoin.prices, usd } })
}

const roundAt = async (app: RunningBinary, fake: FakeUpstream, usd: number): Promise<number> => {
  setBitcoin(fake, usd)
  const response = await app.fetch("/api/dashboard/refresh", { method: "POST", headers: { authorization: `Bearer ${TOKEN}` } })
  expect(response.status).toBe(200)
  return ((await response.json()) as { seq: number }).seq
}

/** Webhooks the receiver accepted (2xx), by webhook-id. */
const accepted = (receiver: WebhookReceiver) => new Set(receiver.received().filter((r) => r.answer === 200).map((r) => r.id))

const deliveredBy = (apps: ReadonlyArray<RunningBinary>) =>
  apps.filter((app) => app.logs().some((l) => l.message === "webhook delivered"))

/** The instances that logged a delivery, once one has (the log follows the receiver's answer). */
const deliverers = (apps: ReadonlyArray<RunningBinary>) =>
  waitFor(() => (deliveredBy(apps).length > 0 ? deliveredBy(apps) : undefined), "a \"webhook delivered\" log line")

beforeAll(() => ensureBinary(), 120_000)
afterAll(async () => {
  try {
    // No secret in any line any instance wrote (debug logs, stderr included).
    for (const app of started) {
      for (const line of app.output()) {
        for (const secret of secrets) expect(line.text).not.toContain(secret.slice("whsec_".length))
        expect(line.text).not.toContain("whsec_")
      }
    }
  } finally {
    await stopAllBinaries()
  }
})

describe.skipIf(!hasTool("redis-server"))("alerts in a three-instance cluster over Redis", () => {
  it("one crossing: exactly one delivery, by the leader; the alert frame on every instance", async () => {
    await using cluster = await startCluster()
    const { apps, clients, fake, receiver } = cluster
    const leader = await waitFor(cluster.leader, "the leader")
    const [followerA, followerB] = apps.filter((app) => app !== leader)
    const rule = await createRule(followerA!, receiver, 70_000)
    await roundAt(followerB!, fake, 69_000)
    const crossing = await roundAt(followerB!, fake, 71_000)
    const [delivery] = await receiver.waitFor(1)
    expect(delivery?.verified).toMatchObject({ ok: true, payload: { data: { alert_id: rule.id, seq: crossing, value: 71_000 } } })
    const frames = await Promise.all(clients.map((c) => c.waitFor(isType("alert"))))
    expect(frames.map((f) => f.message)).toEqual(frames.map(() => expect.objectContaining({ id: delivery?.id, seq: crossing })))
    // Above again, on another instance: nothing more, from anyone.
    await roundAt(followerA!, fake, 72_000)
    await Bun.sleep(1_500)
    expect(receiver.received().map((r) => r.id)).toEqual([delivery?.id])
    expect(await deliverers(apps)).toEqual([leader])
    for (const client of clients) expect(client.messages().filter((m) => m.type === "alert").length).toBe(1)
  }, 60_000)

  it("kill -9 of the leader while its delivery is in flight: the new leader sends it again with the same webhook-id; nothing fires twice", async () => {
    await using cluster = await startCluster()
    const { apps, fake, receiver } = cluster
    const leader = await waitFor(cluster.leader, "the leader")
    const followers = apps.filter((app) => app !== leader)
    await createRule(followers[0]!, receiver, 70_000)
    receiver.answer("/hook", "hang")
    await roundAt(followers[1]!, fake, 69_000)
    const crossing = await roundAt(followers[1]!, fake, 71_000)
    const [lost] = await receiver.waitFor(1)
    await leader.kill9()
    const [, resent] = await receiver.waitFor(2, undefined, LEASE_MS + 10_000)
    expect(lost?.answer).toBe("hang")
    expect(resent?.answer).toBe(200)
    expect(resent?.id).toBe(lost?.id)
    expect(resent?.verified).toMatchObject({ ok: true, payload: { data: { seq: crossing } } })
    const newLeader = await waitFor(cluster.leader, "a new leader")
    expect(await deliverers(apps)).toEqual([newLeader])
    // The price stays above: no new firing on the new leader's watch.
    await roundAt(followers[0]!, fake, 72_000)
    await Bun.sleep(1_500)
    expect(receiver.received().length).toBe(2)
    expect(accepted(receiver)).toEqual(new Set([lost?.id]))
  }, 60_000)

  it("kill -9 of the leader right after the crossing's snapshot is published: exactly one webhook is delivered", async () => {
    await using cluster = await startCluster()
    const { apps, clients, fake, receiver } = cluster
    const leader = await waitFor(cluster.leader, "the leader")
    const followers = apps.filter((app) => app !== leader)
    const watcher = clients[apps.indexOf(followers[0]!)]!
    await createRule(followers[0]!, receiver, 70_000)
    await roundAt(followers[1]!, fake, 69_000)
    // The crossing, forced on a follower; the leader dies as soon as the snapshot reaches a client.
    setBitcoin(fake, 71_000)
    const forced = followers[1]!.fetch("/api/dashboard/refresh", { method: "POST", headers: { authorization: `Bearer ${TOKEN}` } })
    const update = await watcher.waitFor((m) => m.type === "dashboard_update" && m.assets.some((a) => a.id === "bitcoin" && a.price === 71_000))
    await leader.kill9()
    const killedAfter = receiver.received().length
    expect((await forced).status).toBe(200)
    await receiver.waitFor(1, undefined, LEASE_MS + 10_000)
    // Whoever delivered it (the old leader just before dying, or the new one), once more at most
    // with the same id if the old one died between the receiver's answer and its record of it.
    await Bun.sleep(2_000)
    const ids = new Set(receiver.received().map((r) => r.id))
    expect(ids.size).toBe(1)
    expect(receiver.received().length).toBeLessThanOrEqual(2)
    for (const r of receiver.received()) {
      expect(r.verified).toMatchObject({ ok: true, payload: { data: { seq: update.message.type === "dashboard_update" ? update.message.seq : -1 } } })
    }
    // Still above: nothing more.
    await roundAt(followers[0]!, fake, 72_500)
    await Bun.sleep(1_500)
    expect(new Set(receiver.received().map((r) => r.id)).size).toBe(1)
    const newLeader = await waitFor(cluster.leader, "a new leader")
    console.log(
      `alerts cluster e2e: the old leader ${leader.logs().some((l) => l.message === "alert fired") ? "had" : "had not"} fired; ${killedAfter} webhook(s) had arrived when it was killed; ${receiver.received().length} in all, delivered by ${
        (await deliverers(apps)).map((a) => (a === leader ? "the old leader" : a === newLeader ? "the new leader" : "a follower")).join(", ")
      }`
    )
  }, 60_000)
})
