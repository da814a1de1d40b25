/**
 * The handlers of the `alerts` group of `DashcastApi` (docs/ARCHITECTURE.md, "Alerts"), over the
 * `Alerts` service: a rule's secret is in the 201 answer only; a value the server cannot use is a
 * 400 naming its field; a store that does not answer is a 503. `ApiHandlers` provides the admin
 * token check (`AdminAuth`) and mounts it.
 */
import { HttpApiBuilder } from "@effect/platform"
import { Effect, Option } from "effect"
import type { StoredAlert } from "../alerts/AlertRule.js"
import { Alerts } from "../alerts/Alerts.js"
import type { AlertStoreError } from "../alerts/AlertStore.js"
import { type AlertResponse, BadRequest, DashcastApi, NotFound, StoreUnavailable } from "./DashcastApi.js"

const iso = (epochMillis: number) => new Date(epochMillis).toISOString()

/** A rule as the API shows it, without its secret. */
export const alertResponse = ({ rule, state }: StoredAlert): AlertResponse => ({
  id: rule.id,
  asset: rule.asset,
  currency: rule.currency,
  condition: rule.condition,
  threshold: rule.threshold,
  webhook_url: rule.webhook_url,
  cooldown: rule.cooldown,
  created_at: iso(rule.created_at),
  armed: state.armed,
  last_fired_at: state.last_fired_at === null ? null : iso(state.last_fired_at)
})

const unavailable = (error: AlertStoreError) => Effect.fail(new StoreUnavailable({ error: error.message }))
const notFound = (id: string) => new NotFound({ error: `no alert rule ${JSON.stringify(id)}` })

export const AlertsLive = HttpApiBuilder.group(DashcastApi, "alerts", (handlers) =>
  Effect.gen(function*() {
    const alerts = yield* Alerts
    return handlers
      .handle("create", ({ payload }) =>
        alerts.create(payload).pipe(
          Effect.map(({ rule, secret, state }) => ({ ...alertResponse({ rule, state }), secret })),
          Effect.catchTags({
            InvalidAlert: (e) => Effect.fail(new BadRequest({ error: e.message, field: e.field })),
            AlertStoreError: unavailable
          })
        ))
      .handle("list", () =>
        alerts.list.pipe(
          Effect.map((all) => ({ alerts: all.map(alertResponse) })),
          Effect.catchTag("AlertStoreError", unavailable)
        ))
      .handle("get", ({ path }) =>
        alerts.get(path.id).pipe(
          Effect.catchTag("AlertStoreError", unavailable),
          Effect.flatMap(Option.match({ onNone: () => Effect.fail(notFound(path.id)), onSome: (a) => Effect.succeed(alertResponse(a)) }))
        ))
      .handle("delete", ({ path }) =>
        alerts.remove(path.id).pipe(
          Effect.catchTag("AlertStoreError", unavailable),
          Effect.flatMap((removed) => (removed ? Effect.void : Effect.fail(notFound(path.id))))
        ))
      .handle("deliveries", ({ path }) =>
        alerts.deliveries(path.id).pipe(
          Effect.catchTag("AlertStoreError", unavailable),
          Effect.flatMap(Option.match({
            onNone: () => Effect.fail(notFound(path.id)),
            onSome: (deliveries) => Effect.succeed({ deliveries })
          }))
        ))
  }))
