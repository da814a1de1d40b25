/**
 * A WebSocket client for tests over the global `WebSocket` (Bun's): it records every frame the
 * server sends, decoded with the protocol's own Schema so that each one is also checked against the
 * contract, and lets a test wait for the next message it cares about, never longer than a timeout.
 */
import { Data, Duration, Effect, Either, type Scope } from "effect"
import { connect as netConnect, type Socket } from "node:net"
import { decodeServerMessage, formatParseError, type ServerMessage } from "../../src/realtime/Protocol.js"

/** A wait that ran out, a frame that broke the contract, or a socket that would not open. */
export class WsClientError extends Data.TaggedError("WsClientError")<{ readonly message: string }> {}

export interface CloseInfo {
  readonly code: number
  readonly reason: string
}

/** One frame as received: its text, and the message it decodes to. */
export interface Frame {
  readonly raw: string
  readonly message: ServerMessage
}

export interface WaitOptions {
  /** How long to wait before failing; 5 seconds by default. */
  readonly timeout?: Duration.DurationInput
  /** Names the awaited message in the failure. */
  readonly label?: string
}

const DEFAULT_TIMEOUT = Duration.seconds(5)

/**
 * The global `WebSocket` is Bun's at run time, but with lib.dom in the project, bun-types declares
 * it with the DOM's constructor and hides Bun's options overload; this restores that overload.
 */
const BunWebSocket = WebSocket as unknown as new(url: string, options?: Bun.WebSocketOptions) => WebSocket

export interface WsClient {
  readonly url: string
  /** Every frame received so far, in order. */
  readonly frames: () => ReadonlyArray<Frame>
  /** The close code and reason, once the socket has closed. */
  readonly closeInfo: () => CloseInfo | undefined
  readonly send: (data: string | Uint8Array) => Effect.Effect<void>
  /**
   * The next frame after the ones already consumed that matches `predicate` (any frame without
   * one); the frames it skips are consumed too. Fails on timeout, on a frame that does not decode
   * and when the socket closes first.
   */
  readonly next: <M extends ServerMessage = ServerMessage>(
    predicate?: ((message: ServerMessage) => message is M) | ((message: ServerMessage) => boolean),
    options?: WaitOptions
  ) => Effect.Effect<Frame & { readonly message: M }, WsClientError>
  /**
   * Sends a ping and waits for its pong: since the server answers in order, the frames returned
   * (everything before that pong, not yet consumed) are all the server had sent until then.
   */
  readonly sync: (options?: WaitOptions) => Effect.Effect<ReadonlyArray<Frame>, WsClientError>
  /** Waits for the socket to close and returns its code and reason. */
  readonly closed: (options?: WaitOptions) => Effect.Effect<CloseInfo, WsClientError>
  readonly close: (code?: number, reason?: string) => Effect.Effect<void>
}

export const isType =
  <T extends ServerMessage["type"]>(type: T) => (message: ServerMessage): message is Extract<ServerMessage, { type: T }> =>
    message.type === type

export interface ConnectOptions extends WaitOptions {
  /** Bun's client options: request headers (such as `Origin`), TLS settings. */
  readonly socket?: Bun.WebSocketOptions
}

/** Opens a socket and closes it (1000) when the scope closes, if the server has not already. */
export const connect = (url: string | URL, options: ConnectOptions = {}): Effect.Effect<WsClient, WsClientError, Scope.Scope> =>
  Effect.acquireRelease(open(String(url), options), (client) => client.close())

