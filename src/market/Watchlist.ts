/**
 * The watchlist's data (docs/ARCHITECTURE.md, "The snapshot"): every watched asset in every
 * configured currency, the market totals, the Fear & Greed index and each asset's RSI-14, with
 * what is stale. One `MarketSnapshot` is what the updater produces, the cache keeps, the cluster
 * relays and every frame and HTTP answer is built from.
 */
import { DateTime, Schema } from "effect"
import { Amount, ChangePercent, Price, Total } from "./Bounds.js"
import { DashboardSummary, type SummaryField } from "./DashboardSummary.js"

export const AssetId = Schema.String.annotations({ description: "a CoinGecko coin id, e.g. \"ethereum\"" })
export type AssetId = typeof AssetId.Type
export const Currency = Schema.String.annotations({ description: "a CoinGecko vs-currency, e.g. \"eur\"" })
export type Currency = typeof Currency.Type

/** The asset whose quotes also fill the seed's `data` summary, for the clients of before the watchlist. */
export const LEGACY_ASSET = "bitcoin"

export class AssetInfo extends Schema.Class<AssetInfo>("AssetInfo")({
  id: AssetId,
  /** The ticker as CoinGecko writes it, lower case ("btc"). */
  symbol: Schema.String,
  name: Schema.String
}) {}

/**
 * One asset in one currency, as the provider reported it. `null` is the provider's own "unknown"
 * (CoinGecko leaves a 24 h change or a market cap out for some coins): it is never read as zero.
 */
export class Quote extends Schema.Class<Quote>("Quote")({
  price: Price,
  change_24h: Schema.NullOr(ChangePercent),
  market_cap: Schema.NullOr(Amount),
  volume_24h: Schema.NullOr(Amount),
  /** The provider's time of the price. */
  last_updated: Schema.DateTimeUtc,
  /** When dashcast last received this quote fresh (a stale quote keeps its old time). */
  fetched_at: Schema.DateTimeUtc
}) {}

/** The whole crypto market's totals in one currency (CoinGecko `/global`). */
export class MarketTotals extends Schema.Class<MarketTotals>("MarketTotals")({
  total_market_cap: Total,
  total_volume: Amount
}) {}

export class FearGreed extends Schema.Class<FearGreed>("FearGreed")({
  value: Schema.Int.pipe(Schema.between(0, 100)),
  /** alternative.me's own `value_classification` ("Extreme Fear" … "Extreme Greed"). */
  label: Schema.String,
  /**
   * When dashcast asks alternative.me again (epoch ms): just after its next value is due, at most
   * an hour on. Kept in the snapshot so that whichever instance makes the next round knows it.
   */
  refresh_at: Schema.optionalWith(Schema.Number, { default: () => 0 })
}) {}

/** When an asset's daily closes were fetched and are due again (epoch ms), for every instance. */
export const ChartStamp = Schema.Struct({ fetched_at: Schema.Number, next_due_at: Schema.Number })
export type ChartStamp = typeof ChartStamp.Type

/**
 * What kept its last good value in a snapshot because the call that feeds it failed (or was not
 * sent inside a provider's Retry-After). Frames name these as paths (`stalePathsFor`).
 */
export class StaleParts extends Schema.Class<StaleParts>("StaleParts")({
  /** Currencies whose `coins/markets` call failed: every quote in them is old. */
  currencies: Schema.Array(Currency),
  /** Single quotes the provider answered with implausible values: `[currency, asset]`. */
  quotes: Schema.Array(Schema.Tuple(Currency, AssetId)),
  /** Assets whose daily-closes call failed: their RSI-14 rests on older closes. */
  rsi: Schema.Array(AssetId),
  /** Currencies whose totals are old: the `/global` call failed (all of them) or its values for one were implausible. */
  totals: Schema.Array(Currency),
  fear_greed: Schema.Boolean
}) {
  static readonly none = StaleParts.make({ currencies: [], quotes: [], rsi: [], totals: [], fear_greed: false })

  get isEmpty(): boolean {
    return this.currencies.length === 0 && this.quotes.length === 0 && this.rsi.length === 0 && this.totals.length === 0 &&
      !this.fear_greed
  }
}

