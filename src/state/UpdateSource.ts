/**
 * Why a snapshot was published. A leaf module (only Schema), because the protocol, and with it the
 * dashboard page's bundle, needs it without the market state's server-side dependencies.
 */
import { Schema } from "effect"

/** Why a snapshot was published: the schedule, a force update, a client's refresh, or a reply to one client. */
export const UpdateSource = Schema.Literal("scheduled_update", "force_update", "request_update", "refresh")
export type UpdateSource = typeof UpdateSource.Type
