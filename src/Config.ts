/**
 * Every setting dashcast reads, in one place: the table that `--help` prints and README documents,
 * and the `AppConfig` service that reads them with Effect `Config` (environment or CLI flags).
 */
import { readFileSync } from "node:fs"
import { Config, ConfigError, Duration, Effect, Either, LogLevel, Option, Redacted } from "effect"

/** One documented setting: its environment name, the default shown to users, and what it does. */
export interface Setting {
  readonly name: string
  readonly default: string
  readonly description: string
}

export const settings: ReadonlyArray<Setting> = [
  { name: "HOST", default: "0.0.0.0", description: "Interface to listen on" },
  { name: "PORT", default: "8080", description: "TCP port to listen on (0 picks a free one)" },
  { name: "ASSETS", default: "bitcoin", description: "Comma-separated CoinGecko coin ids to watch, at most 250" },
  { name: "CURRENCIES", default: "usd", description: "Comma-separated CoinGecko vs-currencies, at most 10; the first is the default" },
  { name: "UPDATE_INTERVAL", default: "10 minutes (5 seconds with DEMO)", description: "Time between scheduled upstream fetches" },
  { name: "MAX_CONSECUTIVE_FAILURES", default: "3", description: "Failures tolerated at the normal interval before backing off" },
  { name: "MAX_BACKOFF", default: "30 minutes", description: "Longest delay between attempts while backing off" },
  { name: "INITIAL_FETCH_RETRIES", default: "3", description: "Attempts of the initial load before the normal schedule takes over" },
  { name: "INITIAL_RETRY_DELAY", default: "5 seconds", description: "Delay between initial load attempts" },
  { name: "FRESHNESS", default: "5 minutes", description: "Age after which a connecting client triggers one background refresh" },
  { name: "MIN_FETCH_GAP", default: "30 seconds", description: "Upstream is never called more often than this outside the schedule" },
  { name: "UPSTREAM_TIMEOUT", default: "10 seconds", description: "Timeout of each upstream call" },
  { name: "UPSTREAM_MAX_BYTES", default: "2097152 (2 MiB)", description: "Largest upstream response body read; a larger one fails its call" },
  { name: "COINGECKO_BASE_URL", default: "https://api.coingecko.com", description: "CoinGecko API base URL" },
  { name: "COINGECKO_API_KEY", default: "unset", description: "CoinGecko demo API key (secret, sent as x-cg-demo-api-key)" },
  { name: "FNG_BASE_URL", default: "https://api.alternative.me", description: "alternative.me Fear & Greed API base URL" },
  { name: "ADMIN_TOKEN", default: "unset (force update disabled)", description: "Bearer token for POST /api/dashboard/refresh (secret)" },
  { name: "CACHE_PATH", default: "data/dashcast.sqlite", description: "SQLite file of the L2 cache; :memory: allowed" },
  { name: "REDIS_URL", default: "unset (single instance)", description: "Redis for the shared L2 cache and clustering (secret)" },
  { name: "TLS_CERT", default: "unset", description: "PEM certificate; with TLS_KEY serves https and wss" },
  { name: "TLS_KEY", default: "unset", description: "PEM private key; with TLS_CERT serves https and wss" },
  { name: "ALLOWED_ORIGINS", default: "unset (any origin)", description: "Comma-separated browser origins allowed to open /ws" },
  {
    name: "FRAME_ANCESTORS",
    default: "'self'",
    description: "Space-separated origins that may show / and /embed in a frame (CSP frame-ancestors), e.g. 'self' https://ha.example.com"
  },
  { name: "DEMO", default: "false", description: "Serve a simulated market feed instead of calling upstream" },
  { name: "LOG_LEVEL", default: "info", description: "trace, debug, info, warn (or warning), error, fatal or off; any case" },
  { name: "LOG_FORMAT", default: "pretty", description: "pretty, or json for one object a line" },
  { name: "MAX_CONNECTIONS", default: "unset", description: "Most WebSocket connections at once" },
  { name: "MAX_CONNECTIONS_PER_IP", default: "unset", description: "Most WebSocket connections from one address" },
  { name: "MAX_MESSAGE_BYTES", default: "4096", description: "Largest client frame; a bigger one closes with 1009" },
  { name: "LEASE_TTL", default: "10 seconds", description: "Leader lease time when clustered with REDIS_URL" },
  { name: "WEBHOOK_RETRY_DELAY", default: "5 seconds", description: "Wait before the first retry of a failed alert webhook (later ones double, jittered), at most 1 minute" },
  { name: "WEBHOOK_TIMEOUT", default: "10 seconds", description: "Timeout of one alert webhook attempt, at most 1 minute" },
  { name: "WEBHOOK_ALLOW_PRIVATE", default: "false", description: "Allow alert webhooks to loopback, private, link-local and metadata addresses" }
]

