// The market both reference peers publish: the same members, key order, magnitudes and JSON shape as
// dashcast's `welcome` and `dashboard_update` frames (docs/ARCHITECTURE.md, "Protocol"), for the
// assets and currencies of `ASSETS` and `CURRENCIES` (dashcast's defaults: bitcoin, usd). The values
// are a random walk; the profiles (names, symbols, price and supply magnitudes, exchange ratios)
// follow dashcast's demo feed (src/market/Demo.ts), so a frame has the same size as dashcast's, which
// the benchmark checks at the clients.
//
// A peer encodes each currency's view once per broadcast (`view(currency)`: the members without
// braces) and builds every frame of that broadcast by concatenation, one string per topic; a welcome
// is the same members plus its own timestamp and age. That is the least work a server can do for
// these frames, so no ratio of dashcast's profits from a wasteful reference.

/** Names, symbols and US-dollar magnitudes of the ids the demo feed knows. */
const KNOWN = {
  bitcoin: { name: "Bitcoin", symbol: "btc", usd: 62_000, supply: 19_800_000 },
  ethereum: { name: "Ethereum", symbol: "eth", usd: 3_000, supply: 120_000_000 },
  tether: { name: "Tether", symbol: "usdt", usd: 1, supply: 140_000_000_000 },
  "usd-coin": { name: "USDC", symbol: "usdc", usd: 1, supply: 60_000_000_000 },
  binancecoin: { name: "BNB", symbol: "bnb", usd: 580, supply: 146_000_000 },
  solana: { name: "Solana", symbol: "sol", usd: 150, supply: 470_000_000 },
  ripple: { name: "XRP", symbol: "xrp", usd: 0.55, supply: 56_000_000_000 },
  cardano: { name: "Cardano", symbol: "ada", usd: 0.45, supply: 35_000_000_000 },
  dogecoin: { name: "Dogecoin", symbol: "doge", usd: 0.12, supply: 146_000_000_000 },
  "shiba-inu": { name: "Shiba Inu", symbol: "shib", usd: 0.000018, supply: 589_000_000_000_000 },
  polkadot: { name: "Polkadot", symbol: "dot", usd: 6, supply: 1_500_000_000 },
  chainlink: { name: "Chainlink", symbol: "link", usd: 14, supply: 600_000_000 },
  litecoin: { name: "Litecoin", symbol: "ltc", usd: 70, supply: 75_000_000 },
  tron: { name: "TRON", symbol: "trx", usd: 0.12, supply: 87_000_000_000 },
  "avalanche-2": { name: "Avalanche", symbol: "avax", usd: 30, supply: 400_000_000 }
}

/** 1 USD in each currency the demo feed knows; others get a ratio derived from their code. */
const RATIO = { usd: 1, eur: 0.92, gbp: 0.79, jpy: 150, chf: 0.88, cad: 1.36, aud: 1.52, cny: 7.2, inr: 83 }

/** A number in [0, 1) from a string (FNV-1a), so an unknown id always gets the same profile. */
const hash01 = (text) => {
  let h = 2_166_136_261
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16_777_619)
  return (h >>> 0) / 4_294_967_296
}

const profileOf = (id) =>
  KNOWN[id] ?? {
    name: id.split(/[-_.]/).map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join(" "),
    symbol: id.replace(/[^a-z0-9]/g, "").slice(0, 4),
    usd: 10 ** (-2 + 4 * hash01(id)),
    supply: 10 ** (7 + 3 * hash01(`${id}/supply`))
  }

const ratioOf = (currency) => RATIO[currency] ?? 0.5 + 1.5 * hash01(currency)
const clamp = (lo, hi, x) => Math.min(hi, Math.max(lo, x))
const step = (sigma) => (Math.random() - 0.5) * sigma
const fearGreedLabel = (v) => (v <= 24 ? "Extreme Fear" : v <= 46 ? "Fear" : v <= 54 ? "Neutral" : v <= 75 ? "Greed" : "Extreme Greed")

const list = (value, fallback) => (value ?? fallback).split(",").map((s) => s.trim()).filter((s) => s !== "")

export const WELCOME_TEXT = "Connected to real-time dashboard updates"

export const makeMarket = (env) => {
  const assets = list(env.ASSETS, "bitcoin").map((id) => ({ id, ...profileOf(id) }))
  const currencies = list(env.CURRENCIES, "usd")
  const walks = assets.map((a) => ({ usd: a.usd, open24h: a.usd * (1 + step(0.05)), share: 0.035, rsi: 30 + 40 * Math.random() }))
  let totalUsd = 2.3e12
  let fearGreed = 50
  let fetchedAt = Date.now()
  let views = new Map()

  const encode = (currency) => {
    const ratio = ratioOf(currency)
    const last = new Date(fetchedAt).toISOString()
    const quotes = assets.map((a, i) => {
      const w = walks[i]
      const cap = w.usd * a.supply * ratio
      return {
        id: a.id,
        symbol: a.symbol,
        name: a.name,
        price: Number((w.usd * ratio).toPrecision(8)),
        change_24h: Math.round((w.usd / w.open24h - 1) * 1e6) / 1e4,
        market_cap: Math.round(cap),
        volume_24h: Math.round(cap * w.share),
        rsi_14: Math.round(w.rsi * 100) / 100,
        last_updated: last
      }
    })
    const market = {
      total_market_cap: Math.round(totalUsd * ratio),
      total_volume: Math.round(totalUsd * ratio * 0.035),
      fear_greed_index: fearGreed,
      fear_greed_label: fearGreedLabel(fearGreed)
    }
    const btc = quotes.find((q) => q.id === "bitcoin")
    const data = btc === undefined ? undefined : {
      btc_price: btc.price,
      btc_change_24h: btc.change_24h,
      market_cap: market.total_market_cap,
      volume_24h: market.total_volume,
      fear_greed_index: fearGreed,
      rsi_14: btc.rsi_14,
      last_updated: last
    }
    return JSON.stringify(data === undefined ? { currency, assets: quotes, market } : { currency, assets: quotes, market, data }).slice(1, -1)
  }

  return {
    currencies,
    /** One new round: every price moves; the views are encoded again on first use. */
    next() {
      for (const w of walks) {
        w.usd *= 1 + step(0.006)
        w.open24h *= 1 + step(0.002)
        w.share = clamp(0.01, 0.2, w.share * (1 + step(0.02)))
        w.rsi = clamp(0, 100, w.rsi + step(1))
      }
      totalUsd *= 1 + step(0.003)
      fearGreed = clamp(0, 100, fearGreed + Math.round(step(3)))
      fetchedAt = Date.now()
      views = new Map()
    },
    /** One currency's members (`"currency":…,"assets":[…],"market":{…},"data":{…}`), encoded once per round. */
    view(currency) {
      let members = views.get(currency)
      if (members === undefined) {
        members = encode(currency)
        views.set(currency, members)
      }
      return members
    },
    welcome(currency, seq, now) {
      const age = Math.round((now - fetchedAt) / 100) / 10
      return `{"type":"welcome",${this.view(currency)},"timestamp":"${new Date(now).toISOString()}","message":${
        JSON.stringify(WELCOME_TEXT)
      },"seq":${seq},"age_seconds":${age},"stale":false}`
    },
    update(currency, seq, now) {
      return `{"type":"dashboard_update",${this.view(currency)},"timestamp":"${new Date(now).toISOString()}","source":"force_update","seq":${seq}}`
    }
  }
}
