import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { silentLogger } from "../../src/logger.ts";
import { startBroker } from "../../src/server.ts";

// The example runs as a child process, as a user starts it, against an
// in-process broker on a fresh data directory.
const test = suite("queue_worker");

/** How long the example may live at most: a stuck one cannot hang the suite. */
const LIFETIME_LIMIT_MS = 20_000;

function runExample(
  url: string,
): Promise<{ code: number | null; output: string }> {
  // On Node this file runs from build/test/examples/, so the root is build/.
  const root = fileURLToPath(new URL("../..", import.meta.url));
  const deno = (globalThis as { Deno?: { execPath(): string } }).Deno;
  const [command, args] = deno
    ? [deno.execPath(), ["run", "-A", join(root, "examples/queue_worker.ts")]]
    : [process.execPath, [join(root, "examples/queue_worker.js")]];
  const child = spawn(command, args, {
    env: { ...process.env, DAKGHAR_URL: url, NO_COLOR: "1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (chunk) => output += String(chunk));
  child.stderr!.on("data", (chunk) => output += String(chunk));
  const guard = setTimeout(() => child.kill("SIGKILL"), LIFETIME_LIMIT_MS);
  return new Promise((resolve) => {
    child.on("close", (code) => {
      clearTimeout(guard);
      resolve({ code, output });
    });
  });
}

test("queue_worker acks good jobs, runs the delayed one and dead-letters the failing one", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "dakghar-queue-worker-"));
  const running = await startBroker({ dataDir, port: 0, logger: silentLogger });
  try {
    const { code, output } = await runExample(running.url);
    assert.is(code, 0, output);
    assert.match(output, "resize done (attempt 1)");
    assert.match(output, "report done (attempt 1)");
    assert.match(output, "explode failed (attempt 3)");
    assert.match(
      output,
      /dead letter from jobs\/\d+@\d+: max_deliveries after 3 deliveries, last error "it exploded"/,
    );
  } finally {
    await running.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test.run();
