/**
 * When a rule fires (docs/ARCHITECTURE.md, "Alerts"), as pure functions of a rule, its state and a
 * snapshot: a crossing fires, a level does not; a new rule is armed, so a condition already true at
 * the first snapshot after its creation fires then; a rule re-arms when its condition is false
 * again; a stale or unknown value changes nothing; a firing waits for the cooldown. Time is the
 * snapshot's own (`fetched_at`), so evaluating the same snapshot twice (a takeover) decides the same.
 */
import { DateTime, Option } from "effect"
import { type MarketSnapshot, stalePathsFor } from "../market/Watchlist.js"
import { type AlertRule, AlertState, holds, measureOf } from "./AlertRule.js"

/** What a snapshot says of a rule's value. */
export type Observation =
  | { readonly _tag: "Value"; readonly value: number }
  /** The snapshot has no such value (an asset the provider does not know, a 24 h change it has not). */
  | { readonly _tag: "Unknown" }
  /** The value kept an old value (its call failed): the frame names it, or a path above it, as stale. */
  | { readonly _tag: "Stale"; readonly path: string }

/** Where the value of a rule sits in its currency's frame (the paths of `stale_paths`). */
export const fieldPath = (rule: Pick<AlertRule, "condition" | "asset">): string => {
  switch (measureOf(rule.condition)) {
    case "price":
      return `assets.${rule.asset}.price`
    case "change_24h":
      return `assets.${rule.asset}.change_24h`
    case "rsi":
      return `assets.${rule.asset}.rsi_14`
    case "fear_greed":
      return "market.fear_greed_index"
  }
}

/**
 * The stale path that covers `path` in a frame of `currency`, if any: the path itself, one above it
 * (`assets.ethereum` covers `assets.ethereum.price`), or `currencies.<currency>` for an asset's values.
 */
const staleCover = (stalePaths: ReadonlyArray<string>, path: string, currency: string): Option.Option<string> =>
  Option.fromNullable(
    stalePaths.find((stale) =>
      stale === path || path.startsWith(`${stale}.`) || (stale === `currencies.${currency}` && path.startsWith("assets."))
    )
  )

export const observe = (rule: AlertRule, snapshot: MarketSnapshot): Observation => {
  const { view } = snapshot
  const path = fieldPath(rule)
  const stale = staleCover(stalePathsFor(view.stale, rule.currency), path, rule.currency)
  if (Option.isSome(stale)) return { _tag: "Stale", path: stale.value }
  const known = (value: number | null | undefined): Observation =>
    value === null || value === undefined || !Number.isFinite(value) ? { _tag: "Unknown" } : { _tag: "Value", value }
  const quote = rule.asset === null ? undefined : view.quotes[rule.currency]?.[rule.asset]
  switch (measureOf(rule.condition)) {
    case "price":
      return known(quote?.price)
    case "change_24h":
      return known(quote?.change_24h)
    case "rsi":
      return known(rule.asset === null ? undefined : view.rsi[rule.asset])
    case "fear_greed":
      return known(Option.getOrUndefined(Option.map(view.fear_greed, (f) => f.value)))
  }
}

/** A change of state: the rule re-armed, or it fired (and is disarmed until its condition is false again). */
export type Transition =
  | { readonly _tag: "Rearmed"; readonly state: AlertState }
  | { readonly _tag: "Fired"; readonly state: AlertState; readonly value: number }

/**
 * The change one observation makes to a rule's state at snapshot `seq` taken at `at` (epoch ms),
 * or none. A firing inside the cooldown does not happen and the rule stays armed: it fires at the
 * first snapshot after the cooldown at which its condition still holds.
 */
export const step = (
  rule: Pick<AlertRule, "condition" | "threshold" | "cooldown_ms">,
  state: AlertState,
  observation: Observation,
  seq: number,
  at: number
): Option.Option<Transition> => {
  if (observation._tag !== "Value" || seq <= state.last_seq) return Option.none()
  const next = (armed: boolean, lastFiredAt: number | null) =>
    AlertState.make({ version: state.version + 1, armed, last_seq: seq, last_fired_at: lastFiredAt })
  if (!holds(rule.condition, observation.value, rule.threshold)) {
    return state.armed ? Option.none() : Option.some({ _tag: "Rearmed", state: next(true, state.last_fired_at) })
  }
  const cooledDown = state.last_fired_at === null || at - state.last_fired_at >= rule.cooldown_ms
  return state.armed && cooledDown
    ? Option.some({ _tag: "Fired", state: next(false, at), value: observation.value })
    : Option.none()
}

/** `step` for a snapshot. */
export const evaluate = (rule: AlertRule, state: AlertState, snapshot: MarketSnapshot): Option.Option<Transition> =>
  step(rule, state, observe(rule, snapshot), snapshot.seq, DateTime.toEpochMillis(snapshot.fetched_at))
