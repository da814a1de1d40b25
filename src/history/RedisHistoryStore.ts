/**
 * The price history of a cluster, in the shared Redis: one sorted set per series and tier,
 * `dashcast:history:<currency>:<asset>:<tier>`, scored by the point's time, each member
 * `<epoch ms>:<price>`. A small Lua script keeps one point per bucket atomically, so two writers
 * can never leave two points in one bucket; a round is one call per 64 series tiers. Every key expires a tier's retention after its last
 * write, so the series of an asset that is no longer watched leave Redis by themselves.
 */
import { RedisClient } from "bun"
import { Array as Arr, Clock, Duration, Effect, Layer, Redacted } from "effect"
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

// Network timeouts are real time, also when a test drives the Clock.
const realClock = Clock.make()

const locationOf = (url: string): string => (URL.canParse(url) ? `${new URL(url).protocol}//${new URL(url).host}` : "redis")

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
      const timeout = Duration.decode(options.timeout ?? "1 second")
      const connectTimeout = Duration.decode(options.connectTimeout ?? "2 seconds")
      const scope = yield* Effect.scope
      // Set when the client has used up its reconnection attempts and will not try again by itself.
      let gaveUp = false

      const client = yield* Effect.acquireRelease(
        Effect.try({
          try: () =>
            new RedisClient(Redacted.value(options.url), {
              // Calls while disconnected fail at once instead of piling up.
              enableOfflineQueue: false,
              autoReconnect: true,
              maxRetries: 1_000_000,
              connectionTimeout: Duration.toMillis(connectTimeout)
            }),
          catch: (cause) => new HistoryStoreError({ store: "redis", operation: "open", reason: "Rejected", cause })
        }),
        (client) =>
          Effect.sync(() => {
            client.onclose = null
            client.close()
          })
      )
      client.onconnect = () => {
        gaveUp = false
      }
      client.onclose = () => {
        gaveUp = true
      }
      const connect = Effect.tryPromise(() => client.connect()).pipe(Effect.ignore)
      yield* connect.pipe(Effect.timeout(connectTimeout), Effect.ignore, Effect.withClock(realClock))

      const call = <A>(operation: "write" | "read", run: () => Promise<A>) =>
        Effect.gen(function*() {
          if (gaveUp && !client.connected) {
            gaveUp = false
            yield* Effect.forkIn(connect, scope)
          }
          return yield* Effect.tryPromise({
            try: run,
            catch: (cause) => new HistoryStoreError({ store: "redis", operation, reason: client.connected ? "Rejected" : "Unavailable", cause })
          }).pipe(
            Effect.timeoutFail({
              duration: timeout,
              onTimeout: () =>
                new HistoryStoreError({ store: "redis", operation, reason: "Timeout", cause: new Error(`no reply within ${Duration.format(timeout)}`) })
            }),
            Effect.withClock(realClock)
          )
        })

      return HistoryStore.of({
        kind: "redis",
        location: locationOf(Redacted.value(options.url)),
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
