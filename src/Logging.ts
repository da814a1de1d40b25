/**
 * Log output as configured: `LOG_FORMAT=json` writes one JSON object a line, `pretty` is for people;
 * `LOG_LEVEL` sets the minimum level. Secrets are `Redacted` in config, so they print as <redacted>.
 */
import { Effect, Layer, Logger } from "effect"
import { AppConfig } from "./Config.js"

export const LoggingLive = Layer.unwrapEffect(
  Effect.map(AppConfig, (config) =>
    Layer.merge(
      config.logFormat === "json" ? Logger.json : Logger.pretty,
      Logger.minimumLogLevel(config.logLevel)
    ))
)
