/**
 * Shared pieces of the fan-out benchmark: the IPC messages between the coordinator
 * (`bench/fanout.ts`) and its client processes (`bench/fanout-client.ts`), statistics, and readers
 * of a server process's `/proc` counters.
 */
import { readdirSync, readFileSync } from "node:fs"

/** What every client of a scenario expects of its frames, checked on every frame it receives. */
export interface FrameCheck {
  /** The currency of each client: client k of the scenario (over all processes) has `currencies[k % length]`. */
  readonly currencies: ReadonlyArray<string>
  /** Whether a client names its currency in the URL (`/ws?currency=eur`); a client of today does not. */
  readonly inUrl: boolean
  /** Entries of `assets` in every frame (checked on one frame per currency and broadcast). */
  readonly assets: number
  /** Whether frames carry the seed's `data` summary (they do whenever bitcoin is watched). */
  readonly data: boolean
}

export type ClientCommand =
  | {
    readonly type: "connect"
    readonly url: string
    readonly count: number
    /** Index of this process's first client in the scenario, for the currency of each client. */
    readonly firstIndex: number
    readonly check: FrameCheck
    readonly maxInFlight: number
    readonly timeoutMs: number
    /** WebSocket clients of `url` (`ws://…/ws`), or Server-Sent Events clients of `url` (`http://…/api/stream`). */
    readonly transport: "websocket" | "sse"
  }
  | { readonly type: "arm"; readonly firstSeq: number; readonly count: number }
  | { readonly type: "report"; readonly triggers: ReadonlyArray<number> }
  | { readonly type: "close"; readonly timeoutMs: number }
  | { readonly type: "exit" }

export interface ConnectResult {
  readonly opened: number
  readonly failed: number
  /** Epoch ms of the first handshake started and the last one completed. */
  readonly firstStart: number
  readonly lastOpen: number
  /** Connect start to first frame, per client that got one. */
  readonly welcomeMs: ReadonlyArray<number>
  /** Per currency, the size of the first welcome a client of that currency received. */
  readonly welcomeBytes: Readonly<Record<string, number>>
  /** Welcomes of another currency than the client's, or not a welcome at all. */
  readonly badWelcomes: number
}

export interface PhaseReport {
  /** Trigger to receipt, for every broadcast frame any client received. */
  readonly latencyMs: ReadonlyArray<number>
  /** Per armed seq, the epoch ms at which this process's last client received it (0: none did). */
  readonly lastReceivedAt: ReadonlyArray<number>
  /** Per armed seq, the epoch ms at which this process's first client received it (0: none did). */
  readonly firstReceivedAt: ReadonlyArray<number>
  /** Armed seqs a connected client never received, summed over clients. */
  readonly lost: number
  readonly clientsWithLoss: number
  /** Connected clients that never received the last armed seq (after a burst: not up to date). */
  readonly missedLast: number
  readonly duplicates: number
  readonly unexpected: number
  readonly unexpectedCloses: number
  /** Frames with another currency than the client's (not counted as received). */
  readonly wrongCurrency: number
  /** Sampled frames (the first of each broadcast and currency) that failed the full JSON check. */
  readonly malformed: number
  /** Per currency, the mean size of the sampled update frames. */
  readonly updateBytes: Readonly<Record<string, number>>
}

export type ClientReply =
  | { readonly type: "ready" }
  | { readonly type: "connected"; readonly result: ConnectResult }
  | { readonly type: "armed" }
  | { readonly type: "done"; readonly seq: number }
  | { readonly type: "report"; readonly report: PhaseReport }
  | { readonly type: "closed" }

/** Epoch milliseconds with sub-millisecond precision; the same clock in every Bun process. */
export const now = () => performance.timeOrigin + performance.now()

/** Nearest-rank percentile of an ascending array (NaN when empty). */
export const percentile = (sorted: ArrayLike<number>, p: number): number =>
  sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!

export const sortedNumbers = (xs: Iterable<number>): Float64Array => Float64Array.from(xs).sort()

export const median = (xs: ReadonlyArray<number>): number => {
  const finite = xs.filter(Number.isFinite).sort((a, b) => a - b)
  if (finite.length === 0) return Number.NaN
  const mid = finite.length >> 1
  return finite.length % 2 === 1 ? finite[mid]! : (finite[mid - 1]! + finite[mid]!) / 2
}

/** Resident set size of a process in KiB (VmRSS). */
export const rssKiB = (pid: number): number => {
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))
  return match === null ? Number.NaN : Number(match[1])
}

/** The clock ticks (`getconf CLK_TCK`, 100 on Linux) of one second. */
export const TICKS_PER_SECOND = 100

/** User plus system CPU time of a process (all its threads), in clock ticks, from /proc/<pid>/stat. */
export const cpuTicks = (pid: number): number => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return Number(fields[11]) + Number(fields[12])
}

/**
 * CPU time of all threads of a process in nanoseconds, from /proc/<pid>/task/<tid>/schedstat (exact,
 * where /proc/<pid>/stat counts 10 ms ticks); for short phases such as a connection ramp.
 */
export const cpuNanos = (pid: number): number => {
  let total = 0
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      total += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0])
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return total
}

/**
 * Time the main thread of a process spent runnable but waiting for a CPU, in nanoseconds (second
 * field of /proc/<pid>/task/<pid>/schedstat): how much other work on its core held it back. Only the
 * main thread, which runs the JavaScript and the sends; helper threads (GC) would count twice.
 */
export const mainThreadWaitNanos = (pid: number): number =>
  Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, "utf8").split(" ")[1])

/** The soft limit on open files of this process (children inherit it). */
export const openFileLimit = (): number => {
  const match = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync("/proc/self/limits", "utf8"))
  return match === null || match[1] === "unlimited" ? Number.POSITIVE_INFINITY : Number(match[1])
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
