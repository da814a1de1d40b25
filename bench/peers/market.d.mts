export interface Market {
  /** `CURRENCIES` in order; the first is a socket's default. */
  readonly currencies: ReadonlyArray<string>
  /** Moves every value: one new round, as a force update would fetch. */
  readonly next: () => void
  /** One currency's members (`"currency":…,"assets":[…],"market":{…},"data":{…}`), encoded once per round. */
  readonly view: (currency: string) => string
  readonly welcome: (currency: string, seq: number, now: number) => string
  readonly update: (currency: string, seq: number, now: number) => string
}
export declare const makeMarket: (env: Record<string, string | undefined>) => Market
export declare const WELCOME_TEXT: string