const open = (url: string, options: ConnectOptions): Effect.Effect<WsClient, WsClientError> =>
  Effect.suspend(() => {
    const socket = new BunWebSocket(url, options.socket)
    socket.binaryType = "arraybuffer"
    const frames: Array<Frame> = []
    /** Frames that broke the contract: a test that waits past one fails with its description. */
    let violation: string | undefined
    let closeInfo: CloseInfo | undefined
    let cursor = 0
    const watchers = new Set<() => void>()
    const notify = () => {
      for (const watcher of [...watchers]) watcher()
    }

    socket.addEventListener("message", (event) => {
      if (typeof event.data !== "string") {
        violation ??= "the server sent a binary frame; the protocol has JSON text frames only"
      } else {
        const decoded = decodeServerMessage(event.data)
        if (Either.isRight(decoded)) frames.push({ raw: event.data, message: decoded.right })
        else violation ??= `a frame does not match the protocol: ${event.data}\n${formatParseError(decoded.left)}`
      }
      notify()
    })
    socket.addEventListener("close", (event) => {
      closeInfo = { code: event.code, reason: event.reason }
      notify()
    })

    /** Runs `check` now and after every event until it settles, failing after the timeout. */
    const waitUntil = <A>(
      check: () => Either.Either<A, WsClientError> | undefined,
      description: string,
      waitOptions: WaitOptions
    ): Effect.Effect<A, WsClientError> =>
      Effect.async<A, WsClientError>((resume) => {
        const watcher = () => {
          const result = check()
          if (result === undefined) return
          watchers.delete(watcher)
          resume(result)
        }
        watchers.add(watcher)
        watcher()
        return Effect.sync(() => watchers.delete(watcher))
      }).pipe(
        Effect.timeoutFail({
          duration: waitOptions.timeout ?? DEFAULT_TIMEOUT,
          onTimeout: () =>
            new WsClientError({
              message: `${description}: nothing within ${Duration.format(Duration.decode(waitOptions.timeout ?? DEFAULT_TIMEOUT))}; received ${
                JSON.stringify(frames.map((f) => f.raw))
              }`
            })
        })
      )

    const next: WsClient["next"] = (predicate, waitOptions = {}) => {
      const description = `waiting for ${waitOptions.label ?? "a message"} on ${url}`
      return waitUntil(() => {
        for (let i = cursor; i < frames.length; i++) {
          const frame = frames[i]!
          if (predicate === undefined || predicate(frame.message)) {
            cursor = i + 1
            // The predicate, when a type guard, has just checked this frame's message.
            return Either.right(frame as Frame & { readonly message: never })
          }
        }
        if (violation !== undefined) return Either.left(new WsClientError({ message: `${description}: ${violation}` }))
        if (closeInfo !== undefined) {
          return Either.left(
            new WsClientError({ message: `${description}: socket closed (${closeInfo.code} ${closeInfo.reason})` })
          )
        }
        return undefined
      }, description, waitOptions)
    }

    const send = (data: string | Uint8Array) => Effect.sync(() => socket.send(data))

    const client: WsClient = {
      url,
      frames: () => frames,
      closeInfo: () => closeInfo,
      send,
      next,
      sync: (waitOptions = {}) =>
        Effect.gen(function*() {
          const from = cursor
          yield* send(JSON.stringify({ type: "ping" }))
          yield* next(isType("pong"), { label: "the pong of a sync ping", ...waitOptions })
          return frames.slice(from, cursor - 1)
        }),
      closed: (waitOptions = {}) =>
        waitUntil(
          () => (closeInfo === undefined ? undefined : Either.right(closeInfo)),
          `waiting for ${url} to close`,
          waitOptions
        ),
      close: (code = 1000, reason = "") =>
        Effect.sync(() => {
          if (socket.readyState === WebSocket.CONNECTING || socket.readyState === WebSocket.OPEN) socket.close(code, reason)
        })
    }

    const opened = Effect.async<WsClient, WsClientError>((resume) => {
      const onOpen = () => resume(Effect.succeed(client))
      const onFail = () => resume(Effect.fail(new WsClientError({ message: `cannot open ${url}` })))
      socket.addEventListener("open", onOpen, { once: true })
      socket.addEventListener("error", onFail, { once: true })
      return Effect.sync(() => {
        socket.removeEventListener("open", onOpen)
        socket.removeEventListener("error", onFail)
      })
    })
    return opened.pipe(
      Effect.timeoutFail({
        duration: options.timeout ?? DEFAULT_TIMEOUT,
        onTimeout: () => new WsClientError({ message: `cannot open ${url}: timed out` })
      }),
      Effect.tapError(() => Effect.sync(() => socket.close()))
    )
  })

// ---------------------------------------------------------------------------------------------
// A client that can stop reading