/** The market as one round of upstream calls (merged with the last good values) left it. */
export class MarketView extends Schema.Class<MarketView>("MarketView")({
  /** The watched assets the provider knows, in `ASSETS` order. */
  assets: Schema.Array(AssetInfo),
  /** Watched ids the provider does not know: listed, never quoted. */
  missing: Schema.Array(AssetId),
  /** `quotes[currency][asset]`; an asset or currency without any good value yet is absent. */
  quotes: Schema.Record({ key: Currency, value: Schema.Record({ key: AssetId, value: Quote }) }),
  /** RSI-14 per asset, from its daily closes in the first currency with the live price as today's. */
  rsi: Schema.Record({ key: AssetId, value: Schema.Number.pipe(Schema.between(0, 100)) }),
  totals: Schema.Record({ key: Currency, value: MarketTotals }),
  fear_greed: Schema.OptionFromNullOr(FearGreed),
  stale: StaleParts,
  /**
   * Whose daily closes were fetched when (the closes themselves are in the L2 cache): an instance
   * that makes the next round, or takes over, knows what is due and reloads newer closes.
   */
  charts: Schema.optionalWith(Schema.Record({ key: AssetId, value: ChartStamp }), { default: () => ({}) })
}) {}

/** A published view: the cluster-wide sequence number and when dashcast made it. */
export class MarketSnapshot extends Schema.Class<MarketSnapshot>("MarketSnapshot")({
  view: MarketView,
  seq: Schema.Int.pipe(Schema.positive()),
  fetched_at: Schema.DateTimeUtc
}) {}

/**
 * A snapshot in its encoded (JSON) form, for the cache and the cluster channel on every round.
 * Written out instead of `Schema.encode`, which checks every refinement of every quote again (a few
 * milliseconds for 50 assets in 3 currencies, per round) for values that were checked when they were
 * decoded or made. Typed by the Schema's encoded side; test/market/Watchlist.test.ts checks it
 * equals `Schema.encode` for any snapshot. Decoding still goes through the Schema.
 */
export const encodeSnapshot = (snapshot: MarketSnapshot): typeof MarketSnapshot.Encoded => {
  const { view } = snapshot
  const quotes: Record<string, Record<string, typeof Quote.Encoded>> = {}
  for (const [currency, byAsset] of Object.entries(view.quotes)) {
    const encoded: Record<string, typeof Quote.Encoded> = {}
    for (const [asset, quote] of Object.entries(byAsset)) {
      encoded[asset] = {
        price: quote.price,
        change_24h: quote.change_24h,
        market_cap: quote.market_cap,
        volume_24h: quote.volume_24h,
        last_updated: DateTime.formatIso(quote.last_updated),
        fetched_at: DateTime.formatIso(quote.fetched_at)
      }
    }
    quotes[currency] = encoded
  }
  const totals: Record<string, typeof MarketTotals.Encoded> = {}
  for (const [currency, t] of Object.entries(view.totals)) {
    totals[currency] = { total_market_cap: t.total_market_cap, total_volume: t.total_volume }
  }
  const fearGreed = view.fear_greed
  return {
    view: {
      assets: view.assets.map((info) => ({ id: info.id, symbol: info.symbol, name: info.name })),
      missing: view.missing,
      quotes,
      rsi: view.rsi,
      totals,
      fear_greed: fearGreed._tag === "Some"
        ? { value: fearGreed.value.value, label: fearGreed.value.label, refresh_at: fearGreed.value.refresh_at }
        : null,
      stale: {
        currencies: view.stale.currencies,
        quotes: view.stale.quotes,
        rsi: view.stale.rsi,
        totals: view.stale.totals,
        fear_greed: view.stale.fear_greed
      },
      charts: view.charts
    },
    seq: snapshot.seq,
    fetched_at: DateTime.formatIso(snapshot.fetched_at)
  }
}

// ---------------------------------------------------------------------------------------------
// What one currency's frame shows

/** One asset in the frames and HTTP answers of one currency. */
export const AssetQuote = Schema.Struct({
  id: AssetId,
  symbol: Schema.String,
  name: Schema.String,
  price: Price,
  change_24h: Schema.NullOr(ChangePercent),
  market_cap: Schema.NullOr(Amount),
  volume_24h: Schema.NullOr(Amount),
  rsi_14: Schema.NullOr(Schema.Number.pipe(Schema.between(0, 100))),
  last_updated: Schema.DateTimeUtc
})
export type AssetQuote = typeof AssetQuote.Type

/** The market in one currency; a value dashcast has never had is absent. */
export const MarketSide = Schema.Struct({
  total_market_cap: Schema.optional(Total),
  total_volume: Schema.optional(Amount),
  fear_greed_index: Schema.optional(Schema.Int.pipe(Schema.between(0, 100))),
  fear_greed_label: Schema.optional(Schema.String)
})
export type MarketSide = typeof MarketSide.Type

