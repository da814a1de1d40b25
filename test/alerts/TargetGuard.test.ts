/**
 * Where webhooks may go (src/alerts/TargetGuard.ts, issue 15 "Safety"): loopback, private,
 * link-local, metadata and other special addresses are refused, in every spelling (IPv4-mapped
 * IPv6, NAT64, 6to4, the URL parser's hex and integer forms); a name is refused when any of its
 * addresses is; and the request goes to the very address that was checked, so a second DNS answer
 * (rebinding) cannot redirect it.
 */
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either, FastCheck as fc, Layer } from "effect"
import { parseWebhookUrl, pinTarget, privateKindOf, type Resolver } from "../../src/alerts/TargetGuard.js"
import { AttemptResult, DnsResolver, newSecret, WebhookSender } from "../../src/alerts/Webhooks.js"
import { AppConfig } from "../../src/Config.js"
import { startWebhookReceiver } from "../support/WebhookReceiver.js"

const refusedKinds: ReadonlyArray<readonly [string, string]> = [
  ["127.0.0.1", "loopback"],
  ["127.255.0.9", "loopback"],
  ["0.0.0.0", "unspecified"],
  ["10.1.2.3", "private"],
  ["172.16.0.1", "private"],
  ["172.31.255.255", "private"],
  ["192.168.1.1", "private"],
  ["100.64.0.1", "shared"],
  ["169.254.0.7", "link-local"],
  ["169.254.169.254", "metadata"],
  ["100.100.100.200", "metadata"],
  ["224.0.0.1", "multicast"],
  ["255.255.255.255", "reserved"],
  ["192.0.2.10", "documentation"],
  ["::1", "loopback"],
  ["::", "unspecified"],
  ["fe80::1", "link-local"],
  ["fc00::1", "private"],
  ["fd12:3456::1", "private"],
  ["fd00:ec2::254", "metadata"],
  ["ff02::1", "multicast"],
  ["2001:db8::1", "documentation"],
  ["::ffff:127.0.0.1", "loopback"],
  ["::ffff:7f00:1", "loopback"],
  ["::ffff:169.254.169.254", "metadata"],
  ["::ffff:10.0.0.1", "private"],
  ["64:ff9b::a9fe:a9fe", "metadata"],
  ["2002:c0a8:0101::1", "private"]
]

const publicAddresses = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111", "2001:4860:4860::8888", "::ffff:8.8.8.8"]

const resolverOf = (table: Record<string, ReadonlyArray<string>>): Resolver => async (host) => {
  const found = table[host]
  if (found === undefined) throw new Error(`getaddrinfo ENOTFOUND ${host}`)
  return found
}

const pin = (url: string, resolve: Resolver, allowPrivate = false) =>
  parseWebhookUrl(url).pipe(Effect.flatMap((u) => pinTarget(u, { allowPrivate, resolve })), Effect.either)

describe("address classification", () => {
  it("refuses every special-purpose address it should, by kind", () => {
    for (const [address, kind] of refusedKinds) expect(privateKindOf(address), address).toBe(kind)
  })

  it("lets public addresses through", () => {
    for (const address of publicAddresses) expect(privateKindOf(address), address).toBeUndefined()
  })

  it.prop("any address inside 10/8, 127/8, 169.254/16, 172.16/12 and 192.168/16 is refused", [
    fc.constantFrom(
      { network: 0x0a000000, prefix: 8 },
      { network: 0x7f000000, prefix: 8 },
      { network: 0xa9fe0000, prefix: 16 },
      { network: 0xac100000, prefix: 12 },
      { network: 0xc0a80000, prefix: 16 }
    ),
    fc.integer({ min: 0, max: 2 ** 32 - 1 })
  ], ([{ network, prefix }, host]) => {
    const address = (network | (host >>> prefix)) >>> 0
    const text = [24, 16, 8, 0].map((shift) => (address >>> shift) & 255).join(".")
    expect(privateKindOf(text), text).toBeDefined()
    // and the same address mapped into IPv6
    expect(privateKindOf(`::ffff:${text}`), `::ffff:${text}`).toBeDefined()
  })
})

describe("webhook targets", () => {
  it.effect("refuses URLs that are not http(s) or carry credentials, naming why", () =>
    Effect.gen(function*() {
      const resolve = resolverOf({ "hooks.example.com": ["93.184.216.34"] })
      for (const url of ["ftp://hooks.example.com/x", "file:///etc/passwd", "hooks.example.com/x", "javascript:alert(1)", "https://user:pw@hooks.example.com/"]) {
        const result = yield* pin(url, resolve)
        expect(Either.isLeft(result), url).toBe(true)
        if (Either.isLeft(result)) expect(result.left.reason).toBe("NotHttp")
      }
      expect(Either.isRight(yield* pin("https://hooks.example.com/x", resolve))).toBe(true)
    }))

  it.effect("refuses a name with any private address among its answers, a name that does not resolve, and private literals in any spelling", () =>
    Effect.gen(function*() {
      const resolve = resolverOf({
        "mixed.example.com": ["93.184.216.34", "10.0.0.5"],
        "metadata.example.com": ["169.254.169.254"],
        "v6only.example.com": ["::1"],
        "fine.example.com": ["93.184.216.34", "2606:4700:4700::1111"]
      })
      for (const url of [
        "http://mixed.example.com/hook",
        "http://metadata.example.com/latest/meta-data",
        "http://v6only.example.com/",
        "http://127.0.0.1:8080/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0x7f000001/", // the URL parser reads it as 127.0.0.1
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://169.254.169.254/",
        "http://[fd00:ec2::254]/"
      ]) {
        const result = yield* pin(url, resolve)
        expect(Either.isLeft(result) && result.left.reason === "Private", url).toBe(true)
      }
      const unknown = yield* pin("http://nowhere.invalid/", resolve)
      expect(Either.isLeft(unknown) && unknown.left.reason === "Unresolved").toBe(true)
      const fine = yield* pin("https://fine.example.com:8443/hook?a=1", resolve)
      expect(Either.map(fine, (t) => [t.url.href, t.host, t.serverName])).toEqual(
        Either.right(["https://93.184.216.34:8443/hook?a=1", "fine.example.com:8443", "fine.example.com"])
      )
    }))

  it.effect("with WEBHOOK_ALLOW_PRIVATE, loopback is allowed", () =>
    Effect.gen(function*() {
      const result = yield* pin("http://localhost:9/x", resolverOf({ localhost: ["127.0.0.1", "::1"] }), true)
      expect(Either.map(result, (t) => t.url.href)).toEqual(Either.right("http://127.0.0.1:9/x"))
    }))
})

