import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Tests that start processes or servers pick free ports, so files run in parallel; two cores here.
    pool: "forks",
    maxWorkers: 2,
    minWorkers: 1,
    // `import page from "./index.html"` (src/realtime/Server.ts) is Bun's HTML import: Vite cannot
    // parse HTML as a module, so those imports are left to Bun, which returns its HTMLBundle.
    server: { deps: { external: [/\.html$/] } }
  }
})
