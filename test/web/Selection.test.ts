/**
 * What the pages show (src/web/Selection.ts): the currency and asset from the address, else this
 * browser's last choice, else the server's first, never one the server does not have.
 */
import { describe, expect, it } from "vitest"
import { addressOf, chooseSelection, parseStored, themeOf } from "../../src/web/Selection.js"

const server = { currencies: ["usd", "eur", "jpy"], assets: ["bitcoin", "ethereum", "solana"] }
const choose = (query: string, stored?: { currency?: string; asset?: string }) =>
  chooseSelection({ query: new URLSearchParams(query), stored, ...server })

describe("Selection", () => {
  it("takes the address first, then the stored choice, then the server's first", () => {
    expect(choose("?currency=eur&asset=solana", { currency: "jpy", asset: "ethereum" })).toEqual({ currency: "eur", asset: "solana" })
    expect(choose("", { currency: "jpy", asset: "ethereum" })).toEqual({ currency: "jpy", asset: "ethereum" })
    expect(choose("?asset=solana", { currency: "jpy" })).toEqual({ currency: "jpy", asset: "solana" })
    expect(choose("")).toEqual({ currency: "usd", asset: "bitcoin" })
  })

  it("never picks what the server does not have: an unknown one in the address falls back", () => {
    expect(choose("?currency=chf&asset=dogecoin", { currency: "eur" })).toEqual({ currency: "eur", asset: "bitcoin" })
    expect(choose("?currency=EUR")).toEqual({ currency: "usd", asset: "bitcoin" })
  })

  it("reads a stored choice tolerantly and writes the choice into the address, keeping the rest", () => {
    expect(parseStored(JSON.stringify({ currency: "eur", asset: "solana" }))).toEqual({ currency: "eur", asset: "solana" })
    expect(parseStored("{\"currency\":3}")).toEqual({})
    expect(parseStored("not json")).toBeUndefined()
    expect(parseStored(null)).toBeUndefined()
    expect(addressOf("http://h:1/?theme=dark&currency=usd", { currency: "eur", asset: "solana" })).toBe(
      "http://h:1/?theme=dark&currency=eur&asset=solana"
    )
  })

  it("takes ?theme=light or dark for the embedded card, nothing else", () => {
    expect(themeOf(new URLSearchParams("theme=dark"))).toBe("dark")
    expect(themeOf(new URLSearchParams("theme=light"))).toBe("light")
    expect(themeOf(new URLSearchParams("theme=blue"))).toBeUndefined()
  })
})
