/**
 * Runs every `*_test.ts` suite under test/ in one process, on Node (compiled
 * to build/test/run.js) or on Deno (from source). Optional arguments filter
 * suites by path substring: `deno run -A test/run.ts log/`.
 */
import { readdirSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const extension = import.meta.url.endsWith(".ts") ? "_test.ts" : "_test.js";
const filters = (globalThis as { Deno?: { args: string[] } }).Deno?.args ??
  process.argv.slice(2);

function findSuites(dir: string): string[] {
  const found: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) found.push(...findSuites(path));
    else if (name.endsWith(extension)) found.push(path);
  }
  return found;
}

const state = globalThis as unknown as {
  UVU_DEFER: number;
  UVU_INDEX: number;
  UVU_QUEUE: unknown[][];
};
state.UVU_DEFER = 1;
state.UVU_QUEUE = [];
// uvu decides at import time whether to run by itself: import it only now
// that UVU_DEFER is set, or it schedules a second run of its own.
const { exec } = await import("uvu");

const suites = findSuites(here).filter((path) =>
  filters.length === 0 || filters.some((f) => path.includes(f))
);
for (const [index, path] of suites.entries()) {
  state.UVU_INDEX = index;
  state.UVU_QUEUE.push([relative(here, path)]);
  await import(pathToFileURL(path).href);
}
await exec();
// Suites may leave timers or workers behind on failure; the summary is out.
process.exit(process.exitCode ?? 0);
