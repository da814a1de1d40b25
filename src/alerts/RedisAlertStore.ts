/**
 * Alerts in the cluster's Redis (`REDIS_URL`), shared by every instance: hashes of rules, states and
 * pending firings, and a capped list of attempts per rule. Every change that must be atomic is one
 * Lua script (a compare-and-set of a state together with its firing; a delete with everything the
 * rule owns). The client follows the cache's conventions: no offline queue, a timeout per command,
 * reconnection by itself; a failure is an error of the call, never fatal.
 */
import { type Duration, Effect, Layer, Option, type Redacted, Schema } from "effect"
import { redisConnection } from "../cache/RedisConnection.js"
import { AlertRule, AlertState, ATTEMPTS_KEPT, DeliveryAttempt, PendingDelivery, type StoredAlert } from "./AlertRule.js"
import { AlertStore, AlertStoreError } from "./AlertStore.js"

export const RULES_KEY = "dashcast:alerts:rules"
export const STATES_KEY = "dashcast:alerts:states"
export const OUTBOX_KEY = "dashcast:alerts:outbox"
export const attemptsKey = (id: string) => `dashcast:alerts:attempts:${id}`

export interface RedisAlertStoreOptions {
  readonly url: Redacted.Redacted<string>
  readonly timeout?: Duration.DurationInput
  readonly connectTimeout?: Duration.DurationInput
}

const CREATE = "redis.call('hset', KEYS[1], ARGV[1], ARGV[2]); redis.call('hset', KEYS[2], ARGV[1], ARGV[3]); return 1"

// Rules and states in one read, so that no rule is seen without its state.
const LIST = "return {redis.call('hgetall', KEYS[1]), redis.call('hgetall', KEYS[2])}"

const GET = "return {redis.call('hget', KEYS[1], ARGV[1]) or '', redis.call('hget', KEYS[2], ARGV[1]) or ''}"

// KEYS: rules, states, outbox, attempts; ARGV: id.
const REMOVE = `
local existed = redis.call('hdel', KEYS[1], ARGV[1])
redis.call('hdel', KEYS[2], ARGV[1])
redis.call('del', KEYS[4])
local outbox = redis.call('hgetall', KEYS[3])
for i = 1, #outbox, 2 do
  if cjson.decode(outbox[i + 1]).rule_id == ARGV[1] then redis.call('hdel', KEYS[3], outbox[i]) end
end
return existed`

// KEYS: rules, states, outbox; ARGV: id, version expected, next state, webhook id ('' for none), pending firing.
const TRANSITION = `
if redis.call('hexists', KEYS[1], ARGV[1]) == 0 then return 0 end
local current = redis.call('hget', KEYS[2], ARGV[1])
if not current or tonumber(cjson.decode(current).version) ~= tonumber(ARGV[2]) then return 0 end
redis.call('hset', KEYS[2], ARGV[1], ARGV[3])
if ARGV[4] ~= '' then redis.call('hsetnx', KEYS[3], ARGV[4], ARGV[5]) end
return 1`

// KEYS: rules, outbox, attempts; ARGV: rule id, webhook id, attempt, next pending ('' to remove), attempts kept.
const RECORD_ATTEMPT = `
if redis.call('hexists', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('rpush', KEYS[3], ARGV[3])
redis.call('ltrim', KEYS[3], -tonumber(ARGV[5]), -1)
if ARGV[4] == '' then redis.call('hdel', KEYS[2], ARGV[2]) else redis.call('hset', KEYS[2], ARGV[2], ARGV[4]) end
return 1`

const RuleJson = Schema.parseJson(AlertRule)
const StateJson = Schema.parseJson(AlertState)
const PendingJson = Schema.parseJson(PendingDelivery)
const AttemptJson = Schema.parseJson(DeliveryAttempt)
const encodeRule = Schema.encodeSync(RuleJson)
const encodeState = Schema.encodeSync(StateJson)
const encodePending = Schema.encodeSync(PendingJson)
const encodeAttempt = Schema.encodeSync(AttemptJson)


/** A flat `[field, value, field, value, …]` reply (Lua's HGETALL) or an object (the client's), as entries. */
const entriesOf = (reply: unknown): ReadonlyArray<readonly [string, string]> => {
  if (Array.isArray(reply)) {
    const entries: Array<readonly [string, string]> = []
    for (let i = 0; i + 1 < reply.length; i += 2) entries.push([String(reply[i]), String(reply[i + 1])])
    return entries
  }
  if (typeof reply === "object" && reply !== null) return Object.entries(reply).map(([k, v]) => [k, String(v)] as const)
  return []
}

