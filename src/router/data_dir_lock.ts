/**
 * One broker per data directory. Two brokers appending to the same segment
 * files overwrite each other's acknowledged records, so a broker takes the
 * directory before it opens any partition and refuses to start when another
 * live process holds it.
 *
 * The lock is a file `<dataDir>/.lock` holding the owner's process id,
 * created with an atomic test-and-create. A lock left by a process that is
 * gone (kill -9, power loss), or that names this very process while this
 * process does not hold it, is stale: the next broker removes it and takes
 * the directory. Checking liveness by process id can only err towards
 * refusing (a reused id looks alive), never towards two owners.
 */
import process from "node:process";
import { DakgharError } from "../errors.ts";
import type { Logger } from "../logger.ts";
import type { FileSystem } from "../runtime/types.ts";

/** A held lock; `release()` removes the file. */
export interface DataDirLock {
  release(): void;
}

/**
 * Lock files this process holds. A lock naming our own pid on disk is stale
 * (a crashed broker whose pid came round again, as PID 1 does in a
 * container), but one in this set is live.
 */
const heldHere = new Set<string>();

/** True when a process with this id exists (signal 0 checks, sends nothing). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as { code?: string }).code === "EPERM";
  }
}

/**
 * Takes `dataDir` for this process.
 *
 * @param fs the file system
 * @param dataDir the broker's data directory, created if missing
 * @param log where a stale lock is reported
 * @returns the held lock
 * @throws {DakgharError} `storage_error` when a live process holds it
 */
export function lockDataDir(
  fs: FileSystem,
  dataDir: string,
  log: Logger,
): DataDirLock {
  fs.mkdirs(dataDir);
  const path = `${dataDir}/.lock`;
  if (heldHere.has(path)) {
    throw new DakgharError(
      "storage_error",
      `Cannot lock data directory ${dataDir}: already in use by this process`,
      { dataDir, pid: process.pid },
    );
  }
  const content = new TextEncoder().encode(`${process.pid}\n`);

  for (let attempt = 0; attempt < 3; attempt++) {
    if (fs.createExclusive(path, content)) {
      heldHere.add(path);
      return {
        release() {
          heldHere.delete(path);
          fs.remove(path);
        },
      };
    }
    let owner = Number.NaN;
    try {
      owner = Number.parseInt(new TextDecoder().decode(fs.readFile(path)), 10);
    } catch {
      continue; // removed meanwhile: try again
    }
    if (
      Number.isSafeInteger(owner) && owner !== process.pid && isAlive(owner)
    ) {
      throw new DakgharError(
        "storage_error",
        `Cannot lock data directory ${dataDir}: in use by process ${owner}`,
        { dataDir, pid: owner },
      );
    }
    log.warn("stale data directory lock removed", { path, pid: owner });
    fs.remove(path);
  }
  throw new DakgharError(
    "storage_error",
    `Cannot lock data directory ${dataDir}: the lock keeps changing`,
    { dataDir },
  );
}
