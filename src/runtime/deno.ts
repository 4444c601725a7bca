/**
 * The Deno runtime: files, worker threads and serving, assembled from their
 * Deno halves.
 */
import { denoFileSystem } from "./deno_fs.ts";
import { parentPort, startWorker } from "./deno_worker.ts";
import { serve, webSocketFor } from "./deno_serve.ts";
import type { Runtime } from "./types.ts";

// The part of Deno's API used here, typed locally because tsc compiles this
// file for Node without Deno's declarations.
interface DenoProcess {
  readonly args: string[];
  env: { get(name: string): string | undefined };
  exit(code: number): never;
  addSignalListener(signal: "SIGINT" | "SIGTERM", handler: () => void): void;
}

const deno = (globalThis as unknown as { Deno: DenoProcess }).Deno;

/** Dakghar's seam implemented for Deno. */
export const denoRuntime: Runtime = {
  name: "deno",
  fs: denoFileSystem,
  startWorker,
  parentPort,
  webSocketFor,
  serve,
  env: (name) => deno.env.get(name),
  args: () => [...deno.args],
  exit: (code) => deno.exit(code),
  onSignal(handler) {
    deno.addSignalListener("SIGINT", () => handler("SIGINT"));
    deno.addSignalListener("SIGTERM", () => handler("SIGTERM"));
  },
};
