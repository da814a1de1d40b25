/**
 * When a rule fires (src/alerts/Evaluation.ts, issue 15): crossing not level, the first snapshot
 * after creation, re-arming, never on a stale or unknown value, the cooldown, and the same decision
 * when a snapshot is evaluated twice (a takeover). Examples on real snapshots, then properties over
 * random runs of observations.
 */
import { describe, expect, it } from "@effect/vitest"
import { DateTime, FastCheck as fc, Option, Redacted } from "effect"
import { AlertRule, AlertState, type Condition, holds } from "../../src/alerts/AlertRule.js"
import { evaluate, type Observation, observe, step, type Transition } from "../../src/alerts/Evaluation.js"
import { MarketSnapshot, type MarketView } from "../../src/market/Watchlist.js"
import { makeView, type ViewOptions, watchlistView } from "../support/TestServer.js"

const T0 = Date.parse("2025-08-20T12:00:00.000Z")
const MINUTE = 60_000

const ruleOf = (condition: Condition, threshold: number, options: { asset?: string | null; currency?: string; cooldownMs?: number; createdSeq?: number } = {}) =>
  AlertRule.make({
    id: "alr_test",
    asset: options.asset === undefined ? "bitcoin" : options.asset,
    currency: options.currency ?? "usd",
    condition,
    threshold,
    webhook_url: "https://hooks.example.com/x",
    cooldown: "0 seconds",
    cooldown_ms: options.cooldownMs ?? 0,
    created_at: T0,
    created_seq: options.createdSeq ?? 0,
    secret: Redacted.make("whsec_dGVzdA==")
  })

const snapshotOf = (view: MarketView, seq: number, at = T0 + seq * MINUTE) =>
  MarketSnapshot.make({ view, seq, fetched_at: DateTime.unsafeMake(at) })

/** bitcoin (and ethereum) in usd and eur, bitcoin at `usd` dollars. */
const btcAt = (usd: number, options: ViewOptions = {}) =>
  makeView({ bitcoin: { usd, eur: usd * 0.92 }, ethereum: { usd: 3_500, eur: 3_220 } }, options)

/** Runs the rule over the snapshots, applying each change, and returns the transitions. */
const run = (rule: AlertRule, snapshots: ReadonlyArray<MarketSnapshot>) => {
  let state = AlertState.initial(rule.created_seq)
  const seen: Array<Transition["_tag"] | "none"> = []
  for (const snapshot of snapshots) {
    const change = evaluate(rule, state, snapshot)
    seen.push(Option.match(change, { onNone: () => "none" as const, onSome: (c) => c._tag }))
    if (Option.isSome(change)) state = change.value.state
  }
  return { seen, state }
}

