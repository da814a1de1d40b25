export interface Summary {
  readonly btc_price: number
  readonly btc_change_24h: number
  readonly market_cap: number
  readonly volume_24h: number
  readonly fear_greed_index: number
  readonly rsi_14: number
  readonly last_updated: string
}
export declare const nextSummary: () => Summary
export declare const WELCOME_TEXT: string
