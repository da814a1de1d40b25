/**
 * Plausibility bounds for every number that comes from upstream (README, "Market data"). A value
 * outside them is not market data but a provider's bug or a hostile body: the call that carried it
 * fails with a `Decode` error naming the value, and its fields keep their last good values.
 */
import { Schema } from "effect"

/**
 * The largest price accepted, in any currency. A bitcoin costs about 2.5e9 Vietnamese dong; a
 * thousand times that is still below it, while `1e308` or `Infinity` is not.
 */
export const MAX_PRICE = 1e12

/** The largest market capitalisation or 24 h volume accepted, in any currency. */
export const MAX_TOTAL = 1e18

/** 24 h change in percent: above -100 (a price cannot fall below zero) and at most 10,000 (×101). */
export const MIN_CHANGE_PERCENT = -100
export const MAX_CHANGE_PERCENT = 10_000

/** A price: finite, above zero, at most `MAX_PRICE`. */
export const Price = Schema.Number.pipe(
  Schema.finite(),
  Schema.positive(),
  Schema.lessThanOrEqualTo(MAX_PRICE, { message: (issue) => `${String(issue.actual)} is above the plausible price maximum ${MAX_PRICE}` })
)

/** A market total (capitalisation) that must be known: finite, above zero, at most `MAX_TOTAL`. */
export const Total = Schema.Number.pipe(
  Schema.finite(),
  Schema.positive(),
  Schema.lessThanOrEqualTo(MAX_TOTAL, { message: (issue) => `${String(issue.actual)} is above the plausible maximum ${MAX_TOTAL}` })
)

/** A traded amount (volume): finite, zero or more, at most `MAX_TOTAL`. */
export const Amount = Schema.Number.pipe(
  Schema.finite(),
  Schema.nonNegative(),
  Schema.lessThanOrEqualTo(MAX_TOTAL, { message: (issue) => `${String(issue.actual)} is above the plausible maximum ${MAX_TOTAL}` })
)

/** A 24 h change in percent, strictly above -100 and at most `MAX_CHANGE_PERCENT`. */
export const ChangePercent = Schema.Number.pipe(
  Schema.finite(),
  Schema.greaterThan(MIN_CHANGE_PERCENT, {
    message: (issue) => `${String(issue.actual)} % is not above ${MIN_CHANGE_PERCENT} %`
  }),
  Schema.lessThanOrEqualTo(MAX_CHANGE_PERCENT, {
    message: (issue) => `${String(issue.actual)} % is above the plausible maximum ${MAX_CHANGE_PERCENT} %`
  })
)
