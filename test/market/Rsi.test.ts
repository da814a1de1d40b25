import { describe, expect, it } from "@effect/vitest"
import { Option } from "effect"
import { wilderRsi } from "../../src/market/Rsi.js"

describe("Rsi (smoke)", () => {
  it("is 100 when prices only rise", () => {
    const closes = Array.from({ length: 20 }, (_, i) => 100 + i)
    expect(wilderRsi(closes)).toEqual(Option.some(100))
  })
})
