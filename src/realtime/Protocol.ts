/**
 * The WebSocket contract (docs/ARCHITECTURE.md, "Protocol"): a Schema for every message either side
 * sends, and the frames themselves, built once per snapshot and currency. Formats are the seed's;
 * `currency`, `assets`, `market`, `seq`, `age_seconds`, `stale`, `stale_fields` and `stale_paths`
 * are our additions, and `data` (the seed's summary) is there whenever bitcoin is watched.
 */
import { DateTime, Either, ParseResult, Schema } from "effect"
import { Condition } from "../alerts/AlertRule.js"
import { DashboardSummary, SummaryField } from "../market/DashboardSummary.js"
import { AssetQuote, type CurrencyView, MarketSide } from "../market/Watchlist.js"
import { UpdateSource } from "../state/UpdateSource.js"

export { UpdateSource }

const Timestamp = Schema.String.annotations({ description: "ISO-8601 UTC time the message was sent" })
const Seq = Schema.Int.pipe(Schema.positive())

export const WELCOME_TEXT = "Connected to real-time dashboard updates"

/** What every welcome and update says of the market, in the frame's currency (and `GET /api/dashboard`). */
export const ViewFields = {
  currency: Schema.String,
  assets: Schema.Array(AssetQuote),
  market: MarketSide,
  /** The seed's summary of bitcoin in this currency, when bitcoin is watched and all of it is known. */
  data: Schema.optional(DashboardSummary),
  /** The seed's names of `data`'s fields that kept an old value. */
  stale_fields: Schema.optional(Schema.Array(SummaryField)),
  /** Every value of this currency's view that kept an old value, as a path (`assets.ethereum.rsi_14`). */
  stale_paths: Schema.optional(Schema.Array(Schema.String))
}

export const Welcome = Schema.Struct({
  type: Schema.Literal("welcome"),
  ...ViewFields,
  timestamp: Timestamp,
  message: Schema.String,
  seq: Seq,
  age_seconds: Schema.Number.pipe(Schema.nonNegative()),
  stale: Schema.Boolean
})
export type Welcome = typeof Welcome.Type

export const DashboardUpdate = Schema.Struct({
  type: Schema.Literal("dashboard_update"),
  ...ViewFields,
  timestamp: Timestamp,
  source: UpdateSource,
  seq: Seq
})
export type DashboardUpdate = typeof DashboardUpdate.Type

export const ErrorMessage = Schema.Struct({
  type: Schema.Literal("error"),
  error: Schema.String,
  timestamp: Timestamp,
  retry_after: Schema.optional(Schema.Int.pipe(Schema.nonNegative()))
})
export type ErrorMessage = typeof ErrorMessage.Type

export const Pong = Schema.Struct({
  type: Schema.Literal("pong"),
  timestamp: Timestamp
})
export type Pong = typeof Pong.Type

/**
 * An alert rule fired (docs/ARCHITECTURE.md, "Alerts"), on the topic of the rule's currency. `id` is
 * the firing's, the same as its webhook's `webhook-id`; `timestamp` is the snapshot's time.
 */
export const AlertFired = Schema.Struct({
  type: Schema.Literal("alert"),
  id: Schema.String,
  alert_id: Schema.String,
  /** `null` for Fear & Greed rules. */
  asset: Schema.NullOr(Schema.String),
  currency: Schema.String,
  condition: Condition,
  threshold: Schema.Number,
  value: Schema.Number,
  seq: Seq,
  timestamp: Timestamp
})
export type AlertFired = typeof AlertFired.Type

export const ServerMessage = Schema.Union(Welcome, DashboardUpdate, ErrorMessage, Pong, AlertFired)
export type ServerMessage = typeof ServerMessage.Type

export const Ping = Schema.Struct({ type: Schema.Literal("ping") })
export const RequestUpdate = Schema.Struct({ type: Schema.Literal("request_update") })
/** Switches the socket to another of the server's currencies; answered with a fresh welcome. */
export const Subscribe = Schema.Struct({ type: Schema.Literal("subscribe"), currency: Schema.String.pipe(Schema.maxLength(32)) })
export const ClientMessage = Schema.Union(Ping, RequestUpdate, Subscribe)
export type ClientMessage = typeof ClientMessage.Type

/** Encodes a server message to its JSON text frame. */
export const encodeServerMessage: (message: ServerMessage) => string = Schema.encodeSync(
  Schema.parseJson(ServerMessage)
)

/** Decodes a frame a server sent (used by the client SDK and tests). */
export const decodeServerMessage = Schema.decodeUnknownEither(Schema.parseJson(ServerMessage))

// ---------------------------------------------------------------------------------------------
// Frames, encoded once per snapshot and currency

/**
 * One currency's view in wire form: the members every welcome and update of this snapshot and
 * currency share, as JSON without its braces, so that a frame is one string concatenation.
 */