/**
 * A WebSocket client over a plain TCP socket (`node:net`) that can stop reading: while paused, the
 * kernel's buffers fill and the server's socket goes over its backpressure limit, as with a client
 * on a slow link. It speaks just enough of RFC 6455 for tests: the handshake, and unmasked text
 * frames from the server (control frames are skipped).
 */
export interface PausableClient {
  /** Text frames received so far, in order. */
  readonly texts: () => ReadonlyArray<string>
  /** Stops reading from the socket. */
  readonly pause: Effect.Effect<void>
  readonly resume: Effect.Effect<void>
  /** Waits until `done` holds of the frames received so far (10 s at most). */
  readonly until: (done: (texts: ReadonlyArray<string>) => boolean, label: string) => Effect.Effect<ReadonlyArray<string>, WsClientError>
}

export const connectPausable = (url: string): Effect.Effect<PausableClient, WsClientError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<{ readonly socket: Socket; readonly client: PausableClient }, WsClientError>((resume) => {
      const target = new URL(url)
      const socket = netConnect(Number(target.port), target.hostname)
      const texts: Array<string> = []
      const watchers = new Set<() => void>()
      let buffer = Buffer.alloc(0)
      let upgraded = false
      let opened = false
      const fail = (message: string) => {
        if (!opened) {
          opened = true
          resume(Effect.fail(new WsClientError({ message: `${url}: ${message}` })))
        }
      }
      /** Reads every complete frame in `buffer`. */
      const readFrames = () => {
        for (;;) {
          if (buffer.length < 2) return
          const opcode = buffer[0]! & 0x0f
          let length = buffer[1]! & 0x7f
          let offset = 2
          if (length === 126) {
            if (buffer.length < 4) return
            length = buffer.readUInt16BE(2)
            offset = 4
          } else if (length === 127) {
            if (buffer.length < 10) return
            length = Number(buffer.readBigUInt64BE(2))
            offset = 10
          }
          if (buffer.length < offset + length) return
          if (opcode === 1) texts.push(buffer.subarray(offset, offset + length).toString("utf8"))
          buffer = buffer.subarray(offset + length)
        }
      }
      socket.on("connect", () => {
        socket.write(
          `GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
            `Sec-WebSocket-Key: ${Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n\r\n`
        )
      })
      socket.on("data", (chunk: Buffer) => {
        buffer = Buffer.concat([buffer, chunk])
        if (!upgraded) {
          const end = buffer.indexOf("\r\n\r\n")
          if (end < 0) return
          const head = buffer.subarray(0, end).toString("latin1")
          if (!head.startsWith("HTTP/1.1 101")) return fail(`upgrade refused: ${head.split("\r\n")[0]}`)
          upgraded = true
          buffer = buffer.subarray(end + 4)
          opened = true
          resume(Effect.succeed({ socket, client }))
        }
        readFrames()
        for (const watcher of [...watchers]) watcher()
      })
      socket.on("error", (error) => fail(error.message))
      const client: PausableClient = {
        texts: () => texts,
        pause: Effect.sync(() => void socket.pause()),
        resume: Effect.sync(() => void socket.resume()),
        until: (done, label) =>
          Effect.async<ReadonlyArray<string>, WsClientError>((resumeWait) => {
            const watcher = () => {
              if (!done(texts)) return
              watchers.delete(watcher)
              resumeWait(Effect.succeed(texts))
            }
            watchers.add(watcher)
            watcher()
            return Effect.sync(() => watchers.delete(watcher))
          }).pipe(
            Effect.timeoutFail({
              duration: "10 seconds",
              onTimeout: () => new WsClientError({ message: `${url}: ${label}: nothing within 10 seconds; received ${texts.length} frames` })
            })
          )
      }
      return Effect.sync(() => socket.destroy())
    }).pipe(
      Effect.timeoutFail({ duration: DEFAULT_TIMEOUT, onTimeout: () => new WsClientError({ message: `cannot open ${url}: timed out` }) })
    ),
    ({ socket }) => Effect.sync(() => socket.destroy())
  ).pipe(Effect.map(({ client }) => client))