describe("alert evaluation on snapshots", () => {
  it("fires on a crossing, not while the price stays above, and again after it re-arms", () => {
    const rule = ruleOf("price_above", 70_000)
    const prices = [69_000, 70_500, 71_000, 72_000, 69_999, 68_000, 70_001]
    const { seen } = run(rule, prices.map((p, i) => snapshotOf(btcAt(p), i + 1)))
    expect(seen).toEqual(["none", "Fired", "none", "none", "Rearmed", "none", "Fired"])
  })

  it("fires at the first snapshot after its creation when the condition already holds then, and only then", () => {
    const rule = ruleOf("price_below", 70_000, { createdSeq: 5 })
    // seq 5 was held when the rule was created: it is not evaluated; 6 is the first after.
    const { seen } = run(rule, [5, 6, 7].map((seq) => snapshotOf(btcAt(60_000), seq)))
    expect(seen).toEqual(["none", "Fired", "none"])
  })

  it("an equal value is not above nor below: it re-arms", () => {
    const above = ruleOf("price_above", 70_000)
    expect(run(above, [snapshotOf(btcAt(71_000), 1), snapshotOf(btcAt(70_000), 2), snapshotOf(btcAt(70_000.01), 3)]).seen)
      .toEqual(["Fired", "Rearmed", "Fired"])
  })

  it("reads each condition's value in the rule's currency", () => {
    const view = makeView({ bitcoin: { usd: 64_000, eur: 59_000 } }, { rsi: { bitcoin: 71.5 }, fearGreed: { value: 22, label: "Extreme Fear" } })
    const snapshot = snapshotOf(view, 1)
    expect(observe(ruleOf("price_above", 1, { currency: "eur" }), snapshot)).toEqual({ _tag: "Value", value: 59_000 })
    expect(observe(ruleOf("change_24h_below", 1), snapshot)).toEqual({ _tag: "Value", value: -1.25 })
    expect(observe(ruleOf("rsi_above", 70), snapshot)).toEqual({ _tag: "Value", value: 71.5 })
    expect(observe(ruleOf("fear_greed_below", 25, { asset: null }), snapshot)).toEqual({ _tag: "Value", value: 22 })
    expect(Option.map(evaluate(ruleOf("rsi_above", 70), AlertState.initial(0), snapshot), (t) => t._tag)).toEqual(Option.some("Fired"))
    expect(Option.map(evaluate(ruleOf("fear_greed_below", 25, { asset: null }), AlertState.initial(0), snapshot), (t) => t._tag))
      .toEqual(Option.some("Fired"))
  })

  it("never fires on a stale value, as the frame of the rule's currency names it", () => {
    const rule = ruleOf("price_above", 70_000)
    const staleViews: ReadonlyArray<readonly [NonNullable<ViewOptions["stale"]>, string]> = [
      [{ currencies: ["usd"] }, "currencies.usd"],
      [{ quotes: [["usd", "bitcoin"]] }, "assets.bitcoin"]
    ]
    for (const [stale, path] of staleViews) {
      const snapshot = snapshotOf(btcAt(75_000, { stale }), 1)
      expect(observe(rule, snapshot)).toEqual({ _tag: "Stale", path })
      expect(evaluate(rule, AlertState.initial(0), snapshot)).toEqual(Option.none())
    }
    // Another currency's failure, or another asset's, does not hold this rule back.
    for (const stale of [{ currencies: ["eur"] }, { quotes: [["usd", "ethereum"]] as Array<[string, string]> }, { rsi: ["bitcoin"] }]) {
      expect(Option.map(evaluate(rule, AlertState.initial(0), snapshotOf(btcAt(75_000, { stale }), 1)), (t) => t._tag)).toEqual(Option.some("Fired"))
    }
    // RSI and Fear & Greed by their own paths.
    expect(observe(ruleOf("rsi_above", 10), snapshotOf(btcAt(75_000, { stale: { rsi: ["bitcoin"] } }), 1)))
      .toEqual({ _tag: "Stale", path: "assets.bitcoin.rsi_14" })
    expect(observe(ruleOf("fear_greed_above", 10, { asset: null }), snapshotOf(btcAt(75_000, { stale: { fear_greed: true } }), 1)))
      .toEqual({ _tag: "Stale", path: "market.fear_greed_index" })
    // A stale snapshot between two that hold is neither a re-arm nor a firing: the rule fires once.
    expect(run(rule, [
      snapshotOf(btcAt(75_000), 1),
      snapshotOf(btcAt(60_000, { stale: { currencies: ["usd"] } }), 2),
      snapshotOf(btcAt(75_000), 3)
    ]).seen).toEqual(["Fired", "none", "none"])
  })

  it("an unknown value changes nothing", () => {
    const change = makeView({ bitcoin: { usd: { price: 75_000, change_24h: null } } })
    expect(observe(ruleOf("change_24h_above", 1), snapshotOf(change, 1))).toEqual({ _tag: "Unknown" })
    expect(observe(ruleOf("price_above", 1, { asset: "solana" }), snapshotOf(change, 1))).toEqual({ _tag: "Unknown" })
    expect(observe(ruleOf("fear_greed_above", 1, { asset: null }), snapshotOf(watchlistView(["bitcoin"], ["usd"], { fearGreed: null }), 1)))
      .toEqual({ _tag: "Unknown" })
  })

  it("waits for the cooldown: a crossing inside it fires at the first snapshot after it, if the condition still holds", () => {
    const rule = ruleOf("price_above", 70_000, { cooldownMs: 15 * MINUTE })
    const at = (minutes: number) => T0 + minutes * MINUTE
    const { seen } = run(rule, [
      snapshotOf(btcAt(71_000), 1, at(0)),
      snapshotOf(btcAt(69_000), 2, at(5)),
      snapshotOf(btcAt(71_000), 3, at(10)),
      snapshotOf(btcAt(71_500), 4, at(14)),
      snapshotOf(btcAt(71_200), 5, at(15)),
      snapshotOf(btcAt(72_000), 6, at(40))
    ])
    expect(seen).toEqual(["Fired", "Rearmed", "none", "none", "Fired", "none"])
  })

  it("decides the same when a snapshot is evaluated again (a takeover), and never goes back to an older one", () => {
    const rule = ruleOf("price_above", 70_000)
    const crossing = snapshotOf(btcAt(71_000), 2)
    const fired = Option.getOrThrow(evaluate(rule, AlertState.initial(0), crossing))
    expect(fired._tag).toBe("Fired")
    expect(evaluate(rule, fired.state, crossing)).toEqual(Option.none())
    // An older snapshot (below) arriving late would re-arm and so repeat the firing: it is ignored.
    expect(evaluate(rule, fired.state, snapshotOf(btcAt(60_000), 1))).toEqual(Option.none())
  })
})

