// The market summary both reference peers publish: the same fields, magnitudes and JSON shape as
// dashcast's `welcome` and `dashboard_update` frames (about 330 and 285 bytes), from a random walk.
let price = 62_000
let change = 0.5
let fearGreed = 50
let rsi = 52.5

export const nextSummary = () => {
  price *= 1 + (Math.random() - 0.5) * 0.003
  change += (Math.random() - 0.5) * 0.1
  fearGreed = Math.min(100, Math.max(0, fearGreed + Math.round((Math.random() - 0.5) * 3)))
  rsi = Math.min(100, Math.max(0, rsi + (Math.random() - 0.5)))
  return {
    btc_price: Math.round(price * 100) / 100,
    btc_change_24h: Math.round(change * 10_000) / 10_000,
    market_cap: Math.round(price * 19_800_000 / 0.56),
    volume_24h: Math.round(price * 1_200_000),
    fear_greed_index: fearGreed,
    rsi_14: Math.round(rsi * 100) / 100,
    last_updated: new Date().toISOString()
  }
}

export const WELCOME_TEXT = "Connected to real-time dashboard updates"
