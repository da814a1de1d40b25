/**
 * The browser pages: the watchlist at `/` and the embeddable card at `/embed` (docs/ARCHITECTURE.md,
 * "Pages"). Each is an HTML import that Bun bundles (into the binary with `--compile`); dashcast
 * serves the bundle's files itself rather than through Bun's HTML routes, because those cannot carry
 * response headers (oven-sh/bun#16873, #19123) and a page must carry
 * `Content-Security-Policy: frame-ancestors <FRAME_ANCESTORS>`. Assets are served at the root under
 * their hashed names and every page refers to them by absolute path, so a page under a nested path
 * (`/embed/`) loads them too (oven-sh/bun#24180, #27465).
 */
import type { HTMLBundle } from "bun"
import { Effect, Runtime } from "effect"
import * as path from "node:path"
import { AppConfig } from "../Config.js"
import embedPage from "../web/embed.html"
import dashboardPage from "../web/index.html"

/** One file a page needs, as served: its body and its headers. */
interface PageFile {
  readonly body: Blob
  readonly headers: Readonly<Record<string, string>>
}

/** The routes of the pages; `/embed/` too, where a relative asset path would break. */
const PAGES: ReadonlyArray<readonly [ReadonlyArray<string>, HTMLBundle]> = [
  [["/"], dashboardPage],
  [["/embed", "/embed/"], embedPage]
]

/** Hashed names never change content: a year in any cache. */
const IMMUTABLE = "public, max-age=31536000, immutable"

/** Every `src`/`href` that points at one of `assets` relatively (`./chunk.js`, `../chunk.js`), made absolute. */
export const absoluteAssetPaths = (html: string, assets: ReadonlySet<string>): string =>
  html.replace(/\b(src|href)="(?:\.{1,2}\/)+([^"/?#]+)"/g, (whole, attribute: string, name: string) =>
    assets.has(`/${name}`) ? `${attribute}="/${name}"` : whole)

/** What the bundler made: each output's URL path (assets) or page, its body and its content type. */
interface Output {
  readonly file: string
  readonly body: Blob
  readonly contentType: string
  readonly etag: string
  readonly html: boolean
}

/** The files of a binary built with `bun build --compile`: the manifest each HTML import carries. */
const outputsOfManifest = (): ReadonlyArray<Output> | undefined => {
  const bundles = PAGES.map(([, bundle]) => bundle)
  if (bundles.some((bundle) => bundle.files === undefined)) return undefined
  const seen = new Map<string, Output>()
  for (const bundle of bundles) {
    for (const file of bundle.files ?? []) {
      seen.set(file.path, {
        file: file.path,
        body: Bun.file(file.path),
        contentType: file.headers["content-type"],
        etag: file.headers.etag,
        html: file.loader === "html"
      })
    }
  }
  return [...seen.values()]
}

/** Run from source (`bun run`, tests): the same bundles, built once in memory. */
const outputsOfBuild = Effect.tryPromise({
  try: async (): Promise<ReadonlyArray<Output>> => {
    const result = await Bun.build({
      entrypoints: PAGES.map(([, bundle]) => bundle.index),
      target: "browser",
      minify: true,
      publicPath: "/"
    })
    if (!result.success) throw new AggregateError(result.logs, "the pages did not build")
    return result.outputs.map((output) => ({
      // The build names pages after their source file; compare by file name.
      file: output.path,
      body: output,
      contentType: output.type,
      etag: output.hash ?? "",
      html: output.type.startsWith("text/html")
    }))
  },
  catch: (cause) => cause
})

const pageOf = (outputs: ReadonlyArray<Output>, bundle: HTMLBundle): Output | undefined =>
  outputs.find((o) => o.html && (o.file === bundle.index || path.basename(o.file) === path.basename(bundle.index)))

export class Pages extends Effect.Service<Pages>()("dashcast/Pages", {
  scoped: Effect.gen(function*() {
    const config = yield* AppConfig
    const pageHeaders = {
      "cache-control": "no-cache",
      // frame-ancestors cannot be set in a <meta> tag: only this header makes browsers obey it.
      "content-security-policy": `frame-ancestors ${config.frameAncestors}`,
      "x-content-type-options": "nosniff"
    }
    const runPromise = Runtime.runPromise(yield* Effect.runtime<never>())

    const routesOf = (outputs: ReadonlyArray<Output>) =>
      Effect.gen(function*() {
        const routes = new Map<string, PageFile>()
        for (const output of outputs) {
          if (output.html) continue
          routes.set(`/${path.basename(output.file)}`, {
            body: output.body,
            headers: { "content-type": output.contentType, etag: `"${output.etag}"`, "cache-control": IMMUTABLE }
          })
        }
        const assets = new Set(routes.keys())
        for (const [paths, bundle] of PAGES) {
          const page = pageOf(outputs, bundle)
          if (page === undefined) return yield* Effect.dieMessage(`no HTML output for ${bundle.index}`)
          const html = absoluteAssetPaths(yield* Effect.promise(() => page.body.text()), assets)
          const file: PageFile = {
            body: new Blob([html], { type: page.contentType }),
            headers: { "content-type": page.contentType, etag: `"${page.etag}"`, ...pageHeaders }
          }
          for (const route of paths) routes.set(route, file)
        }
        return routes
      })

    // In the binary the files are there from the start; from source they are built at the first request for a page.
    const manifest = outputsOfManifest()
    let loaded: ReadonlyMap<string, PageFile> | undefined = manifest === undefined ? undefined : yield* routesOf(manifest)
    let loading: Promise<ReadonlyMap<string, PageFile>> | undefined
    const load = () =>
      (loading ??= runPromise(
        outputsOfBuild.pipe(
          Effect.flatMap(routesOf),
          Effect.tap((map) => Effect.sync(() => (loaded = map))),
          Effect.tapError((cause) => Effect.logError("the pages did not build", cause)),
          Effect.orDie
        )
      ))

    const respond = (file: PageFile, request: Request): Response =>
      request.headers.get("if-none-match") === file.headers["etag"]
        ? new Response(null, { status: 304, headers: file.headers })
        : new Response(request.method === "HEAD" ? null : file.body, { headers: file.headers })

    const pageRoutes = new Set(PAGES.flatMap(([paths]) => paths))
    return {
      /**
       * The answer for a page or one of its files, or undefined when `request` is for neither (the
       * API answers it). The first page request of a process run from source waits for the build.
       */
      serve: (request: Request, pathname: string): Response | Promise<Response> | undefined => {
        if (request.method !== "GET" && request.method !== "HEAD") return undefined
        if (loaded !== undefined) {
          const file = loaded.get(pathname)
          return file === undefined ? undefined : respond(file, request)
        }
        if (!pageRoutes.has(pathname)) return undefined
        return load().then((map: ReadonlyMap<string, PageFile>) => {
          const file = map.get(pathname)
          return file === undefined ? Response.json({ _tag: "NotFound", error: "not found" }, { status: 404 }) : respond(file, request)
        })
      }
    }
  })
}) {}
