/**
 * The snapshot is encoded by hand for the cache and the cluster channel on every round
 * (src/market/Watchlist.ts, `encodeSnapshot`): for any snapshot it must be exactly what its Schema
 * encodes (JSON loses nothing more: a -0 becomes 0 either way).
 */
import { describe, expect, it } from "@effect/vitest"
import { Arbitrary, Schema } from "effect"
import { encodeSnapshot, MarketSnapshot } from "../../src/market/Watchlist.js"

const snapshotArb = Arbitrary.make(MarketSnapshot)

describe("encodeSnapshot", () => {
  it.prop("gives what the Schema encodes, for any snapshot", [snapshotArb], ([snapshot]) => {
    const encoded = encodeSnapshot(snapshot)
    expect(encoded).toStrictEqual(Schema.encodeSync(MarketSnapshot)(snapshot))
    expect(JSON.stringify(encoded)).toBe(JSON.stringify(Schema.encodeSync(MarketSnapshot)(snapshot)))
  }, { fastCheck: { numRuns: 200 } })
})