export interface EncodedView {
  readonly currency: string
  readonly seq: number
  /** `"currency":…,"assets":[…],"market":{…}[,"data":{…}][,"stale_fields":[…]][,"stale_paths":[…]]` */
  readonly members: string
  /** Whether any value of this view kept an old value. */
  readonly hasStaleValues: boolean
}

/**
 * The view members in their encoded (JSON) form. Written out instead of `Schema.encode`, which
 * checks every refinement of 50 assets again on every update and currency (four times the cost, on
 * the path to every client), for values that were checked when they were decoded or made. The
 * result is typed by the Schema's encoded side, and test/realtime/Protocol.test.ts checks it equals
 * `Schema.encode` for any view.
 */
export const encodeViewMembers = (view: CurrencyView): Schema.Struct.Encoded<typeof ViewFields> => {
  const data = view.data
  return {
    currency: view.currency,
    assets: view.assets.map((asset) => ({
      id: asset.id,
      symbol: asset.symbol,
      name: asset.name,
      price: asset.price,
      change_24h: asset.change_24h,
      market_cap: asset.market_cap,
      volume_24h: asset.volume_24h,
      rsi_14: asset.rsi_14,
      last_updated: DateTime.formatIso(asset.last_updated)
    })),
    market: view.market,
    ...(data === undefined ? {} : {
      data: {
        btc_price: data.btc_price,
        btc_change_24h: data.btc_change_24h,
        market_cap: data.market_cap,
        volume_24h: data.volume_24h,
        fear_greed_index: data.fear_greed_index,
        rsi_14: data.rsi_14,
        last_updated: DateTime.formatIso(data.last_updated)
      }
    }),
    ...(view.staleFields.length > 0 ? { stale_fields: view.staleFields } : {}),
    ...(view.stalePaths.length > 0 ? { stale_paths: view.stalePaths } : {})
  }
}

export const encodeView = (view: CurrencyView, seq: number): EncodedView => {
  const json = JSON.stringify(encodeViewMembers(view))
  return { currency: view.currency, seq, members: json.slice(1, -1), hasStaleValues: view.stalePaths.length > 0 }
}

/** The `welcome` for a view: its age at `now`, stale when older than FRESHNESS (`old`) or holding old values. */
export const welcomeFrame = (view: EncodedView, timestamp: string, ageSeconds: number, old: boolean): string =>
  `{"type":"welcome",${view.members},"timestamp":${JSON.stringify(timestamp)},"message":${JSON.stringify(WELCOME_TEXT)},"seq":${view.seq},"age_seconds":${ageSeconds},"stale":${
    old || view.hasStaleValues
  }}`

export const updateFrame = (view: EncodedView, source: UpdateSource, timestamp: string): string =>
  `{"type":"dashboard_update",${view.members},"timestamp":${JSON.stringify(timestamp)},"source":"${source}","seq":${view.seq}}`

// ---------------------------------------------------------------------------------------------
// Client frames

/** Why a client frame was refused; the text is sent back in an `error` message. */
export type ClientFrameProblem =
  | { readonly _tag: "MalformedJson" }
  | { readonly _tag: "UnknownType"; readonly type: string }
  | { readonly _tag: "BinaryFrame" }

const decodeClientMessage = Schema.decodeUnknownEither(ClientMessage)

/**
 * Reads one client frame. The bare text `ping` of the original client is a ping; anything that is
 * not one of the client messages is a problem to report, never an exception.
 */
export const parseClientFrame = (frame: string | Uint8Array): Either.Either<ClientMessage, ClientFrameProblem> => {
  if (typeof frame !== "string") return Either.left({ _tag: "BinaryFrame" })
  if (frame === "ping") return Either.right({ type: "ping" })
  let json: unknown
  try {
    json = JSON.parse(frame)
  } catch {
    return Either.left({ _tag: "MalformedJson" })
  }
  return Either.mapLeft(decodeClientMessage(json), (): ClientFrameProblem => ({
    _tag: "UnknownType",
    type: typeof json === "object" && json !== null && "type" in json ? String(json.type).slice(0, 64) : "(none)"
  }))
}

export const describeProblem = (problem: ClientFrameProblem): string => {
  switch (problem._tag) {
    case "MalformedJson":
      return "malformed JSON: expected {\"type\":\"ping\"}, {\"type\":\"request_update\"} or {\"type\":\"subscribe\",\"currency\":\"…\"}"
    case "UnknownType":
      return problem.type === "subscribe"
        ? "subscribe needs a currency: {\"type\":\"subscribe\",\"currency\":\"eur\"}"
        : `unknown message type: ${problem.type}`
    case "BinaryFrame":
      return "binary frames are not supported: send JSON text"
  }
}

export const formatParseError = ParseResult.TreeFormatter.formatErrorSync