/**
 * A setting read by `base` under `name` and checked by `valid`. The check runs inside the name, so
 * an invalid value is reported as `NAME: message`.
 */
const checked = <A>(name: string, base: Config.Config<A>, message: string, valid: (a: A) => boolean) =>
  Config.nested(base.pipe(Config.validate({ message, validation: valid })), name)

const anyPositiveDuration = (name: string) =>
  checked(name, Config.duration(), "must be a positive duration such as \"10 minutes\"", (d) => Duration.toMillis(d) > 0)

const positiveDuration = (name: string, fallback: Duration.DurationInput) =>
  anyPositiveDuration(name).pipe(Config.withDefault(Duration.decode(fallback)))

const durationUpTo = (name: string, fallback: Duration.DurationInput, max: `${number} ${Duration.Unit}`) =>
  checked(
    name,
    Config.duration(),
    `must be a positive duration of at most ${max}, such as "5 seconds"`,
    (d) => Duration.toMillis(d) > 0 && Duration.lessThanOrEqualTo(d, Duration.decode(max))
  ).pipe(Config.withDefault(Duration.decode(fallback)))

/**
 * `LOG_LEVEL`, case-insensitive, with `warning` (syslog's and Python's spelling) as `warn`.
 * Effect's own `Config.logLevel` knows only its labels, in upper case.
 */
const logLevelNames: ReadonlyArray<readonly [string, LogLevel.LogLevel]> = [
  ...LogLevel.allLevels.map((level) => [level.label.toLowerCase(), level] as const),
  ["warning", LogLevel.Warning]
]
const logLevel = checked(
  "LOG_LEVEL",
  Config.string(),
  "must be one of trace, debug, info, warn (or warning), error, fatal, off",
  (s) => logLevelNames.some(([name]) => name === s.trim().toLowerCase())
).pipe(
  Config.map((s) => logLevelNames.find(([name]) => name === s.trim().toLowerCase())?.[1] ?? LogLevel.Info),
  Config.withDefault(LogLevel.Info)
)

const intAtLeast = (name: string, min: number) =>
  checked(name, Config.integer(), `must be an integer of ${min} or more`, (n) => n >= min)

const httpUrl = (name: string, fallback: string) =>
  checked(name, Config.string(), "must be an http(s) URL", (s) => URL.canParse(s) && /^https?:$/.test(new URL(s).protocol)).pipe(
    Config.withDefault(fallback),
    Config.map((s) => s.replace(/\/+$/, ""))
  )

/** A PEM file, read at start-up so that a missing or unreadable file stops it with a clear line. */
const pemFile = (name: string) =>
  Config.nested(
    Config.nonEmptyString().pipe(
      Config.mapOrFail((path) => {
        try {
          const pem = readFileSync(path, "utf8")
          return pem.includes("-----BEGIN ")
            ? Either.right({ path, pem: Redacted.make(pem) })
            : Either.left(ConfigError.InvalidData([], `${path} is not a PEM file`))
        } catch (error) {
          return Either.left(ConfigError.InvalidData([], `cannot read ${path}: ${error instanceof Error ? error.message : String(error)}`))
        }
      })
    ),
    name
  )

const optionalSecret = (name: string) =>
  Config.option(Config.redacted(name)).pipe(
    Config.map(Option.filter((secret) => Redacted.value(secret).length > 0))
  )

/**
 * A comma-separated list of lower-case ids (never empty): no empty item, no upper case, no space inside an
 * item, no duplicate, at most `max`. Each problem is reported as `NAME: ...` and stops start-up.
 */
