/**
 * The price history survives what kills processes (issue 13): the compiled binary over SQLite is
 * killed with `kill -9` and started again on the same file; two clustered instances over a real
 * Redis are both killed and two new ones started. Every series (asset × currency × range) is served
 * again with the same points, and in the cluster every instance serves the same history. Prices
 * come from the fake upstream, which seeds each series with a 7-day hourly sparkline.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { RedisClient } from "bun"
import { Effect, Exit, Scope } from "effect"
import { type RunningBinary, startBinary, stopAllBinaries, waitFor } from "../support/Binary.js"
import { startFakeUpstream } from "../support/FakeUpstream.js"
import { makeRedisServer } from "../support/RedisServer.js"
import { hasTool } from "../support/SystemTools.js"

const HOUR = 3_600_000
const SERIES = [
  "asset=bitcoin&currency=usd&range=24h",
  "asset=bitcoin&currency=usd&range=7d",
  "asset=bitcoin&currency=usd&range=30d",
  "asset=ethereum&currency=eur&range=7d",
  "asset=solana&currency=eur&range=30d"
] as const
const WATCHLIST = { ASSETS: "bitcoin,ethereum,solana", CURRENCIES: "usd,eur" }

type Points = ReadonlyArray<readonly [number, number]>

const historyOf = async (app: RunningBinary, query: string): Promise<Points> => {
  const response = await app.fetch(`/api/history?${query}`)
  expect(response.status, query).toBe(200)
  return ((await response.json()) as { points: Points }).points
}

/** Every series as one instance serves it now. */
const snapshotOf = async (app: RunningBinary) =>
  Object.fromEntries(await Promise.all(SERIES.map(async (query) => [query, await historyOf(app, query)] as const)))

/** Waits until the instance serves the seeded week of every series. */
const seeded = (app: RunningBinary) =>
  waitFor(async () => ((await historyOf(app, "asset=solana&currency=eur&range=7d")).length >= 168 ? true : undefined), "the seeded week", 15_000)

/**
 * The points of `series` that no round can still change: older than the hour the clock is in
 * (a new round replaces the newest point of its hour), and within `since` (the window moves on).
 */
const settled = (points: Points, since: number) => {
  const newest = Math.floor((Date.now() - 60_000) / HOUR) * HOUR
  return points.filter(([t]) => t >= since && t < newest)
}

/** Every series of `before` is in `after` with the same settled points (and a week of them at least). */
const expectSameHistory = (before: Record<string, Points>, after: Record<string, Points>) => {
  for (const query of SERIES) {
    const since = after[query]?.[0]?.[0] ?? 0
    const kept = settled(before[query] ?? [], since)
    expect(kept.length, query).toBeGreaterThanOrEqual(query.endsWith("24h") ? 20 : 160)
    expect(settled(after[query] ?? [], since), query).toEqual(kept)
  }
}

afterAll(() => stopAllBinaries())

describe("the price history survives", () => {
  it.live("kill -9 of the binary over SQLite: the same file serves the same charts", () =>
    Effect.promise(async () => {
      const fake = startFakeUpstream()
      try {
        const env = { ...fake.env, ...WATCHLIST, UPDATE_INTERVAL: "2 seconds", LOG_LEVEL: "warn" }
        const first = await startBinary({ env })
        await seeded(first)
        const before = await snapshotOf(first)
        // The first currency reaches a month back with the daily closes; the other has the week it was given.
        expect(before["asset=bitcoin&currency=usd&range=30d"]?.length).toBeGreaterThanOrEqual(168 + 20)
        expect(before["asset=solana&currency=eur&range=30d"]?.length).toBeLessThanOrEqual(170)
        await first.kill9()

        const second = await startBinary({ env: first.env })
        await second.ready()
        await seeded(second)
        expectSameHistory(before, await snapshotOf(second))
        await second.stop()
      } finally {
        await fake.stop()
      }
    }), 60_000)

  it.live.skipIf(!hasTool("redis-server"))("a restart of every instance of a cluster over Redis: every new instance serves the same history", () =>
    Effect.promise(async () => {
      const scope = Effect.runSync(Scope.make())
      const fake = startFakeUpstream()
      try {
        const redis = await Effect.runPromise(Scope.extend(makeRedisServer, scope))
        const env = {
          ...fake.env,
          ...WATCHLIST,
          REDIS_URL: redis.url,
          UPDATE_INTERVAL: "2 seconds",
          LEASE_TTL: "3 seconds",
          CACHE_PATH: ":memory:",
          LOG_LEVEL: "warn"
        }
        const apps = await Promise.all([startBinary({ env }), startBinary({ env })])
        await Promise.all(apps.map((app) => app.ready()))
        await Promise.all(apps.map(seeded))
        // Both read the shared L2: the same answer from either, whichever instance wrote it.
        const [a, b] = await Promise.all(apps.map(snapshotOf))
        for (const query of SERIES) {
          const since = Math.max(a?.[query]?.[0]?.[0] ?? 0, b?.[query]?.[0]?.[0] ?? 0)
          expect(settled(b?.[query] ?? [], since), query).toEqual(settled(a?.[query] ?? [], since))
        }
        // One sorted set per asset, currency and tier.
        const inspector = new RedisClient(redis.url)
        await inspector.connect()
        const keys = (await inspector.send("KEYS", ["dashcast:history:*"])) as Array<string>
        inspector.close()
        expect(keys).toHaveLength(3 * 2 * 3)

        // Every instance dies at once; two new ones come up over the same Redis.
        await Promise.all(apps.map((app) => app.kill9()))
        const restarted = await Promise.all([startBinary({ env }), startBinary({ env })])
        await Promise.all(restarted.map((app) => app.ready()))
        for (const app of restarted) {
          await seeded(app)
          expectSameHistory(a ?? {}, await snapshotOf(app))
        }
        await Promise.all(restarted.map((app) => app.stop()))
      } finally {
        await fake.stop()
        await Effect.runPromise(Scope.close(scope, Exit.void))
      }
    }), 90_000)
})
