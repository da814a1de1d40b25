/**
 * A token bucket per connection, for the message limits of the WebSocket protocol. Mutable on
 * purpose: it lives in a socket's data and is updated on Bun's callback without allocating.
 */

export interface TokenBucket {
  tokens: number
  updatedAt: number
}

export interface BucketRule {
  readonly capacity: number
  /** Tokens regained per second. */
  readonly refillPerSecond: number
}

export const fullBucket = (rule: BucketRule, now: number): TokenBucket => ({ tokens: rule.capacity, updatedAt: now })

/** Takes one token if there is one; returns whether it could. `now` is in milliseconds. */
export const take = (bucket: TokenBucket, rule: BucketRule, now: number): boolean => {
  const elapsed = Math.max(0, now - bucket.updatedAt) / 1000
  bucket.tokens = Math.min(rule.capacity, bucket.tokens + elapsed * rule.refillPerSecond)
  bucket.updatedAt = now
  if (bucket.tokens < 1) return false
  bucket.tokens -= 1
  return true
}

/** Whole seconds until one token is back (at least 1). */
export const secondsUntilToken = (bucket: TokenBucket, rule: BucketRule): number =>
  Math.max(1, Math.ceil((1 - bucket.tokens) / rule.refillPerSecond))