const idList = (name: string, fallback: string, max: number, what: { readonly one: string; readonly many: string }, pattern: RegExp) =>
  Config.nested(
    Config.string().pipe(
      Config.withDefault(fallback),
      Config.mapOrFail((raw) => {
        const items = raw.split(",").map((item) => item.trim())
        const invalid = (message: string) => Either.left(ConfigError.InvalidData([], message))
        const empty = items.findIndex((item) => item === "")
        if (empty >= 0) return invalid(`item ${empty + 1} is empty (in ${JSON.stringify(raw)})`)
        const upper = items.find((item) => item !== item.toLowerCase())
        if (upper !== undefined) return invalid(`${JSON.stringify(upper)} has upper case; ${what.many} are lower case`)
        const spaced = items.find((item) => /\s/.test(item))
        if (spaced !== undefined) return invalid(`${JSON.stringify(spaced)} has a space inside`)
        const bad = items.find((item) => !pattern.test(item))
        if (bad !== undefined) return invalid(`${JSON.stringify(bad)} is not a valid ${what.one}`)
        const duplicate = items.find((item, i) => items.indexOf(item) !== i)
        if (duplicate !== undefined) return invalid(`${JSON.stringify(duplicate)} is listed twice`)
        if (items.length > max) return invalid(`${items.length} ${what.many} listed; at most ${max}`)
        const [head, ...rest] = items
        return Either.right([head ?? fallback, ...rest] as const)
      })
    ),
    name
  )

/**
 * One source of a CSP `frame-ancestors` list (MDN, "CSP: frame-ancestors"): `'self'`, `'none'`, a
 * scheme (`https:`) or a host with an optional scheme, port and path (`https://*.example.com:8443`).
 */
