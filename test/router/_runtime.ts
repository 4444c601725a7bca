/**
 * The file system and worker halves of the runtime under test, picked
 * without top-level await: test/run.ts registers suites while importing
 * them, and a suite whose import graph awaits at top level misses its turn.
 */
import { denoFileSystem } from "../../src/runtime/deno_fs.ts";
import * as denoWorker from "../../src/runtime/deno_worker.ts";
import { nodeFileSystem } from "../../src/runtime/node_fs.ts";
import * as nodeWorker from "../../src/runtime/node_worker.ts";
import type { FileSystem, Runtime } from "../../src/runtime/types.ts";

/** "deno" or "node", for suite names. */
export const runtimeName: "deno" | "node" = "Deno" in globalThis
  ? "deno"
  : "node";

/** What the router needs from the runtime. */
export const testRuntime: Pick<Runtime, "fs" | "startWorker"> & {
  fs: FileSystem;
} = runtimeName === "deno"
  ? { fs: denoFileSystem, startWorker: denoWorker.startWorker }
  : { fs: nodeFileSystem, startWorker: nodeWorker.startWorker };