const decodeOr = <A>(schema: Schema.Schema<A, string>, what: string) => (json: string) =>
  Schema.decodeUnknown(schema)(json).pipe(
    Effect.map(Option.some),
    Effect.catchTag("ParseError", (error) =>
      Effect.as(Effect.logWarning(`ignoring ${what} that does not decode`).pipe(Effect.annotateLogs({ error: error.message })), Option.none<A>()))
  )

export const RedisAlertStoreLive = (options: RedisAlertStoreOptions): Layer.Layer<AlertStore> =>
  Layer.scoped(
    AlertStore,
    Effect.gen(function*() {
      // A client Bun cannot even make (a URL it refuses) is a defect in this layer.
      const { call, client } = yield* redisConnection(
        { url: options.url, timeout: options.timeout ?? "1 second", connectTimeout: options.connectTimeout ?? "2 seconds" },
        (operation: string, reason, cause) => new AlertStoreError({ store: "redis", operation, reason, cause })
      ).pipe(Effect.orDie)
      const script = (operation: string, lua: string, keys: ReadonlyArray<string>, args: ReadonlyArray<string>) =>
        call(operation, () => client.send("EVAL", [lua, String(keys.length), ...keys, ...args]))

      const decodeAlert = (ruleJson: string, stateJson: string) =>
        Effect.map(
          Effect.all([decodeOr(RuleJson, "an alert rule")(ruleJson), decodeOr(StateJson, "an alert state")(stateJson)]),
          ([rule, state]) => Option.all({ rule, state })
        )

      const decodeAll = <A>(schema: Schema.Schema<A, string>, what: string, values: ReadonlyArray<string>) =>
        Effect.map(Effect.forEach(values, decodeOr(schema, what)), (all) => all.flatMap(Option.toArray))

      return AlertStore.of({
        kind: "redis",
        create: (rule, state) =>
          Effect.asVoid(script("create", CREATE, [RULES_KEY, STATES_KEY], [rule.id, encodeRule(rule), encodeState(state)])),
        list: Effect.gen(function*() {
          const reply = yield* script("list", LIST, [RULES_KEY, STATES_KEY], [])
          const [rules, states] = Array.isArray(reply) ? reply : [[], []]
          const stateOf = new Map(entriesOf(states))
          const alerts = yield* Effect.forEach(entriesOf(rules), ([id, json]) => {
            const state = stateOf.get(id)
            return state === undefined ? Effect.succeed(Option.none<StoredAlert>()) : decodeAlert(json, state)
          })
          return alerts.flatMap(Option.toArray).sort((a, b) => a.rule.created_at - b.rule.created_at || a.rule.id.localeCompare(b.rule.id))
        }),
        get: (id) =>
          Effect.gen(function*() {
            const reply = yield* script("get", GET, [RULES_KEY, STATES_KEY], [id])
            const [rule, state] = Array.isArray(reply) ? reply.map(String) : ["", ""]
            if (rule === undefined || state === undefined || rule === "" || state === "") return Option.none()
            return yield* decodeAlert(rule, state)
          }),
        remove: (id) =>
          Effect.map(script("remove", REMOVE, [RULES_KEY, STATES_KEY, OUTBOX_KEY, attemptsKey(id)], [id]), (n) => Number(n) > 0),
        transition: (id, fromVersion, next, firing) =>
          Effect.map(
            script("transition", TRANSITION, [RULES_KEY, STATES_KEY, OUTBOX_KEY], [
              id,
              String(fromVersion),
              encodeState(next),
              Option.match(firing, { onNone: () => "", onSome: (f) => f.webhook_id }),
              Option.match(firing, { onNone: () => "", onSome: encodePending })
            ]),
            (n) => Number(n) === 1
          ),
        pending: Effect.gen(function*() {
          const all = yield* call("pending", () => client.hgetall(OUTBOX_KEY))
          const pending = yield* decodeAll(PendingJson, "a pending webhook", entriesOf(all).map(([, json]) => json))
          return pending.sort((a, b) => a.next_at - b.next_at)
        }),
        recordAttempt: (ruleId, webhookId, attempt, next) =>
          Effect.asVoid(script("recordAttempt", RECORD_ATTEMPT, [RULES_KEY, OUTBOX_KEY, attemptsKey(ruleId)], [
            ruleId,
            webhookId,
            encodeAttempt(attempt),
            Option.match(next, { onNone: () => "", onSome: encodePending }),
            String(ATTEMPTS_KEPT)
          ])),
        attempts: (id) =>
          Effect.flatMap(call("attempts", () => client.lrange(attemptsKey(id), 0, -1)), (values) => decodeAll(AttemptJson, "a delivery attempt", values))
      })
    })
  )
