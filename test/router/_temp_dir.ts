/** Temporary directories for router and actor tests, with forward slashes. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";

/** Makes a fresh directory under the system temporary directory. */
export function makeTempDir(prefix: string): string {
  return mkdtempSync(`${tmpdir()}/dakghar-${prefix}-`).replaceAll("\\", "/");
}

/** Removes a directory made by {@linkcode makeTempDir}. */
export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
