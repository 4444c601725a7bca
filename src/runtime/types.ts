/**
 * The one seam between Dakghar and the JavaScript runtime it runs on.
 *
 * Everything that differs between Node and Deno — files opened for append
 * and fsync, worker threads, serving HTTP and WebSocket — sits behind the
 * interfaces in this file. `node.ts` and `deno.ts` implement them; `mod.ts`
 * picks one. No other module asks which runtime it runs on.
 *
 * File handles are synchronous for reads and writes because their only
 * users are partition actors, each alone on its worker thread, where a
 * blocking pwrite into the page cache is cheaper than a promise. `sync()`
 * is asynchronous so that an actor keeps accepting appends while an fsync
 * runs: that is what makes group commit possible.
 */
import type { Hono } from "hono";

/** An open file. Positions and lengths are in bytes. */
export interface FileHandle {
  readonly path: string;
  /** Current size of the file. */
  size(): number;
  /** Writes all of `bytes` at `position`. Throws on a short or failed write. */
  write(bytes: Uint8Array, position: number): void;
  /** Reads up to `into.length` bytes at `position`; returns how many were read (0 at end). */
  read(into: Uint8Array, position: number): number;
  /** fdatasync: resolves once every byte written before the call is durable. */
  sync(): Promise<void>;
  /** Synchronous fdatasync, for close and roll paths. */
  syncNow(): void;
  /** Cuts the file to `length` bytes. */
  truncate(length: number): void;
  close(): void;
}

/** Modes for {@linkcode FileSystem.open}. */
export type OpenMode =
  /** Read only; the file must exist. */
  | "read"
  /** Read and write; created if missing, never truncated. */
  | "readWrite";

/** A directory entry as returned by {@linkcode FileSystem.list}. */
export interface DirEntry {
  name: string;
  isFile: boolean;
  isDirectory: boolean;
}

/** The file operations the broker needs. Paths are plain strings joined with "/". */
export interface FileSystem {
  open(path: string, mode: OpenMode): FileHandle;
  exists(path: string): boolean;
  /** Size in bytes, or -1 when the file does not exist. */
  sizeOf(path: string): number;
  mkdirs(path: string): void;
  list(path: string): DirEntry[];
  /** Removes a file or a whole directory tree; no error when missing. */
  remove(path: string): void;
  rename(from: string, to: string): void;
  readFile(path: string): Uint8Array;
  /** Writes through a temporary file, fsyncs it, renames it over `path` and fsyncs the directory. */
  writeFileAtomic(path: string, bytes: Uint8Array): void;
  /** Async version of {@linkcode writeFileAtomic} for the main thread. */
  writeFileAtomicAsync(path: string, bytes: Uint8Array): Promise<void>;
  /**
   * Creates `path` holding `bytes`, fsynced, only if no file of that name
   * exists: an atomic test-and-create. Returns false when it existed.
   */
  createExclusive(path: string, bytes: Uint8Array): boolean;
  /** fsyncs a directory so that creates, renames and deletes in it are durable. */
  syncDirectory(path: string): void;
}

/** A message port in either runtime: the web-standard subset both share. */
export interface PortLike {
  postMessage(message: unknown, transfer?: Transferable[]): void;
  onMessage(handler: (message: unknown) => void): void;
  close(): void;
}

/** A worker thread as seen from the thread that started it. */
export interface WorkerHandle extends PortLike {
  /** Called once if the worker dies: an uncaught error or an exit. */
  onExit(handler: (error: Error | undefined) => void): void;
  terminate(): Promise<void>;
}

/** Options for {@linkcode Runtime.serve}. */
export interface ServeOptions {
  hostname: string;
  port: number;
  /** Called once the socket listens, with the port actually bound (useful with port 0). */
  onListen?: (address: { hostname: string; port: number }) => void;
}

/** A running HTTP server. */
export interface Server {
  readonly port: number;
  /** Stops accepting connections and closes the open ones. */
  close(): Promise<void>;
}

/**
 * Hono's `upgradeWebSocket` helper as each runtime provides it (hono/deno,
 * @hono/node-ws). Typed loosely because the two adapters' types differ.
 */
// deno-lint-ignore no-explicit-any
export type UpgradeWebSocket = (createEvents: (c: any) => any) => any;

/** Everything runtime-specific, in one object. */
export interface Runtime {
  readonly name: "node" | "deno";
  readonly fs: FileSystem;
  /** Starts the named actor from `actors/` (for example "partition_actor") in a worker thread. */
  startWorker(actorName: string, workerName: string): WorkerHandle;
  /** The port a worker thread uses to talk to the thread that started it. */
  parentPort(): PortLike;
  /**
  /**
   * Returns the WebSocket upgrade helper for `app`. Call it before adding
   * the routes that upgrade and before {@linkcode serve}.
   */
  webSocketFor(app: Hono): UpgradeWebSocket;
  /** Serves `app` until the returned server is closed. */
  serve(app: Hono, options: ServeOptions): Promise<Server>;
  /** Process environment variable, or undefined. */
  env(name: string): string | undefined;
  /** Command-line arguments after the script name. */
  args(): string[];
  exit(code: number): never;
  /** Registers a handler for SIGINT and SIGTERM. */
  onSignal(handler: (signal: string) => void): void;
}
