/** Shared fixtures for the log suites: a runtime file system, temp dirs, batches. */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import type { FileHandle, FileSystem } from "../../src/runtime/types.ts";
import { type BatchRecord, encodeBatch } from "../../src/log/record_batch.ts";

/** The file system of the runtime running the tests. */
export const fileSystem: FileSystem = "Deno" in globalThis
  ? (await import("../../src/runtime/deno_fs.ts")).denoFileSystem
  : (await import("../../src/runtime/node_fs.ts")).nodeFileSystem;

/** A fresh directory under the OS temp dir; remove it with `fileSystem.remove`. */
export function temporaryDir(): string {
  return mkdtempSync(`${tmpdir()}/dakghar-log-`).replaceAll("\\", "/");
}

const encoder = new TextEncoder();

/** A batch of `count` records whose values are `${label}-${i}` padded to `valueBytes`. */
export function batchOf(
  count: number,
  label = "r",
  valueBytes = 0,
): Uint8Array {
  const records: BatchRecord[] = [];
  for (let i = 0; i < count; i++) {
    const value = encoder.encode(`${label}-${i}`.padEnd(valueBytes, "."));
    records.push({ key: null, value, headers: [], timestamp: 1000 + i });
  }
  return encodeBatch(records);
}

/** Counts fsyncs and lets a test make writes or fsyncs fail. */
export class FaultyFileSystem implements FileSystem {
  syncs = 0;
  bytesRead = 0;
  failWrites = false;
  failSyncs = false;
  /** Resolvers of fsyncs held back while `holdSyncs` is set. */
  heldSyncs: (() => void)[] = [];
  holdSyncs = false;

  constructor(readonly inner: FileSystem) {}

  open(path: string, mode: "read" | "readWrite"): FileHandle {
    const handle = this.inner.open(path, mode);
    return {
      path: handle.path,
      size: () => handle.size(),
      read: (into, position) => {
        const read = handle.read(into, position);
        this.bytesRead += read;
        return read;
      },
      write: (bytes, position) => {
        if (this.failWrites) throw new Error(`injected write failure ${path}`);
        handle.write(bytes, position);
      },
      sync: async () => {
        this.syncs++;
        if (this.holdSyncs) {
          await new Promise<void>((resolve) => this.heldSyncs.push(resolve));
        }
        if (this.failSyncs) throw new Error(`injected fsync failure ${path}`);
        await handle.sync();
      },
      syncNow: () => {
        this.syncs++;
        if (this.failSyncs) throw new Error(`injected fsync failure ${path}`);
        handle.syncNow();
      },
      truncate: (length) => handle.truncate(length),
      close: () => handle.close(),
    };
  }

  /** Lets every held fsync continue. */
  releaseSyncs(): void {
    const held = this.heldSyncs;
    this.heldSyncs = [];
    for (const resolve of held) resolve();
  }

  exists = (path: string) => this.inner.exists(path);
  sizeOf = (path: string) => this.inner.sizeOf(path);
  mkdirs = (path: string) => this.inner.mkdirs(path);
  list = (path: string) => this.inner.list(path);
  remove = (path: string) => this.inner.remove(path);
  rename = (from: string, to: string) => this.inner.rename(from, to);
  readFile = (path: string) => this.inner.readFile(path);
  writeFileAtomic = (path: string, bytes: Uint8Array) =>
    this.inner.writeFileAtomic(path, bytes);
  writeFileAtomicAsync = (path: string, bytes: Uint8Array) =>
    this.inner.writeFileAtomicAsync(path, bytes);
  syncDirectory = (path: string) => this.inner.syncDirectory(path);
  createExclusive = (path: string, bytes: Uint8Array) =>
    this.inner.createExclusive(path, bytes);
}