// ---------------------------------------------------------------------------------------------
// Properties

const observationArb: fc.Arbitrary<Observation> = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 90, max: 110 }).map((value): Observation => ({ _tag: "Value", value })) },
  { weight: 1, arbitrary: fc.constant<Observation>({ _tag: "Stale", path: "currencies.usd" }) },
  { weight: 1, arbitrary: fc.constant<Observation>({ _tag: "Unknown" }) }
)
const runArb = fc.record({
  condition: fc.constantFrom<Condition>("price_above", "price_below", "rsi_above", "fear_greed_below"),
  threshold: fc.integer({ min: 95, max: 105 }),
  cooldownMs: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 20 }).map((m) => m * MINUTE)),
  steps: fc.array(fc.record({ observation: observationArb, gapMinutes: fc.integer({ min: 1, max: 10 }) }), { minLength: 1, maxLength: 60 })
})

interface Stepped {
  readonly observation: Observation
  readonly at: number
  readonly fired: boolean
  readonly rearmed: boolean
  readonly repeat: Option.Option<Transition>
}

type Run = typeof runArb extends fc.Arbitrary<infer A> ? A : never

const simulate = (r: Run): ReadonlyArray<Stepped> => {
  const rule = { condition: r.condition, threshold: r.threshold, cooldown_ms: r.cooldownMs }
  let state = AlertState.initial(0)
  let at = T0
  return r.steps.map(({ gapMinutes, observation }, i) => {
    at += gapMinutes * MINUTE
    const change = step(rule, state, observation, i + 1, at)
    if (Option.isSome(change)) state = change.value.state
    // The same snapshot once more, with what the first evaluation left.
    const repeat = step(rule, state, observation, i + 1, at)
    return {
      observation,
      at,
      fired: Option.exists(change, (c) => c._tag === "Fired"),
      rearmed: Option.exists(change, (c) => c._tag === "Rearmed"),
      repeat
    }
  })
}

const truth = (r: { condition: Condition; threshold: number }, o: Observation) =>
  o._tag === "Value" ? Option.some(holds(r.condition, o.value, r.threshold)) : Option.none()

describe("alert evaluation, properties", () => {
  it.prop("fires only on a known value that holds, and only on a crossing: a false value separates two firings", [runArb], ([r]) => {
    const steps = simulate(r)
    let sawFalseSinceFiring = true // a new rule is armed
    for (const s of steps) {
      const t = truth(r, s.observation)
      if (s.fired) {
        expect(Option.getOrElse(t, () => false)).toBe(true)
        expect(sawFalseSinceFiring).toBe(true)
        sawFalseSinceFiring = false
      }
      if (Option.isSome(t) && !t.value) sawFalseSinceFiring = true
      if (Option.isNone(t)) expect(s.fired || s.rearmed).toBe(false)
    }
  })

  it.prop("two firings are at least the cooldown apart", [runArb], ([r]) => {
    const firings = simulate(r).filter((s) => s.fired).map((s) => s.at)
    for (let i = 1; i < firings.length; i++) expect(firings[i]! - firings[i - 1]!).toBeGreaterThanOrEqual(r.cooldownMs)
  })

  it.prop("misses no crossing: an armed rule whose condition holds fires once the cooldown allows", [runArb], ([r]) => {
    const steps = simulate(r)
    let armed = true
    let lastFired: number | undefined
    for (const s of steps) {
      const t = truth(r, s.observation)
      const due = Option.getOrElse(t, () => false) && armed && (lastFired === undefined || s.at - lastFired >= r.cooldownMs)
      expect(s.fired).toBe(due)
      if (s.fired) {
        armed = false
        lastFired = s.at
      }
      if (Option.isSome(t) && !t.value) armed = true
    }
  })

  it.prop("evaluating the same snapshot again changes nothing", [runArb], ([r]) => {
    for (const s of simulate(r)) expect(s.repeat).toEqual(Option.none())
  })
})
