/**
 * Serving a Hono app on Deno: `Deno.serve` for HTTP and hono/deno's
 * `upgradeWebSocket`. The serve half of the Deno runtime.
 */
import type { Hono } from "hono";
import { upgradeWebSocket as upgradeDeno } from "hono/deno";
import type { WSContext, WSEvents } from "hono/ws";
import type { ServeOptions, Server, UpgradeWebSocket } from "./types.ts";

// The part of Deno's API used here, typed locally because tsc compiles this
// file for Node without Deno's declarations.
interface DenoHttpServer {
  readonly finished: Promise<void>;
  shutdown(): Promise<void>;
}
interface DenoServe {
  serve(
    options: {
      hostname: string;
      port: number;
      onListen: (address: { hostname: string; port: number }) => void;
    },
    handler: (request: Request) => Response | Promise<Response>,
  ): DenoHttpServer;
}
type CreateEvents = (c: unknown) => WSEvents | Promise<WSEvents>;
type UpgradeDeno = (createEvents: CreateEvents) => unknown;

const deno = (globalThis as unknown as { Deno: DenoServe }).Deno;

// Open sockets per app, so that close() can end them: Deno's shutdown waits
// for requests in flight but knows nothing of upgraded sockets.
const openSockets = new WeakMap<Hono, Set<WSContext>>();

/**
 * Returns the WebSocket upgrade helper for `app`.
 *
 * @param app the app whose routes will upgrade
 * @returns hono/deno's `upgradeWebSocket`, tracking open sockets for close
 */
export function webSocketFor(app: Hono): UpgradeWebSocket {
  const sockets = openSockets.get(app) ?? new Set<WSContext>();
  openSockets.set(app, sockets);
  const upgrade = upgradeDeno as unknown as UpgradeDeno;
  return (createEvents: CreateEvents) =>
    upgrade(async (c) => {
      const events = await createEvents(c);
      return {
        ...events,
        onOpen(event, ws) {
          sockets.add(ws);
          events.onOpen?.(event, ws);
        },
        onClose(event, ws) {
          sockets.delete(ws);
          events.onClose?.(event, ws);
        },
      } satisfies WSEvents;
    });
}

/**
 * Serves `app` on `options.hostname:options.port` until the server is closed.
 *
 * @param app the Hono app
 * @param options where to listen
 * @returns the running server, once it listens
 */
export function serve(app: Hono, options: ServeOptions): Promise<Server> {
  return new Promise((resolve) => {
    const server = deno.serve({
      hostname: options.hostname,
      port: options.port,
      onListen: (address) => {
        options.onListen?.({ hostname: options.hostname, port: address.port });
        resolve({ port: address.port, close: () => closeServer(app, server) });
      },
    }, app.fetch);
  });
}

async function closeServer(app: Hono, server: DenoHttpServer): Promise<void> {
  for (const socket of openSockets.get(app) ?? []) {
    socket.close(1001, "server shutting down");
  }
  await server.shutdown();
  await server.finished;
}
