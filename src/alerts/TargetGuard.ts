/**
 * Where webhooks may go (docs/ARCHITECTURE.md, "Alerts: safety"): an http(s) URL whose host resolves
 * only to public addresses, unless `WEBHOOK_ALLOW_PRIVATE=true`. Every address the host resolves to
 * is checked, and the request is then sent to the address that was checked (with the URL's host as
 * `Host` and TLS server name), never to a second lookup: a DNS answer that changes between the check
 * and the connection (DNS rebinding) cannot move a webhook onto the internal network.
 */
import { Data, Duration, Effect } from "effect"
import { isIP } from "node:net"

// ---------------------------------------------------------------------------------------------
// Addresses

/** Why an address is not a public one. */
export type PrivateKind =
  | "unspecified"
  | "loopback"
  | "private"
  | "shared"
  | "link-local"
  | "metadata"
  | "multicast"
  | "reserved"
  | "documentation"

interface Range {
  /** The network, as a bigint of the address family's width. */
  readonly network: bigint
  readonly prefix: number
  readonly kind: PrivateKind
}

const v4ToBigInt = (address: string): bigint =>
  address.split(".").reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n)

/** The 128 bits of an IPv6 address (`isIP` has validated it), an embedded dotted quad included. */
const v6ToBigInt = (address: string): bigint => {
  const zone = address.indexOf("%")
  let text = (zone >= 0 ? address.slice(0, zone) : address).toLowerCase()
  const lastColon = text.lastIndexOf(":")
  const tail = text.slice(lastColon + 1)
  if (tail.includes(".")) {
    const v4 = v4ToBigInt(tail)
    text = `${text.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`
  }
  const [head = "", rest] = text.split("::")
  const left = head === "" ? [] : head.split(":")
  const right = rest === undefined || rest === "" ? [] : rest.split(":")
  const groups = rest === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right]
  return groups.reduce((acc, group) => (acc << 16n) | BigInt(Number.parseInt(group, 16)), 0n)
}

const v4 = (cidr: string, kind: PrivateKind): Range => {
  const [network = "", prefix = "32"] = cidr.split("/")
  return { network: v4ToBigInt(network), prefix: Number(prefix), kind }
}
const v6 = (cidr: string, kind: PrivateKind): Range => {
  const [network = "", prefix = "128"] = cidr.split("/")
  return { network: v6ToBigInt(network), prefix: Number(prefix), kind }
}

/** Not public, IPv4 (IANA special-purpose registry, and the cloud metadata services). Most specific first. */
const V4_RANGES: ReadonlyArray<Range> = [
  v4("169.254.169.254/32", "metadata"), // AWS, GCP, Azure, OpenStack, DigitalOcean
  v4("100.100.100.200/32", "metadata"), // Alibaba Cloud
  v4("0.0.0.0/8", "unspecified"),
  v4("10.0.0.0/8", "private"),
  v4("100.64.0.0/10", "shared"), // carrier-grade NAT
  v4("127.0.0.0/8", "loopback"),
  v4("169.254.0.0/16", "link-local"),
  v4("172.16.0.0/12", "private"),
  v4("192.0.0.0/24", "reserved"),
  v4("192.0.2.0/24", "documentation"),
  v4("192.88.99.0/24", "reserved"), // 6to4 relay anycast
  v4("192.168.0.0/16", "private"),
  v4("198.18.0.0/15", "reserved"), // benchmarking
  v4("198.51.100.0/24", "documentation"),
  v4("203.0.113.0/24", "documentation"),
  v4("224.0.0.0/4", "multicast"),
  v4("240.0.0.0/4", "reserved") // and 255.255.255.255
]

/** Not public, IPv6. Addresses that embed an IPv4 one are checked by it (`embeddedV4`). */
const V6_RANGES: ReadonlyArray<Range> = [
  v6("fd00:ec2::254/128", "metadata"), // AWS over IPv6
  v6("::/128", "unspecified"),
  v6("::1/128", "loopback"),
  v6("100::/64", "reserved"), // discard
  v6("2001::/23", "reserved"), // IETF protocol assignments (Teredo and others)
  v6("2001:db8::/32", "documentation"),
  v6("fc00::/7", "private"), // unique local
  v6("fe80::/10", "link-local"),
  v6("fec0::/10", "private"), // site-local, deprecated
  v6("ff00::/8", "multicast")
]

const within = (address: bigint, width: number, range: Range) =>
  address >> BigInt(width - range.prefix) === range.network >> BigInt(width - range.prefix)

