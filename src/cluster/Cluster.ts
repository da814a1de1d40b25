/**
 * Coordination between instances (docs/ARCHITECTURE.md, "Clustering"): who runs the schedule, the cluster-wide
 * summary sequence, the channel every broadcast travels on, and the gap between upstream calls.
 * One port, two implementations: `Standalone` (no Redis) here and `RedisCluster` beside it.
 */
import { Context, type Duration, Effect, Layer, Option, SubscriptionRef } from "effect"
import type { LazyArg } from "effect/Function"

export class Cluster extends Context.Tag("dashcast/Cluster")<Cluster, {
  readonly kind: "standalone" | "redis"
  /** True while this instance should run the schedule; changes when the lease moves. */
  readonly leadership: SubscriptionRef.SubscriptionRef<boolean>
  /** The sequence number of a new summary: one sequence for the cluster, always above `floor`. */
  readonly nextSeq: (floor: number) => Effect.Effect<number>
  /**
   * Hands a message to every instance, this one included, exactly once each (through the
   * handler given to `onMessage`). `false` means it did not go out: deliver it locally yourself.
   * The message is made only if it goes out (a single instance never encodes a snapshot for it).
   */
  readonly broadcast: (message: LazyArg<string>) => Effect.Effect<boolean>
  /**
   * Adds a reader of the channel's messages; every reader gets every message, synchronously, in
   * arrival order (the market state reads its envelopes, the alerts theirs; each ignores the rest).
   */
  readonly onMessage: (handler: (message: string) => void) => Effect.Effect<void>
  /**
   * Claims the right to call upstream outside the schedule for `gap` (a force update or a refresh),
   * for the whole cluster; `Some(wait)` when another call happened within the gap. A scheduled
   * call (`force: true`) always claims it, so force updates right after it are refused.
   */
  readonly claimFetch: (gap: Duration.Duration, force: boolean) => Effect.Effect<Option.Option<Duration.Duration>>
}>() {}

/** A single instance: always the leader, a local sequence, local delivery, a local gap. */
export const StandaloneCluster: Layer.Layer<Cluster> = Layer.effect(
  Cluster,
  Effect.map(SubscriptionRef.make(true), (leadership) =>
    Cluster.of({
      kind: "standalone",
      leadership,
      nextSeq: (floor) => Effect.succeed(floor + 1),
      broadcast: () => Effect.succeed(false),
      onMessage: () => Effect.void,
      claimFetch: () => Effect.succeed(Option.none())
    }))
)
