/**
 * {@linkcode FileSystem} on the Deno namespace. An `FsFile` has one cursor,
 * so every positioned read and write seeks first; that is safe because a
 * file's only user is one actor on one thread.
 *
 * This file is compiled by tsc for Node too, where Deno's global types are
 * absent, so the slice of the namespace it uses is declared here and the
 * namespace is looked up only when a function runs.
 */
import type { DirEntry, FileHandle, FileSystem, OpenMode } from "./types.ts";
import { parentOf, temporaryPathFor } from "./_paths.ts";

interface DenoFile {
  writeSync(bytes: Uint8Array): number;
  write(bytes: Uint8Array): Promise<number>;
  readSync(into: Uint8Array): number | null;
  seekSync(offset: number, whence: number): number;
  statSync(): { size: number };
  truncateSync(length?: number): void;
  syncSync(): void;
  sync(): Promise<void>;
  syncData(): Promise<void>;
  syncDataSync(): void;
  close(): void;
}

interface DenoOpenOptions {
  read?: boolean;
  write?: boolean;
  create?: boolean;
  createNew?: boolean;
  truncate?: boolean;
  mode?: number;
}

interface DenoLike {
  readonly pid: number;
  openSync(path: string, options: DenoOpenOptions): DenoFile;
  open(path: string, options: DenoOpenOptions): Promise<DenoFile>;
  statSync(path: string): { size: number };
  mkdirSync(path: string, options: { recursive: boolean }): void;
  readDirSync(path: string): Iterable<{
    name: string;
    isFile: boolean;
    isDirectory: boolean;
  }>;
  removeSync(path: string, options: { recursive: boolean }): void;
  renameSync(from: string, to: string): void;
  rename(from: string, to: string): Promise<void>;
  readFileSync(path: string): Uint8Array;
  errors: { NotFound: new () => Error; AlreadyExists: new () => Error };
}

/** `Deno.SeekMode.Start`. */
const SEEK_START = 0;

function deno(): DenoLike {
  return (globalThis as unknown as { Deno: DenoLike }).Deno;
}

function writeAll(file: DenoFile, bytes: Uint8Array, position: number): void {
  file.seekSync(position, SEEK_START);
  let done = 0;
  while (done < bytes.length) {
    const written = file.writeSync(bytes.subarray(done));
    if (written <= 0) {
      throw new Error(`Cannot write file: short write at ${position + done}`);
    }
    done += written;
  }
}

async function writeAllAsync(file: DenoFile, bytes: Uint8Array) {
  let done = 0;
  while (done < bytes.length) {
    const written = await file.write(bytes.subarray(done));
    if (written <= 0) {
      throw new Error(`Cannot write file: short write at ${done}`);
    }
    done += written;
  }
}

function removeQuietly(path: string): void {
  try {
    deno().removeSync(path, { recursive: false });
  } catch {
    // The temporary file may never have been created; the first error matters.
  }
}

class DenoFileHandle implements FileHandle {
  readonly path: string;
  #file: DenoFile;
  #closed = false;

  constructor(path: string, file: DenoFile) {
    this.path = path;
    this.#file = file;
  }

  size(): number {
    return this.#file.statSync().size;
  }

  write(bytes: Uint8Array, position: number): void {
    writeAll(this.#file, bytes, position);
  }

  read(into: Uint8Array, position: number): number {
    this.#file.seekSync(position, SEEK_START);
    let done = 0;
    while (done < into.length) {
      const read = this.#file.readSync(into.subarray(done));
      if (read === null || read === 0) break;
      done += read;
    }
    return done;
  }

  sync(): Promise<void> {
    return this.#file.syncData();
  }

  syncNow(): void {
    this.#file.syncDataSync();
  }

  truncate(length: number): void {
    this.#file.truncateSync(length);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#file.close();
  }
}

/** The broker's file operations on Deno. */
export const denoFileSystem: FileSystem = {
  open(path: string, mode: OpenMode): FileHandle {
    const options = mode === "read"
      ? { read: true }
      : { read: true, write: true, create: true, mode: 0o644 };
    return new DenoFileHandle(path, deno().openSync(path, options));
  },

  exists(path: string): boolean {
    return denoFileSystem.sizeOf(path) >= 0;
  },

  sizeOf(path: string): number {
    try {
      return deno().statSync(path).size;
    } catch (error) {
      if (error instanceof deno().errors.NotFound) return -1;
      throw error;
    }
  },

  mkdirs(path: string): void {
    deno().mkdirSync(path, { recursive: true });
  },

  list(path: string): DirEntry[] {
    return [...deno().readDirSync(path)].map((entry) => ({
      name: entry.name,
      isFile: entry.isFile,
      isDirectory: entry.isDirectory,
    }));
  },

  remove(path: string): void {
    try {
      deno().removeSync(path, { recursive: true });
    } catch (error) {
      if (!(error instanceof deno().errors.NotFound)) throw error;
    }
  },

  rename(from: string, to: string): void {
    deno().renameSync(from, to);
  },

  readFile(path: string): Uint8Array {
    return deno().readFileSync(path);
  },

  writeFileAtomic(path: string, bytes: Uint8Array): void {
    const temporary = temporaryPathFor(path, deno().pid);
    try {
      const file = deno().openSync(temporary, {
        write: true,
        create: true,
        truncate: true,
        mode: 0o644,
      });
      try {
        writeAll(file, bytes, 0);
        file.syncSync();
      } finally {
        file.close();
      }
      deno().renameSync(temporary, path);
    } catch (error) {
      removeQuietly(temporary);
      throw error;
    }
    denoFileSystem.syncDirectory(parentOf(path));
  },

  async writeFileAtomicAsync(path: string, bytes: Uint8Array): Promise<void> {
    const temporary = temporaryPathFor(path, deno().pid);
    try {
      const file = await deno().open(temporary, {
        write: true,
        create: true,
        truncate: true,
        mode: 0o644,
      });
      try {
        await writeAllAsync(file, bytes);
        await file.sync();
      } finally {
        file.close();
      }
      await deno().rename(temporary, path);
    } catch (error) {
      removeQuietly(temporary);
      throw error;
    }
    const directory = await deno().open(parentOf(path), { read: true });
    try {
      await directory.sync();
    } finally {
      directory.close();
    }
  },

  createExclusive(path: string, bytes: Uint8Array): boolean {
    let file: DenoFile;
    try {
      file = deno().openSync(path, {
        write: true,
        createNew: true,
        mode: 0o644,
      });
    } catch (error) {
      if (error instanceof deno().errors.AlreadyExists) return false;
      throw error;
    }
    try {
      writeAll(file, bytes, 0);
      file.syncDataSync();
    } finally {
      file.close();
    }
    denoFileSystem.syncDirectory(parentOf(path));
    return true;
  },

  syncDirectory(path: string): void {
    const directory = deno().openSync(path, { read: true });
    try {
      directory.syncSync();
    } finally {
      directory.close();
    }
  },
};
