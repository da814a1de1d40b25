/**
 * The WebSocket contract (DESIGN.md, "WebSocket"): a Schema for every message either side sends.
 * Formats are the seed's; `seq`, `age_seconds`, `stale` and `stale_fields` are our additions.
 */
import { Either, ParseResult, Schema } from "effect"
import { DashboardSummary, SummaryField } from "../market/DashboardSummary.js"

const Timestamp = Schema.String.annotations({ description: "ISO-8601 UTC time the message was sent" })
const Seq = Schema.Int.pipe(Schema.positive())

export const WELCOME_TEXT = "Connected to real-time dashboard updates"

export const Welcome = Schema.Struct({
  type: Schema.Literal("welcome"),
  data: DashboardSummary,
  timestamp: Timestamp,
  message: Schema.String,
  seq: Seq,
  age_seconds: Schema.Number.pipe(Schema.nonNegative()),
  stale: Schema.Boolean,
  stale_fields: Schema.optional(Schema.Array(SummaryField))
})
export type Welcome = typeof Welcome.Type

export const UpdateSource = Schema.Literal("scheduled_update", "force_update", "request_update", "refresh")
export type UpdateSource = typeof UpdateSource.Type

export const DashboardUpdate = Schema.Struct({
  type: Schema.Literal("dashboard_update"),
  data: DashboardSummary,
  timestamp: Timestamp,
  source: UpdateSource,
  seq: Seq,
  stale_fields: Schema.optional(Schema.Array(SummaryField))
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

export const ServerMessage = Schema.Union(Welcome, DashboardUpdate, ErrorMessage, Pong)
export type ServerMessage = typeof ServerMessage.Type

export const Ping = Schema.Struct({ type: Schema.Literal("ping") })
export const RequestUpdate = Schema.Struct({ type: Schema.Literal("request_update") })
export const ClientMessage = Schema.Union(Ping, RequestUpdate)
export type ClientMessage = typeof ClientMessage.Type

/** Encodes a server message to its JSON text frame. */
export const encodeServerMessage: (message: ServerMessage) => string = Schema.encodeSync(
  Schema.parseJson(ServerMessage)
)

/** Decodes a frame a server sent (used by the client SDK and tests). */
export const decodeServerMessage = Schema.decodeUnknownEither(Schema.parseJson(ServerMessage))

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
      return "malformed JSON: expected {\"type\":\"ping\"} or {\"type\":\"request_update\"}"
    case "UnknownType":
      return `unknown message type: ${problem.type}`
    case "BinaryFrame":
      return "binary frames are not supported: send JSON text"
  }
}

export const formatParseError = ParseResult.TreeFormatter.formatErrorSync
