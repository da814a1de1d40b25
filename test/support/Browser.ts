/**
 * Headless Chromium for browser tests: Debian's `/usr/bin/chromium` (or `CHROMIUM_PATH`) driven by
 * playwright-core, with a fresh temporary profile per launch that is deleted on close. Where no
 * Chromium is installed the tests skip with a note, except under `CI=true`, where they must fail.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { type BrowserContext, chromium, type ConsoleMessage, type Page } from "playwright-core"

export const CHROMIUM_ARGS: ReadonlyArray<string> = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync"
]

/** The Chromium executable to use, or undefined when there is none. */
export const findChromium = (): string | undefined => {
  const candidates = [process.env["CHROMIUM_PATH"], "/usr/bin/chromium", Bun.which("chromium") ?? undefined, Bun.which("chromium-browser") ?? undefined]
  return candidates.find((candidate): candidate is string => candidate !== undefined && candidate !== "" && fs.existsSync(candidate))
}

/** Under CI a missing browser is a broken setup, not a reason to skip. */
export const chromiumRequired = process.env["CI"] === "true"

export const MISSING_CHROMIUM =
  "browser tests skipped: no Chromium found (Debian: apt-get install -y chromium, or set CHROMIUM_PATH)"

export interface TestBrowser {
  readonly context: BrowserContext
  /** A new tab with the given viewport and colour scheme; its console is recorded. */
  readonly newPage: (options?: {
    readonly width?: number
    readonly height?: number
    readonly colorScheme?: "light" | "dark"
  }) => Promise<{ readonly page: Page; readonly console: ConsoleLog; readonly network: NetworkLog }>
  readonly close: () => Promise<void>
}

export interface ConsoleEntry {
  readonly type: string
  readonly text: string
  /** `Date.now()` when it was logged. */
  readonly time: number
}

/** Everything a page logs, plus uncaught exceptions (as type `pageerror`). */
export interface ConsoleLog {
  readonly entries: () => ReadonlyArray<ConsoleEntry>
  readonly errors: () => ReadonlyArray<ConsoleEntry>
}

const recordConsole = (page: Page): ConsoleLog => {
  const entries: Array<ConsoleEntry> = []
  page.on("console", (message: ConsoleMessage) => entries.push({ type: message.type(), text: message.text(), time: Date.now() }))
  page.on("pageerror", (error: Error) => entries.push({ type: "pageerror", text: `${error.name}: ${error.message}`, time: Date.now() }))
  return {
    entries: () => entries,
    errors: () => entries.filter((e) => e.type === "error" || e.type === "pageerror")
  }
}

/** Requests of a page (and its frames) that failed or were answered with an HTTP error. */
export interface NetworkLog {
  /** `GET http://… -> 404` or `GET http://… failed: net::ERR_…`, in order. */
  readonly failures: () => ReadonlyArray<string>
}

const recordNetwork = (page: Page): NetworkLog => {
  const failures: Array<string> = []
  page.on("requestfailed", (request) => failures.push(`${request.method()} ${request.url()} failed: ${request.failure()?.errorText ?? "?"}`))
  page.on("response", (response) => {
    if (response.status() >= 400) failures.push(`${response.request().method()} ${response.url()} -> ${response.status()}`)
  })
  return { failures: () => failures }
}

/** Launches headless Chromium with a fresh profile directory; `close` stops it and deletes the profile. */
export const launchBrowser = async (executablePath: string): Promise<TestBrowser> => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "dashcast-chromium-"))
  let context: BrowserContext
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath,
      headless: true,
      args: [...CHROMIUM_ARGS],
      viewport: { width: 1440, height: 900 },
      deviceScaleFactor: 1,
      timeout: 30_000
    })
  } catch (error) {
    fs.rmSync(profile, { recursive: true, force: true })
    throw error
  }
  return {
    context,
    newPage: async (options = {}) => {
      const page = await context.newPage()
      const console = recordConsole(page)
      const network = recordNetwork(page)
      await page.setViewportSize({ width: options.width ?? 1440, height: options.height ?? 900 })
      await page.emulateMedia({ colorScheme: options.colorScheme ?? "light", reducedMotion: "reduce" })
      return { page, console, network }
    },
    close: async () => {
      await context.close().catch(() => undefined)
      fs.rmSync(profile, { recursive: true, force: true })
    }
  }
}
