/**
 * `npm run bench:history`: how much storage the price history takes for 50 assets in 3 currencies
 * after 30 simulated days, in each store, through the stores' own code (src/history/). The first
 * round seeds every series as the live client does (a 168-point hourly sparkline per asset and
 * currency, 59 daily closes per asset in the first currency); then a round every UPDATE_INTERVAL
 * (10 minutes, the default) for 30 days adds one live price per series. The worst case, updates a
 * minute apart or faster, differs only in the minute tier, which keeps 25 hours: the last 25
 * simulated hours are then replayed at one round a minute. Prints a markdown table.
 *
 * Needs `redis-server` on PATH for the Redis rows (skipped otherwise). Takes a few minutes.
 */
import { Context, Effect, Exit, Layer, Redacted, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { RedisClient } from "bun"
import { HistoryStore, type HistoryWrite } from "../src/history/HistoryStore.js"
import { RedisHistoryStoreLive } from "../src/history/RedisHistoryStore.js"
import { SqliteHistoryStoreLive } from "../src/history/SqliteHistoryStore.js"
import { DAY_TIER, HOUR_TIER, MAX_POINTS_PER_SERIES, TIERS } from "../src/history/Tiers.js"
import { makeRedisServer } from "../test/support/RedisServer.js"

const ASSETS = Array.from({ length: 50 }, (_, i) => `coin-${String(i).padStart(2, "0")}`)
const CURRENCIES = ["usd", "eur", "jpy"]
const MINUTE = 60_000
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR
const DAYS = 30
const T0 = Date.parse("2026-01-01T00:00:00Z")

/** A deterministic walk per series, so both stores get the same prices. */
const priceAt = (series: number, t: number) => 10 + series + Math.sin(t / (7 * HOUR) + series) * (1 + series / 10)

const seriesList = CURRENCIES.flatMap((currency, c) => ASSETS.map((asset, a) => ({ asset, currency, n: c * ASSETS.length + a })))

/** The first round: every series' sparkline, every asset's closes in the first currency, and the live prices. */
const firstRound = (): ReadonlyArray<HistoryWrite> => [
  ...seriesList.map(({ asset, currency, n }): HistoryWrite => ({
    asset,
    currency,
    mode: "seed",
    tiers: [HOUR_TIER, DAY_TIER],
    points: Array.from({ length: 168 }, (_, i) => [T0 - (167 - i) * HOUR, priceAt(n, T0 - (167 - i) * HOUR)] as const)
  })),
  ...ASSETS.map((asset, a): HistoryWrite => ({
    asset,
    currency: CURRENCIES[0] ?? "usd",
    mode: "seed",
    tiers: [DAY_TIER],
    points: Array.from({ length: 59 }, (_, i) => [T0 - (59 - i) * DAY, priceAt(a, T0 - (59 - i) * DAY)] as const)
  })),
  ...liveRound(T0)
]

const liveRound = (t: number): ReadonlyArray<HistoryWrite> =>
  seriesList.map(({ asset, currency, n }) => ({ asset, currency, mode: "live", tiers: TIERS, points: [[t, priceAt(n, t)] as const] }))

/** The round times: every `interval` for 30 days; for the worst case, then every minute over the last 25 hours. */
const roundTimes = (interval: number, worst: boolean): ReadonlyArray<number> => {
  const end = T0 + DAYS * DAY
  const times: Array<number> = []
  for (let t = T0 + interval; t <= end; t += interval) times.push(t)
  if (worst) for (let t = end - 25 * HOUR; t <= end; t += MINUTE) times.push(t)
  return [...new Set(times)].sort((a, b) => a - b)
}

const simulate = (store: HistoryStore["Type"], times: ReadonlyArray<number>) =>
  Effect.gen(function*() {
    yield* store.write(firstRound(), T0)
    for (const t of times) yield* store.write(liveRound(t), t)
    yield* store.trim(times.at(-1) ?? T0)
  })

const fileSize = (file: string) => ["", "-wal", "-shm"].reduce((sum, suffix) => sum + (fs.existsSync(file + suffix) ? fs.statSync(file + suffix).size : 0), 0)

const measureSqlite = (worst: boolean) =>
  Effect.gen(function*() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dashcast-history-size-"))
    const file = path.join(dir, "cache.sqlite")
    const scope = yield* Scope.make()
    const store = Context.get(yield* Layer.buildWithScope(SqliteHistoryStoreLive({ path: file }), scope), HistoryStore)
    const started = performance.now()
    yield* simulate(store, roundTimes(10 * MINUTE, worst))
    const seconds = (performance.now() - started) / 1000
    yield* Scope.close(scope, Exit.void)
    // What the file takes once the write-ahead log is folded in, and after VACUUM (no free pages).
    const db = new (yield* Effect.promise(() => import("bun:sqlite"))).Database(file)
    db.run("PRAGMA wal_checkpoint(TRUNCATE)")
    const rows = (db.query("SELECT COUNT(*) AS n FROM history_v1").get() as { n: number }).n
    const before = fileSize(file)
    db.run("VACUUM")
    db.run("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    const after = fileSize(file)
    fs.rmSync(dir, { recursive: true, force: true })
    return { rows, bytes: before, vacuumed: after, seconds }
  })

const measureRedis = (worst: boolean) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const redis = yield* Scope.extend(makeRedisServer, scope)
    const store = Context.get(yield* Layer.buildWithScope(RedisHistoryStoreLive({ url: Redacted.make(redis.url), timeout: "30 seconds" }), scope), HistoryStore)
    const started = performance.now()
    yield* simulate(store, roundTimes(10 * MINUTE, worst))
    const seconds = (performance.now() - started) / 1000
    const client = new RedisClient(redis.url)
    yield* Effect.promise(() => client.connect())
    const keys = (yield* Effect.promise(() => client.send("KEYS", ["dashcast:history:*"]))) as Array<string>
    let bytes = 0
    let rows = 0
    for (const key of keys) {
      bytes += Number(yield* Effect.promise(() => client.send("MEMORY", ["USAGE", key, "SAMPLES", "0"])))
      rows += Number(yield* Effect.promise(() => client.send("ZCARD", [key])))
    }
    client.close()
    yield* Scope.close(scope, Exit.void)
    return { rows, bytes, keys: keys.length, seconds }
  })

