/**
 * {@linkcode FileSystem} on Node's `node:fs`. Reads and writes are the
 * synchronous positioned calls; `sync()` goes through the callback API so
 * that the fdatasync runs on libuv's thread pool while the actor's thread
 * keeps accepting appends.
 */
import * as fs from "node:fs";
import type { DirEntry, FileHandle, FileSystem, OpenMode } from "./types.ts";
import { parentOf, temporaryPathFor } from "./_paths.ts";

function writeAll(fd: number, bytes: Uint8Array, position: number): void {
  let done = 0;
  while (done < bytes.length) {
    const written = fs.writeSync(
      fd,
      bytes,
      done,
      bytes.length - done,
      position + done,
    );
    if (written <= 0) {
      throw new Error(`Cannot write file: short write at ${position + done}`);
    }
    done += written;
  }
}

class NodeFileHandle implements FileHandle {
  readonly path: string;
  #fd: number;
  #closed = false;

  constructor(path: string, fd: number) {
    this.path = path;
    this.#fd = fd;
  }

  size(): number {
    return fs.fstatSync(this.#fd).size;
  }

  write(bytes: Uint8Array, position: number): void {
    writeAll(this.#fd, bytes, position);
  }

  read(into: Uint8Array, position: number): number {
    let done = 0;
    while (done < into.length) {
      const read = fs.readSync(
        this.#fd,
        into,
        done,
        into.length - done,
        position + done,
      );
      if (read === 0) break;
      done += read;
    }
    return done;
  }

  sync(): Promise<void> {
    return new Promise((resolve, reject) => {
      fs.fdatasync(this.#fd, (error) => error ? reject(error) : resolve());
    });
  }

  syncNow(): void {
    fs.fdatasyncSync(this.#fd);
  }

  truncate(length: number): void {
    fs.ftruncateSync(this.#fd, length);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    fs.closeSync(this.#fd);
  }
}

/** The broker's file operations on Node. */
export const nodeFileSystem: FileSystem = {
  open(path: string, mode: OpenMode): FileHandle {
    const flags = mode === "read"
      ? fs.constants.O_RDONLY
      : fs.constants.O_RDWR | fs.constants.O_CREAT;
    return new NodeFileHandle(path, fs.openSync(path, flags, 0o644));
  },

  exists(path: string): boolean {
    return fs.existsSync(path);
  },

  sizeOf(path: string): number {
    return fs.statSync(path, { throwIfNoEntry: false })?.size ?? -1;
  },

  mkdirs(path: string): void {
    fs.mkdirSync(path, { recursive: true });
  },

  list(path: string): DirEntry[] {
    return fs.readdirSync(path, { withFileTypes: true }).map((entry) => ({
      name: entry.name,
      isFile: entry.isFile(),
      isDirectory: entry.isDirectory(),
    }));
  },

  remove(path: string): void {
    fs.rmSync(path, { recursive: true, force: true });
  },

  rename(from: string, to: string): void {
    fs.renameSync(from, to);
  },

  readFile(path: string): Uint8Array {
    const buffer = fs.readFileSync(path);
    return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  },

  writeFileAtomic(path: string, bytes: Uint8Array): void {
    const temporary = temporaryPathFor(path, process.pid);
    try {
      const fd = fs.openSync(temporary, "w", 0o644);
      try {
        writeAll(fd, bytes, 0);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(temporary, path);
    } catch (error) {
      fs.rmSync(temporary, { force: true });
      throw error;
    }
    nodeFileSystem.syncDirectory(parentOf(path));
  },

  async writeFileAtomicAsync(path: string, bytes: Uint8Array): Promise<void> {
    const temporary = temporaryPathFor(path, process.pid);
    try {
      const file = await fs.promises.open(temporary, "w", 0o644);
      try {
        await file.writeFile(bytes);
        await file.sync();
      } finally {
        await file.close();
      }
      await fs.promises.rename(temporary, path);
    } catch (error) {
      await fs.promises.rm(temporary, { force: true });
      throw error;
    }
    const directory = await fs.promises.open(parentOf(path), "r");
    try {
      await directory.sync();
    } finally {
      await directory.close();
    }
  },

  createExclusive(path: string, bytes: Uint8Array): boolean {
    let fd: number;
    try {
      fd = fs.openSync(path, "wx", 0o644);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw error;
    }
    try {
      writeAll(fd, bytes, 0);
      fs.fdatasyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    nodeFileSystem.syncDirectory(parentOf(path));
    return true;
  },

  syncDirectory(path: string): void {
    const fd = fs.openSync(path, "r");
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  },
};
