/**
 * The price history of a cluster, in the shared Redis: one sorted set per series and tier,
 * `dashcast:history:<currency>:<asset>:<tier>`, scored by the point's time, each member
 * `<epoch ms>:<price>`. A small Lua script keeps one point per bucket atomically, so two writers
 * can never leave two points in one bucket; a round is one call per 64 series tiers. Every key expires a tier's retention after its last
 * write, so the series of an asset that is no longer watched leave Redis by themselves.
 */
import { Array as Arr, type Duration, Effect, Layer, type Redacted } from "effect"
import { locationOf, redisConnection } from "../cache/RedisConnection.js"
import { HistoryStore, HistoryStoreError } from "./HistoryStore.js"
import { bucketOf, keepFrom, type Point, type Tier } from "./Tiers.js"

export const HISTORY_KEY_PREFIX = "dashcast:history:"

export const historyKey = (currency: string, asset: string, tier: Tier) => `${HISTORY_KEY_PREFIX}${currency}:${asset}:${tier.name}`

export interface RedisHistoryOptions {
  readonly url: Redacted.Redacted<string>
  /** Longest wait for one command before it counts as failed. */
  readonly timeout?: Duration.DurationInput
  /** Longest wait for the first connection at start-up; Redis down at start is not fatal. */
  readonly connectTimeout?: Duration.DurationInput
}

/**
 * KEYS: series tiers. ARGV, for each key in turn: mode (`live` or `seed`), the oldest score kept,
 * the key's time to live (ms), the number of points, then four values per point: its bucket's
 * first and next score, its time, its member. A bucket holds one point: a live point replaces an
 * older one, a seed fills only an empty bucket. One call for many keys: a round is a few calls.
 */
const WRITE_SCRIPT = `
local a = 1
for k = 1, #KEYS do
  local key = KEYS[k]
  local live = ARGV[a] == 'live'
  local oldest, ttl, n = ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  a = a + 4
  for i = 1, n do
    local lo, hi, t, member = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
    a = a + 4
    local held = redis.call('ZRANGEBYSCORE', key, lo, '(' .. hi, 'WITHSCORES')
    if #held == 0 then
      redis.call('ZADD', key, t, member)
    elseif live and tonumber(held[#held]) <= tonumber(t) then
      redis.call('ZREMRANGEBYSCORE', key, lo, '(' .. hi)
      redis.call('ZADD', key, t, member)
    end
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. oldest)
  redis.call('PEXPIRE', key, ttl)
end
return 0
`

/** Series tiers per call: a round of a large watchlist is a few calls, none holding Redis long. */
const KEYS_PER_CALL = 64

/** `<t>:<price>`; a member that does not parse (not ours) is left out. */
const parseMember = (member: string): Point | undefined => {
  const colon = member.indexOf(":")
  const t = Number(member.slice(0, colon))
  const price = Number(member.slice(colon + 1))
  return colon > 0 && Number.isSafeInteger(t) && Number.isFinite(price) && price > 0 ? [t, price] : undefined
}

export const RedisHistoryStoreLive = (options: RedisHistoryOptions): Layer.Layer<HistoryStore, HistoryStoreError> =>
  Layer.scoped(
    HistoryStore,
    Effect.gen(function*() {
      const { call, client } = yield* redisConnection(
        { url: options.url, timeout: options.timeout ?? "1 second", connectTimeout: options.connectTimeout ?? "2 seconds" },
        (operation: "open" | "write" | "read", reason, cause) => new HistoryStoreError({ store: "redis", operation, reason, cause })
      )

      return HistoryStore.of({
        kind: "redis",
        location: locationOf(options.url),
        write: Effect.fn("RedisHistoryStore.write")(function*(writes, now) {
          const parts = writes.flatMap((write) =>
            write.tiers.map((tier) => {
              const oldest = keepFrom(tier, now)
              const values: Array<string> = []
              for (const [t, price] of write.points) {
                if (t < oldest) continue
                const lo = bucketOf(tier, t) * tier.step
                values.push(String(lo), String(lo + tier.step), String(t), `${t}:${price}`)
              }
              return {
                key: historyKey(write.currency, write.asset, tier),
                args: [write.mode, String(oldest), String(tier.keep), String(values.length / 4), ...values]
              }
            })
          )
          // Bun pipelines the calls made at once.
          yield* Effect.forEach(
            Arr.chunksOf(parts, KEYS_PER_CALL),
            (chunk) =>
              call("write", () =>
                client.send("EVAL", [WRITE_SCRIPT, String(chunk.length), ...chunk.map((p) => p.key), ...chunk.flatMap((p) => p.args)])),
            { concurrency: "unbounded", discard: true }
          )
        }),
        read: Effect.fn("RedisHistoryStore.read")(function*(series, tiers, from) {
          return yield* Effect.forEach(
            series,
            ({ asset, currency }) =>
              Effect.forEach(
                tiers,
                (tier) =>
                  Effect.map(
                    call("read", () => client.zrangebyscore(historyKey(currency, asset, tier), String(from), "+inf")),
                    (members) => members.flatMap((member) => {
                      const point = parseMember(member)
                      return point === undefined ? [] : [point]
                    })
                  ),
                { concurrency: "unbounded" }
              ),
            { concurrency: "unbounded" }
          )
        }),
        // Written series are trimmed as they are written; the others expire.
        trim: () => Effect.void
      })
    })
  )