const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`

const program = Effect.gen(function*() {
  const series = seriesList.length
  const lines = [
    `50 assets × 3 currencies = ${series} series, 30 simulated days; at most ${MAX_POINTS_PER_SERIES} points per series (${series * MAX_POINTS_PER_SERIES} in all)`,
    "",
    "| store | updates | points | size | per point | simulated in |",
    "| --- | --- | ---: | ---: | ---: | ---: |"
  ]
  for (const worst of [false, true]) {
    const label = worst ? "10 min, then every minute (worst case)" : "every 10 min (default)"
    const sqlite = yield* measureSqlite(worst)
    lines.push(
      `| SQLite table | ${label} | ${sqlite.rows} | ${mib(sqlite.bytes)} (${mib(sqlite.vacuumed)} after VACUUM) | ${
        Math.round(sqlite.bytes / sqlite.rows)
      } B | ${sqlite.seconds.toFixed(0)} s |`
    )
    console.error(lines.at(-1))
    if (Bun.which("redis-server") === null) continue
    const redis = yield* measureRedis(worst)
    lines.push(
      `| Redis sorted sets (${redis.keys} keys) | ${label} | ${redis.rows} | ${mib(redis.bytes)} (MEMORY USAGE) | ${
        Math.round(redis.bytes / redis.rows)
      } B | ${redis.seconds.toFixed(0)} s |`
    )
    console.error(lines.at(-1))
  }
  console.log(lines.join("\n"))
})

await Effect.runPromise(program)