const senderWith = (resolve: Resolver, settings: Record<string, string>) =>
  WebhookSender.Default.pipe(
    Layer.provide(Layer.succeed(DnsResolver, resolve)),
    Layer.provide(AppConfig.Default),
    Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries({ CACHE_PATH: ":memory:", ...settings })))))
  )

describe("WebhookSender", () => {
  it.live("connects to the address it checked (with the URL's host as Host), never to a second lookup", () =>
    Effect.gen(function*() {
      const receiver = startWebhookReceiver()
      yield* Effect.addFinalizer(() => Effect.promise(() => receiver.stop()))
      // `hooks.test` resolves nowhere but in this resolver: the request can only reach the receiver through the checked address.
      let lookups = 0
      const resolve: Resolver = async () => {
        lookups++
        return ["127.0.0.1"]
      }
      const sender = yield* WebhookSender.pipe(Effect.provide(senderWith(resolve, { WEBHOOK_ALLOW_PRIVATE: "true" })))
      const result = yield* sender.attempt(new URL(`http://hooks.test:${receiver.port}/hook`), newSecret(), "msg_1", "{}")
      expect(result).toEqual(AttemptResult.Delivered({ status: 200 }))
      expect(lookups).toBe(1)
      expect(receiver.received().map((r) => r.host)).toEqual([`hooks.test:${receiver.port}`])
    }).pipe(Effect.scoped))

  it.effect("checks every attempt's own answer: a name that now answers with a private address (rebinding) is refused", () =>
    Effect.gen(function*() {
      const answers = [["93.184.216.34"], ["127.0.0.1"]]
      const resolve: Resolver = async () => answers.shift() ?? ["127.0.0.1"]
      const url = new URL("http://rebind.test/hook")
      // The first answer is public: the attempt is pinned to it (no second lookup follows).
      const first = yield* pinTarget(url, { allowPrivate: false, resolve })
      expect(first.url.href).toBe("http://93.184.216.34/hook")
      // The next attempt resolves again and gets loopback: refused, before anything is sent.
      const second = yield* Effect.either(pinTarget(url, { allowPrivate: false, resolve }))
      expect(Either.isLeft(second) && second.left.reason === "Private").toBe(true)
    }))

  it.live("sends nothing to a target that resolves to a private address", () =>
    Effect.gen(function*() {
      const receiver = startWebhookReceiver()
      yield* Effect.addFinalizer(() => Effect.promise(() => receiver.stop()))
      const sender = yield* WebhookSender.pipe(Effect.provide(senderWith(async () => ["127.0.0.1"], {})))
      const result = yield* sender.attempt(new URL(`http://rebind.test:${receiver.port}/hook`), newSecret(), "msg_1", "{}")
      expect(result._tag).toBe("Refused")
      expect(receiver.received()).toEqual([])
    }).pipe(Effect.scoped))

  it.live("follows no redirect, reads a large answer only in part, and times out a receiver that hangs", () =>
    Effect.gen(function*() {
      const big = Bun.serve({
        hostname: "127.0.0.1",
        port: 0,
        fetch: (request) => {
          const path = new URL(request.url).pathname
          if (path === "/redirect") return new Response(null, { status: 307, headers: { location: "http://127.0.0.1:9/elsewhere" } })
          if (path === "/hang") return new Promise<Response>(() => {})
          // An endless error body: only the first few KiB are read.
          return new Response(
            new ReadableStream({
              pull: (controller) => {
                controller.enqueue(new Uint8Array(65_536).fill(120))
              }
            }),
            { status: 500 }
          )
        }
      })
      yield* Effect.addFinalizer(() => Effect.promise(() => big.stop(true)))
      const sender = yield* WebhookSender.pipe(
        Effect.provide(senderWith(async () => ["127.0.0.1"], { WEBHOOK_ALLOW_PRIVATE: "true", WEBHOOK_TIMEOUT: "500 millis" }))
      )
      const at = (path: string) => new URL(`http://127.0.0.1:${big.port}${path}`)
      const redirect = yield* sender.attempt(at("/redirect"), newSecret(), "msg_1", "{}")
      expect(redirect).toMatchObject({ _tag: "HttpStatus", status: 307 })
      const endless = yield* sender.attempt(at("/endless"), newSecret(), "msg_1", "{}")
      expect(endless).toMatchObject({ _tag: "HttpStatus", status: 500 })
      if (endless._tag === "HttpStatus") expect(endless.detail.length).toBeLessThanOrEqual(201)
      const hang = yield* sender.attempt(at("/hang"), newSecret(), "msg_1", "{}")
      expect(hang._tag).toBe("Timeout")
    }).pipe(Effect.scoped))
})
