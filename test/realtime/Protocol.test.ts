/**
 * The frames' view members are encoded by hand on the path to every client
 * (src/realtime/Protocol.ts, `encodeViewMembers`): for any view they must be exactly what the
 * protocol's Schema encodes, member for member and byte for byte.
 */
import { describe, expect, it } from "@effect/vitest"
import { Arbitrary, FastCheck as fc, Schema } from "effect"
import { DashboardSummary, SummaryField } from "../../src/market/DashboardSummary.js"
import { AssetQuote, type CurrencyView, MarketSide } from "../../src/market/Watchlist.js"
import { decodeServerMessage, encodeView, encodeViewMembers, updateFrame, ViewFields } from "../../src/realtime/Protocol.js"

const viewArb: fc.Arbitrary<CurrencyView> = Arbitrary.make(Schema.Struct({
  currency: Schema.String,
  assets: Schema.Array(AssetQuote),
  market: MarketSide,
  data: Schema.UndefinedOr(DashboardSummary),
  staleFields: Schema.Array(SummaryField),
  stalePaths: Schema.Array(Schema.String)
}))

/** The members as the Schema encodes them: optional ones only when they say something. */
const schemaMembers = (view: CurrencyView) =>
  Schema.encodeSync(Schema.Struct(ViewFields))({
    currency: view.currency,
    assets: view.assets,
    market: view.market,
    ...(view.data === undefined ? {} : { data: view.data }),
    ...(view.staleFields.length > 0 ? { stale_fields: view.staleFields } : {}),
    ...(view.stalePaths.length > 0 ? { stale_paths: view.stalePaths } : {})
  })

describe("encodeViewMembers", () => {
  it.prop("gives what the Schema encodes, for any view", [viewArb], ([view]) => {
    const encoded = encodeViewMembers(view)
    expect(encoded).toStrictEqual(schemaMembers(view))
    expect(JSON.stringify(encoded)).toBe(JSON.stringify(schemaMembers(view)))
  })

  it.prop("makes frames that decode as updates and carry exactly the Schema's members", [viewArb, fc.integer({ min: 1, max: 2 ** 40 })], ([view, seq]) => {
    const frame = updateFrame(encodeView(view, seq), "scheduled_update", "2026-12-01T00:00:00.000Z")
    expect(decodeServerMessage(frame)._tag).toBe("Right")
    const { seq: frameSeq, source, timestamp, type, ...members } = JSON.parse(frame)
    expect([type, frameSeq, source, timestamp]).toEqual(["dashboard_update", seq, "scheduled_update", "2026-12-01T00:00:00.000Z"])
    expect(members).toEqual(JSON.parse(JSON.stringify(schemaMembers(view))))
  })
})
