/**
 * The disk's own floor under the latency figures: how long one append plus
 * fdatasync takes on the file system the broker's data directory is on,
 * with nothing else in the way. With fsync before ack, no publish can be
 * acknowledged faster than this, and its tail shows up in the broker's p99.
 */
import {
  closeSync,
  fdatasyncSync,
  mkdtempSync,
  openSync,
  rmSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { quantile } from "./stats.ts";

/**
 * Appends `writeBytes` and fdatasyncs, back to back, for `seconds`.
 *
 * @param writeBytes bytes per append, e.g. one latency tick's batch
 * @param seconds how long to keep going
 * @returns p50 and p99 of one append plus fdatasync, in ms
 */
export function measureFsyncFloor(
  writeBytes: number,
  seconds: number,
): { p50Ms: number; p99Ms: number; count: number } {
  const dir = mkdtempSync(join(tmpdir(), "dakghar-bench-fsync-"));
  const fd = openSync(join(dir, "floor.log"), "a");
  const bytes = new Uint8Array(writeBytes).fill(1);
  const samples: number[] = [];
  try {
    // Bounded by count too, so a very fast disk cannot fill the file system.
    const end = performance.now() + seconds * 1000;
    while (performance.now() < end && samples.length < 1_000_000) {
      const start = performance.now();
      writeSync(fd, bytes);
      fdatasyncSync(fd);
      samples.push(performance.now() - start);
    }
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
  samples.sort((a, b) => a - b);
  return {
    p50Ms: quantile(samples, 0.5),
    p99Ms: quantile(samples, 0.99),
    count: samples.length,
  };
}
