/**
 * Serving a Hono app on Node: @hono/node-server for HTTP and @hono/node-ws
 * for WebSocket upgrades. The serve half of the Node runtime.
 */
import type { Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { Hono } from "hono";
import { serve as serveNode } from "@hono/node-server";
import { createNodeWebSocket, type NodeWebSocket } from "@hono/node-ws";
import type { ServeOptions, Server, UpgradeWebSocket } from "./types.ts";

/** Largest WebSocket message accepted, as large as an HTTP request body. */
const webSocketMessageBytesMax = 64 * 1024 * 1024;

// One WebSocket server per app: serve() must inject the same one that
// webSocketFor() handed to the routes.
const webSockets = new WeakMap<Hono, NodeWebSocket>();

/**
 * How often open WebSockets are pinged. A client that vanished without
 * closing (a dead network path) misses a pong and is terminated at the next
 * round, which ends its session; Deno's upgrade does the same by itself with
 * its 120 s idle timeout.
 */
const HEARTBEAT_MS = 30_000;

/** How long close() lets requests in flight finish before cutting them. */
const closeGraceMs = 1_000;

/**
 * Returns the WebSocket upgrade helper for `app`.
 *
 * @param app the app whose routes will upgrade
 * @returns Hono's `upgradeWebSocket` bound to a `ws` server for `app`
 */
export function webSocketFor(app: Hono): UpgradeWebSocket {
  let nodeWebSocket = webSockets.get(app);
  if (!nodeWebSocket) {
    nodeWebSocket = createNodeWebSocket({ app });
    // ws buffers a whole message before handing it over, up to 100 MiB by
    // default; keep that to the HTTP body limit. Larger frames close the
    // socket with 1009.
    nodeWebSocket.wss.options.maxPayload = webSocketMessageBytesMax;
    webSockets.set(app, nodeWebSocket);
  }
  const upgrade = nodeWebSocket.upgradeWebSocket;
  // The adapter reports socket errors through `onError`, building an
  // ErrorEvent that Node 20 lacks; a socket error is always followed by a
  // close, where sessions clean up, so there is nothing more to do here.
  return (createEvents) => upgrade(createEvents, { onError: () => {} });
}

/**
 * Serves `app` on `options.hostname:options.port` until the server is closed.
 *
 * @param app the Hono app
 * @param options where to listen
 * @returns the running server, once it listens
 */
export function serve(app: Hono, options: ServeOptions): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = serveNode({
      fetch: app.fetch,
      hostname: options.hostname,
      port: options.port,
    }) as HttpServer;
    const nodeWebSocket = webSockets.get(app);
    nodeWebSocket?.injectWebSocket(server);
    const stopHeartbeat = nodeWebSocket
      ? startHeartbeat(nodeWebSocket)
      : () => {};
    server.once("close", stopHeartbeat);

    server.once("error", reject);
    server.once("listening", () => {
      server.off("error", reject);
      const port = (server.address() as AddressInfo).port;
      options.onListen?.({ hostname: options.hostname, port });
      resolve({ port, close: () => closeServer(server, nodeWebSocket) });
    });
  });
}

function startHeartbeat(nodeWebSocket: NodeWebSocket): () => void {
  const answered = new WeakSet<object>();
  nodeWebSocket.wss.on("connection", (socket) => {
    answered.add(socket);
    socket.on("pong", () => answered.add(socket));
  });
  const timer = setInterval(() => {
    for (const socket of nodeWebSocket.wss.clients) {
      if (!answered.has(socket)) {
        socket.terminate();
        continue;
      }
      answered.delete(socket);
      socket.ping();
    }
  }, HEARTBEAT_MS);
  timer.unref();
  return () => clearInterval(timer);
}

function closeServer(
  server: HttpServer,
  nodeWebSocket: NodeWebSocket | undefined,
): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    for (const socket of nodeWebSocket?.wss.clients ?? []) {
      socket.close(1001, "server shutting down");
      // A client that never answers the close handshake must not hold the
      // server open.
      setTimeout(() => socket.terminate(), 1000).unref();
    }
    // Requests in flight get a moment to be answered (the broker ends its
    // long-polls as it stops); a keep-alive connection is closed once its
    // answer went out, and connections still busy after the grace are cut.
    server.closeIdleConnections();
    const idle = setInterval(() => server.closeIdleConnections(), 10);
    const cut = setTimeout(() => server.closeAllConnections(), closeGraceMs);
    idle.unref();
    cut.unref();
    server.once("close", () => {
      clearInterval(idle);
      clearTimeout(cut);
    });
  });
}
