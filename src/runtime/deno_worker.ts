/**
 * Worker threads on Deno: the worker half of the runtime seam.
 *
 * Deno runs the sources, so an actor named "partition_actor" is the module
 * actors/partition_actor.ts, started as a web module worker. Deno reports
 * no exit event for workers; an uncaught error arrives as an `error` event
 * and `terminate()` reports the exit itself.
 */
import type { PortLike, WorkerHandle } from "./types.ts";

/** The parts of a Deno worker's global scope used here. */
interface WorkerScope {
  postMessage(message: unknown, transfer?: Transferable[]): void;
  onmessage: ((event: MessageEvent) => void) | null;
  close(): void;
}

/**
 * Starts `actors/<actorName>.ts` in a web worker.
 *
 * @param actorName file name under actors/ without extension
 * @param workerName thread name shown in debuggers and stack traces
 * @returns a handle whose `onExit` fires once, on an uncaught error or on terminate
 */
export function startWorker(
  actorName: string,
  workerName: string,
): WorkerHandle {
  const url = new URL(`../../actors/${actorName}.ts`, import.meta.url);
  const worker = new Worker(url, { type: "module", name: workerName });
  const exitHandlers: ((error: Error | undefined) => void)[] = [];
  let exited = false;
  const exit = (error: Error | undefined) => {
    if (exited) return;
    exited = true;
    for (const handler of exitHandlers) handler(error);
  };

  worker.onerror = (event: ErrorEvent) => {
    // Without preventDefault the error would propagate and end this thread too.
    event.preventDefault();
    worker.terminate();
    exit(
      event.error instanceof Error
        ? event.error
        : new Error(`Worker ${workerName} failed: ${event.message}`),
    );
  };
  worker.onmessageerror = () => {
    worker.terminate();
    exit(new Error(`Worker ${workerName} sent a message that cannot be read`));
  };

  return {
    postMessage: (message, transfer) =>
      worker.postMessage(message, transfer ?? []),
    onMessage: (handler) => {
      worker.addEventListener(
        "message",
        (event: MessageEvent) => handler(event.data),
      );
    },
    close: () => {
      worker.terminate();
      exit(undefined);
    },
    onExit: (handler) => {
      exitHandlers.push(handler);
    },
    terminate: () => {
      worker.terminate();
      exit(new Error(`Worker ${workerName} terminated`));
      return Promise.resolve();
    },
  };
}

/** The port a worker thread uses to talk to the thread that started it. */
export function parentPort(): PortLike {
  const scope = globalThis as unknown as WorkerScope;
  return {
    postMessage: (message, transfer) =>
      scope.postMessage(message, transfer ?? []),
    onMessage: (handler) => {
      scope.onmessage = (event: MessageEvent) => handler(event.data);
    },
    close: () => scope.close(),
  };
}
