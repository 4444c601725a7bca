/**
 * The runtime Dakghar runs on, picked once at startup. The only place that
 * asks whether this is Deno or Node; everything else takes a `Runtime`.
 */
import type { Runtime } from "./types.ts";

/** The runtime for the current process: Deno when `Deno` exists, else Node. */
export const runtime: Runtime = "Deno" in globalThis
  ? (await import("./deno.ts")).denoRuntime
  : (await import("./node.ts")).nodeRuntime;
