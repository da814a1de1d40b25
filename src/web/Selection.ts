/**
 * What a page shows: which currency and which asset. Chosen from the address
 * (`?currency=eur&asset=ethereum`, so a link or a bookmark shows the same), else from what this
 * browser chose last (local storage), else the server's first; always one the server has. Pure, so
 * the pages and their tests share it.
 */

export interface Selection {
  readonly currency: string
  readonly asset: string
}

/** The local storage key of the last choice. */
export const STORAGE_KEY = "dashcast:selection"

/** A stored choice, if `raw` is one (anything else, such as another version's value, is none). */
export const parseStored = (raw: string | null): Partial<Selection> | undefined => {
  if (raw === null) return undefined
  try {
    const value: unknown = JSON.parse(raw)
    if (typeof value !== "object" || value === null) return undefined
    const { asset, currency } = value as Record<string, unknown>
    return {
      ...(typeof currency === "string" ? { currency } : {}),
      ...(typeof asset === "string" ? { asset } : {})
    }
  } catch {
    return undefined
  }
}

/**
 * The currency and asset to show: the first of (address, stored, server's first) that the server
 * has. `assets` are the ids the server quotes, in its order.
 */
export const chooseSelection = (options: {
  readonly query: URLSearchParams
  readonly stored: Partial<Selection> | undefined
  readonly currencies: ReadonlyArray<string>
  readonly assets: ReadonlyArray<string>
}): Selection => {
  const pick = (candidates: ReadonlyArray<string | null | undefined>, known: ReadonlyArray<string>): string =>
    candidates.find((c): c is string => typeof c === "string" && known.includes(c)) ?? known[0] ?? ""
  return {
    currency: pick([options.query.get("currency"), options.stored?.currency], options.currencies),
    asset: pick([options.query.get("asset"), options.stored?.asset], options.assets)
  }
}

/** The page's address with the selection in its query, other parameters kept. */
export const addressOf = (href: string, selection: Selection): string => {
  const url = new URL(href)
  url.searchParams.set("currency", selection.currency)
  url.searchParams.set("asset", selection.asset)
  return url.href
}

export type Theme = "light" | "dark"

/** `?theme=light|dark` of the embedded card; anything else follows the system's scheme. */
export const themeOf = (query: URLSearchParams): Theme | undefined => {
  const theme = query.get("theme")
  return theme === "light" || theme === "dark" ? theme : undefined
}
