/**
 * Worker threads on Node: the worker half of the runtime seam.
 *
 * Node runs the compiled tree, so an actor named "partition_actor" is the
 * file build/actors/partition_actor.js, two directories up from this
 * module's build/src/runtime/ home.
 */
import { parentPort as nodeParentPort, Worker } from "node:worker_threads";
import type { PortLike, WorkerHandle } from "./types.ts";

/**
 * Starts `actors/<actorName>.js` in a worker thread.
 *
 * @param actorName file name under actors/ without extension
 * @param workerName thread name shown in debuggers and stack traces
 * @returns a handle whose `onExit` fires once, on an uncaught error or an exit
 */
export function startWorker(
  actorName: string,
  workerName: string,
): WorkerHandle {
  const url = new URL(`../../actors/${actorName}.js`, import.meta.url);
  const worker = new Worker(url, { name: workerName });
  const exitHandlers: ((error: Error | undefined) => void)[] = [];
  let exited = false;
  let firstError: Error | undefined;
  const exit = (error: Error | undefined) => {
    if (exited) return;
    exited = true;
    for (const handler of exitHandlers) handler(error);
  };

  // "error" comes before "exit" for an uncaught exception; keep the error
  // and report once, on exit, when the thread is really gone.
  worker.on("error", (error: Error) => {
    firstError ??= error;
  });
  worker.on("exit", (code: number) => {
    exit(
      firstError ?? (code === 0 ? undefined : new Error(
        `Worker ${workerName} exited with code ${code}`,
      )),
    );
  });

  return {
    postMessage: (message, transfer) =>
      worker.postMessage(
        message,
        transfer as Parameters<Worker["postMessage"]>[1],
      ),
    onMessage: (handler) => {
      worker.on("message", handler);
    },
    close: () => {
      void worker.terminate();
    },
    onExit: (handler) => {
      exitHandlers.push(handler);
    },
    terminate: async () => {
      await worker.terminate();
    },
  };
}

/**
 * The port a worker thread uses to talk to the thread that started it.
 *
 * @throws {TypeError} when called outside a worker thread
 */
export function parentPort(): PortLike {
  const port = nodeParentPort;
  if (port === null) {
    throw new TypeError("Cannot get the parent port: not in a worker thread");
  }
  return {
    postMessage: (message, transfer) =>
      port.postMessage(
        message,
        transfer as Parameters<typeof port.postMessage>[1],
      ),
    onMessage: (handler) => {
      port.on("message", handler);
    },
    close: () => port.close(),
  };
}
