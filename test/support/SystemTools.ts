/**
 * Tests that need a system program (redis-server, chromium) run when it is installed. Without it
 * they are skipped with a note, so `npm ci && npm test` passes on a machine with only Node and npm;
 * under CI (`CI=true`, where `.ci/run` installs both) a missing program fails the run instead.
 */

export const hasTool = (name: string): boolean => {
  if (Bun.which(name) !== null) return true
  if (process.env["CI"] === "true") {
    throw new Error(`${name} is required under CI=true but is not installed (.ci/run installs it with apt-get)`)
  }
  console.warn(`note: ${name} is not installed; skipping the tests that need it (Debian: apt-get install -y ${name})`)
  return false
}
