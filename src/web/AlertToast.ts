/**
 * The page's notice of an alert firing (docs/ARCHITECTURE.md, "Alerts"): a short message in a
 * corner for a few seconds, announced politely to screen readers. Self-contained (its element and
 * styles are made here) so that it stays out of the page's own markup.
 */
import type { AlertEvent } from "./DashcastClient.js"

/** How long a notice stays, and how many are shown at once (the oldest goes first). */
export const ALERT_SHOWN_MS = 8_000
const MOST_SHOWN = 3

const STYLE = `
.dashcast-alerts { position: fixed; right: 1rem; bottom: 1rem; z-index: 10; display: flex; flex-direction: column; gap: .5rem; max-width: min(28rem, calc(100vw - 2rem)); }
.dashcast-alert { margin: 0; padding: .75rem 1rem; border-radius: .5rem; background: #1d2433; color: #f3f5f9; box-shadow: 0 4px 16px rgb(0 0 0 / .25); border-left: 4px solid #f5b301; font: 500 .95rem/1.35 system-ui, sans-serif; }
@media (prefers-color-scheme: light) { .dashcast-alert { background: #ffffff; color: #141a24; } }
@media (prefers-reduced-motion: no-preference) { .dashcast-alert { animation: dashcast-alert-in .2s ease-out; } }
@keyframes dashcast-alert-in { from { opacity: 0; transform: translateY(.5rem); } }
`

const number = (value: number) => new Intl.NumberFormat(undefined, { maximumFractionDigits: Math.abs(value) >= 100 ? 2 : 6 }).format(value)

const titleOf = (asset: string | null) => (asset === null ? "" : asset.charAt(0).toUpperCase() + asset.slice(1).replaceAll("-", " "))

/** The notice's words: `Bitcoin price above 70,000 USD: 70,123.45`. */
export const describeAlert = (event: Pick<AlertEvent, "asset" | "currency" | "condition" | "threshold" | "value">): string => {
  const side = event.condition.endsWith("_above") ? "above" : "below"
  const currency = event.currency.toUpperCase()
  switch (event.condition) {
    case "price_above":
    case "price_below":
      return `${titleOf(event.asset)} price ${side} ${number(event.threshold)} ${currency}: ${number(event.value)}`
    case "change_24h_above":
    case "change_24h_below":
      return `${titleOf(event.asset)} 24h change ${side} ${number(event.threshold)} %: ${number(event.value)} %`
    case "rsi_above":
    case "rsi_below":
      return `${titleOf(event.asset)} RSI-14 ${side} ${number(event.threshold)}: ${number(event.value)}`
    case "fear_greed_above":
    case "fear_greed_below":
      return `Fear & Greed ${side} ${number(event.threshold)}: ${number(event.value)}`
  }
}

/** Returns the listener for `client.onAlert` that shows each firing on `document`. */
export const alertToasts = (document: Document): ((event: AlertEvent) => void) => {
  let container: HTMLElement | undefined
  const ensure = (): HTMLElement => {
    if (container !== undefined) return container
    const style = document.createElement("style")
    style.textContent = STYLE
    document.head.append(style)
    container = document.createElement("div")
    container.className = "dashcast-alerts"
    container.id = "alerts"
    // role=status is a polite live region of its own (the page's announcer speaks of the market).
    container.setAttribute("role", "status")
    document.body.append(container)
    return container
  }
  return (event) => {
    const host = ensure()
    const notice = document.createElement("p")
    notice.className = "dashcast-alert"
    notice.dataset["alertId"] = event.alertId
    notice.dataset["seq"] = String(event.seq)
    notice.textContent = describeAlert(event)
    host.append(notice)
    while (host.children.length > MOST_SHOWN) host.firstElementChild?.remove()
    setTimeout(() => notice.remove(), ALERT_SHOWN_MS)
  }
}
