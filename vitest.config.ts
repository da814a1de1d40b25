import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Tests that start processes or servers pick free ports, so files run in parallel; two cores here.
    pool: "forks",
    maxWorkers: 2,
    minWorkers: 1
  }
})