const FRAME_SOURCE = /^(?:'self'|'none'|[a-z][a-z0-9+.-]*:|(?:[a-z][a-z0-9+.-]*:\/\/)?(?:\*|(?:\*\.)?[a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(?::(?:\d{1,5}|\*))?(?:\/[^\s;,'"]*)?)$/i

/**
 * `FRAME_ANCESTORS`: the origins that may frame the pages, as the header's source list. Checked
 * here, because a `;` would add a directive of its own and a comma makes one invalid source.
 */
const frameAncestors = Config.nested(
  Config.string().pipe(
    Config.withDefault("'self'"),
    Config.mapOrFail((raw) => {
      const sources = raw.trim().split(/\s+/).filter((s) => s.length > 0)
      const invalid = (message: string) => Either.left(ConfigError.InvalidData([], message))
      if (sources.length === 0) return invalid("is empty; use 'none' to forbid every frame")
      if (raw.includes(",")) return invalid(`${JSON.stringify(raw)}: origins are separated by spaces, not commas`)
      const bad = sources.find((s) => !FRAME_SOURCE.test(s))
      if (bad !== undefined) return invalid(`${JSON.stringify(bad)} is not an origin, a scheme, 'self' or 'none'`)
      if (sources.includes("'none'") && sources.length > 1) return invalid("'none' cannot be listed with other sources")
      return Either.right(sources.join(" "))
    })
  ),
  "FRAME_ANCESTORS"
)

export const LogFormat = Config.literal("pretty", "json")("LOG_FORMAT").pipe(Config.withDefault("pretty" as const))

const appConfig = Config.all({
  host: Config.string("HOST").pipe(Config.withDefault("0.0.0.0")),
  port: checked("PORT", Config.integer(), "must be a port between 0 and 65535", (n) => n >= 0 && n <= 65535).pipe(
    Config.withDefault(8080)
  ),
  demo: Config.boolean("DEMO").pipe(Config.withDefault(false)),
  // CoinGecko coin ids are lower-case letters, digits and dashes (some have dots or underscores).
  assets: idList("ASSETS", "bitcoin", 250, { one: "coin id", many: "coin ids" }, /^[a-z0-9][a-z0-9._-]*$/),
  currencies: idList("CURRENCIES", "usd", 10, { one: "currency", many: "currencies" }, /^[a-z]{2,10}$/),
  // No default here: without a value the default depends on DEMO (below).
  updateInterval: Config.option(anyPositiveDuration("UPDATE_INTERVAL")),
  maxConsecutiveFailures: intAtLeast("MAX_CONSECUTIVE_FAILURES", 0).pipe(Config.withDefault(3)),
  maxBackoff: positiveDuration("MAX_BACKOFF", "30 minutes"),
  initialFetchRetries: intAtLeast("INITIAL_FETCH_RETRIES", 1).pipe(Config.withDefault(3)),
  initialRetryDelay: positiveDuration("INITIAL_RETRY_DELAY", "5 seconds"),
  freshness: positiveDuration("FRESHNESS", "5 minutes"),
  minFetchGap: Config.duration("MIN_FETCH_GAP").pipe(Config.withDefault(Duration.seconds(30))),
  upstreamTimeout: positiveDuration("UPSTREAM_TIMEOUT", "10 seconds"),
  upstreamMaxBytes: checked(
    "UPSTREAM_MAX_BYTES",
    Config.integer(),
    "must be between 65536 and 1073741824 bytes",
    (n) => n >= 64 * 1024 && n <= 1024 * 1024 * 1024
  ).pipe(Config.withDefault(2 * 1024 * 1024)),
  coingeckoBaseUrl: httpUrl("COINGECKO_BASE_URL", "https://api.coingecko.com"),
  coingeckoApiKey: optionalSecret("COINGECKO_API_KEY"),
  fngBaseUrl: httpUrl("FNG_BASE_URL", "https://api.alternative.me"),
  adminToken: optionalSecret("ADMIN_TOKEN"),
  cachePath: Config.string("CACHE_PATH").pipe(Config.withDefault("data/dashcast.sqlite")),
  redisUrl: Config.option(
    checked("REDIS_URL", Config.redacted(), "must be a redis:// or rediss:// URL", (url) => /^rediss?:\/\//.test(Redacted.value(url)))
  ),
  tlsCert: Config.option(pemFile("TLS_CERT")),
  tlsKey: Config.option(pemFile("TLS_KEY")),
  allowedOrigins: Config.option(
    Config.string("ALLOWED_ORIGINS").pipe(
      Config.map((s) => s.split(",").map((o) => o.trim()).filter((o) => o.length > 0))
    )
  ),
  frameAncestors,
  logLevel,
  logFormat: LogFormat,
  maxConnections: Config.option(intAtLeast("MAX_CONNECTIONS", 1)),
  maxConnectionsPerIp: Config.option(intAtLeast("MAX_CONNECTIONS_PER_IP", 1)),
  maxMessageBytes: checked(
    "MAX_MESSAGE_BYTES",
    Config.integer(),
    "must be between 64 and 16777216",
    (n) => n >= 64 && n <= 16 * 1024 * 1024
  ).pipe(Config.withDefault(4096)),
  leaseTtl: positiveDuration("LEASE_TTL", "10 seconds"),
  webhookRetryDelay: durationUpTo("WEBHOOK_RETRY_DELAY", "5 seconds", "1 minute"),
  webhookTimeout: durationUpTo("WEBHOOK_TIMEOUT", "10 seconds", "1 minute"),
  webhookAllowPrivate: Config.boolean("WEBHOOK_ALLOW_PRIVATE").pipe(Config.withDefault(false))
}).pipe(
  Config.mapOrFail((c) =>
    Option.isSome(c.tlsCert) !== Option.isSome(c.tlsKey)
      ? Either.left(ConfigError.InvalidData(["TLS_CERT"], "TLS_CERT and TLS_KEY must be set together"))
      : Either.right({
        ...c,
        // With DEMO on and no interval given, a trial run moves every 5 seconds.
        updateInterval: Option.getOrElse(c.updateInterval, () => Duration.decode(c.demo ? "5 seconds" : "10 minutes"))
      })
  )
)

/** The validated configuration of one dashcast process. */
export class AppConfig extends Effect.Service<AppConfig>()("dashcast/AppConfig", {
  effect: appConfig
}) {}

export type AppSettings = Omit<AppConfig, "_tag">

/** One line naming the variable and the problem, for a start-up that must stop with exit code 2. */
export const describeConfigError = (error: ConfigError.ConfigError): string => {
  const lines = ConfigError.reduceWithContext(error, undefined, {
    andCase: (_, l: ReadonlyArray<string>, r: ReadonlyArray<string>) => [...l, ...r],
    orCase: (_, l: ReadonlyArray<string>, r: ReadonlyArray<string>) => [...l, ...r],
    invalidDataCase: (_, path, message) => [`${path.join(".")}: ${message}`],
    missingDataCase: (_, path, message) => [`${path.join(".")}: ${message}`],
    sourceUnavailableCase: (_, path, message) => [`${path.join(".")}: ${message}`],
    unsupportedCase: (_, path, message) => [`${path.join(".")}: ${message}`]
  })
  return `invalid configuration: ${lines[0] ?? String(error)}`
}