/** Everything a frame carries for `currency`, built once per snapshot and currency. */
export interface CurrencyView {
  readonly currency: Currency
  readonly assets: ReadonlyArray<AssetQuote>
  readonly market: MarketSide
  /** The seed's summary, when bitcoin is watched and all seven fields are known in this currency. */
  readonly data: DashboardSummary | undefined
  /** The seed's names of `data`'s fields that are stale (only with `data`). */
  readonly staleFields: ReadonlyArray<SummaryField>
  /** Paths of every stale value in this currency's view (`assets.ethereum.rsi_14`, `currencies.eur`, …). */
  readonly stalePaths: ReadonlyArray<string>
}

/** The stale paths of one currency's view, in a stable order. */
export const stalePathsFor = (stale: StaleParts, currency: Currency): ReadonlyArray<string> => [
  ...(stale.currencies.includes(currency) ? [`currencies.${currency}`] : []),
  ...stale.quotes.filter(([c]) => c === currency).map(([, asset]) => `assets.${asset}`),
  ...stale.rsi.map((asset) => `assets.${asset}.rsi_14`),
  ...(stale.totals.includes(currency) ? ["market.total_market_cap", "market.total_volume"] : []),
  ...(stale.fear_greed ? ["market.fear_greed_index"] : [])
]

const quoteIsStale = (stale: StaleParts, currency: Currency, asset: AssetId) =>
  stale.currencies.includes(currency) || stale.quotes.some(([c, a]) => c === currency && a === asset)

/** What a frame for `currency` shows of `snapshot`. */
export const currencyView = (snapshot: MarketSnapshot, currency: Currency): CurrencyView => {
  const { view } = snapshot
  const quotes = view.quotes[currency] ?? {}
  const assets = view.assets.flatMap((info): Array<AssetQuote> => {
    const quote = quotes[info.id]
    if (quote === undefined) return []
    return [{
      id: info.id,
      symbol: info.symbol,
      name: info.name,
      price: quote.price,
      change_24h: quote.change_24h,
      market_cap: quote.market_cap,
      volume_24h: quote.volume_24h,
      rsi_14: view.rsi[info.id] ?? null,
      last_updated: quote.last_updated
    }]
  })
  const totals = view.totals[currency]
  const fearGreed = view.fear_greed
  const market: MarketSide = {
    ...(totals === undefined ? {} : { total_market_cap: totals.total_market_cap, total_volume: totals.total_volume }),
    ...(fearGreed._tag === "Some" ? { fear_greed_index: fearGreed.value.value, fear_greed_label: fearGreed.value.label } : {})
  }
  const legacy = legacySummary(snapshot, currency)
  return {
    currency,
    assets,
    market,
    data: legacy,
    staleFields: legacy === undefined ? [] : legacyStaleFields(view.stale, currency),
    stalePaths: stalePathsFor(view.stale, currency)
  }
}

/** The seed's seven fields for bitcoin in `currency`, when every one of them is known. */
const legacySummary = (snapshot: MarketSnapshot, currency: Currency): DashboardSummary | undefined => {
  const { view } = snapshot
  const btc = view.quotes[currency]?.[LEGACY_ASSET]
  const totals = view.totals[currency]
  const rsi = view.rsi[LEGACY_ASSET]
  if (btc === undefined || btc.change_24h === null || totals === undefined || rsi === undefined || view.fear_greed._tag === "None") {
    return undefined
  }
  // Not checked again: each field comes from a value of the snapshot whose Schema has the same bounds.
  return DashboardSummary.make({
    btc_price: btc.price,
    btc_change_24h: btc.change_24h,
    market_cap: totals.total_market_cap,
    volume_24h: totals.total_volume,
    fear_greed_index: view.fear_greed.value.value,
    rsi_14: rsi,
    last_updated: snapshot.fetched_at
  }, true)
}

const legacyStaleFields = (stale: StaleParts, currency: Currency): ReadonlyArray<SummaryField> => [
  ...(quoteIsStale(stale, currency, LEGACY_ASSET) ? ["btc_price" as const, "btc_change_24h" as const] : []),
  ...(stale.totals.includes(currency) ? ["market_cap" as const, "volume_24h" as const] : []),
  ...(stale.rsi.includes(LEGACY_ASSET) ? ["rsi_14" as const] : []),
  ...(stale.fear_greed ? ["fear_greed_index" as const] : [])
]