/** The IPv4 address inside an IPv4-mapped, IPv4-compatible, NAT64 (64:ff9b::/96) or 6to4 address. */
const embeddedV4 = (address: bigint): bigint | undefined => {
  const high96 = address >> 32n
  // ::ffff:a.b.c.d (mapped), ::ffff:0:a.b.c.d (translated), ::a.b.c.d (compatible), 64:ff9b::a.b.c.d (NAT64).
  if (high96 === 0xffffn || high96 === 0xffff0000n || high96 === 0n || high96 === 0x64ff9b0000000000000000n) return address & 0xffffffffn
  if (address >> 112n === 0x2002n) return (address >> 80n) & 0xffffffffn
  return undefined
}

const v4Kind = (address: bigint): PrivateKind | undefined => V4_RANGES.find((range) => within(address, 32, range))?.kind

/** Why `address` (an IP literal) is not public, or `undefined` when it is. Anything that is not an IP literal is refused. */
export const privateKindOf = (address: string): PrivateKind | undefined => {
  const family = isIP(address)
  if (family === 4) return v4Kind(v4ToBigInt(address))
  if (family !== 6) return "reserved"
  const bits = v6ToBigInt(address)
  const inner = embeddedV4(bits)
  // `::` and `::1` are themselves, not IPv4-compatible forms of 0.0.0.0 and 0.0.0.1.
  if (inner !== undefined && bits > 1n) return v4Kind(inner)
  return V6_RANGES.find((range) => within(bits, 128, range))?.kind
}

// ---------------------------------------------------------------------------------------------
// Targets

/** Why a webhook URL is refused: not an http(s) URL, a host that does not resolve, or one that resolves to a private address. */
export class TargetRefused extends Data.TaggedError("TargetRefused")<{
  readonly reason: "NotHttp" | "Unresolved" | "Private"
  readonly detail: string
}> {
  override get message(): string {
    return this.detail
  }
}

/** Resolves a host name to every address it has (`dns.lookup`, with `/etc/hosts`), or fails. */
export type Resolver = (hostname: string) => Promise<ReadonlyArray<string>>

/** The request to send: to the checked address, with the URL's host as `Host` and TLS server name. */
export interface PinnedTarget {
  /** The URL with its host replaced by the checked address. */
  readonly url: URL
  /** `Host` header: the URL's host (and port, when not the default). */
  readonly host: string
  /** The TLS server name (SNI, and the name the certificate is checked against), for https. */
  readonly serverName: string
  readonly address: string
}

const RESOLVE_TIMEOUT = Duration.seconds(5)

/** The URL as dashcast takes it: absolute http or https, no credentials in it. */
export const parseWebhookUrl = (raw: string): Effect.Effect<URL, TargetRefused> =>
  Effect.suspend(() => {
    const refuse = (detail: string) => Effect.fail(new TargetRefused({ reason: "NotHttp", detail }))
    if (!URL.canParse(raw)) return refuse("not an absolute URL")
    const url = new URL(raw)
    if (url.protocol !== "http:" && url.protocol !== "https:") return refuse(`${url.protocol.replace(/:$/, "")} is not http or https`)
    if (url.username !== "" || url.password !== "") return refuse("credentials in the URL are not supported")
    if (url.hostname === "") return refuse("no host")
    return Effect.succeed(url)
  })

/** The URL's host without IPv6 brackets: an IP literal (the URL parser has normalised `0x7f.1` and the like), or a name. */
const bareHost = (url: URL) => url.hostname.replace(/^\[(.*)\]$/, "$1")

/**
 * Resolves the URL's host and checks every address (one private address refuses the target: a
 * resolver may hand out any of them), then pins the request to the first.
 */
export const pinTarget = (url: URL, options: { readonly allowPrivate: boolean; readonly resolve: Resolver }) =>
  Effect.gen(function*() {
    const host = bareHost(url)
    const addresses = isIP(host) !== 0 ? [host] : yield* Effect.tryPromise({
      try: () => options.resolve(host),
      catch: (cause) =>
        new TargetRefused({ reason: "Unresolved", detail: `${host} does not resolve: ${cause instanceof Error ? cause.message : String(cause)}` })
    }).pipe(
      Effect.timeoutFail({
        duration: RESOLVE_TIMEOUT,
        onTimeout: () => new TargetRefused({ reason: "Unresolved", detail: `${host} did not resolve within ${Duration.format(RESOLVE_TIMEOUT)}` })
      })
    )
    const [first] = addresses
    if (first === undefined) return yield* new TargetRefused({ reason: "Unresolved", detail: `${host} has no address` })
    if (!options.allowPrivate) {
      for (const address of addresses) {
        const kind = privateKindOf(address)
        if (kind !== undefined) {
          return yield* new TargetRefused({
            reason: "Private",
            detail: `${host} resolves to ${address} (${kind}); webhooks go to public addresses only unless WEBHOOK_ALLOW_PRIVATE=true`
          })
        }
      }
    }
    const pinned = new URL(url.href)
    pinned.hostname = isIP(first) === 6 ? `[${first}]` : first
    return { url: pinned, host: url.host, serverName: host, address: first } satisfies PinnedTarget
  })
