/**
 * The Node runtime: files, worker threads and serving, assembled from their
 * Node halves.
 */
import process from "node:process";
import { nodeFileSystem } from "./node_fs.ts";
import { parentPort, startWorker } from "./node_worker.ts";
import { serve, webSocketFor } from "./node_serve.ts";
import type { Runtime } from "./types.ts";

/** Dakghar's seam implemented for Node. */
export const nodeRuntime: Runtime = {
  name: "node",
  fs: nodeFileSystem,
  startWorker,
  parentPort,
  webSocketFor,
  serve,
  env: (name) => process.env[name],
  args: () => process.argv.slice(2),
  exit: (code) => process.exit(code),
  onSignal(handler) {
    process.on("SIGINT", () => handler("SIGINT"));
    process.on("SIGTERM", () => handler("SIGTERM"));
  },
};
