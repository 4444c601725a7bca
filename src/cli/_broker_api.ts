/**
 * The CLI's own small client: HTTP calls with fetch and a WebSocket that
 * speaks the JSON frames of docs/protocol.md. The global WebSocket on Deno;
 * Node 20 has none, so there the `ws` package, loaded only when needed.
 */
import type { Connection } from "./_args.ts";

/** An error the broker answered with, or a failure to reach it. */
export class BrokerError extends Error {
  override name = "BrokerError";
  /**
   * @param code the broker's error code (`unknown_topic`, …), or
   *   `unreachable` when no answer came
   * @param message the broker's message
   * @param status the HTTP status, 0 when there was none
   */
  constructor(
    readonly code: string,
    message: string,
    readonly status = 0,
  ) {
    super(message);
  }
}

/** Error codes that mean "no such thing": the CLI exits 3 for them. */
export const notFoundCodes: ReadonlySet<string> = new Set([
  "unknown_topic",
  "unknown_partition",
  "unknown_group",
]);

function authorization(connection: Connection): Record<string, string> {
  return connection.token === undefined
    ? {}
    : { Authorization: `Bearer ${connection.token}` };
}

/**
 * Calls an HTTP route and returns its JSON answer (undefined for 204).
 *
 * @param connection the broker
 * @param method the HTTP method
 * @param path the route, starting with `/`
 * @param body a JSON body, if any
 * @returns the parsed answer
 * @throws {BrokerError} for an error answer or an unreachable broker
 */
export async function callBroker<T>(
  connection: Connection,
  method: string,
  path: string,
  body?: unknown,
): Promise<T> {
  let response: Response;
  try {
    response = await fetch(`${connection.url}${path}`, {
      method,
      headers: {
        ...authorization(connection),
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw unreachable(connection, error);
  }
  const text = await response.text();
  let json: unknown = undefined;
  try {
    json = text === "" ? undefined : JSON.parse(text);
  } catch {
    // An answer that is not JSON (a proxy's page) falls through below.
  }
  if (!response.ok) {
    const error = (json as { error?: { code?: string; message?: string } })
      ?.error;
    throw new BrokerError(
      error?.code ?? `http_${response.status}`,
      error?.message ?? (text.slice(0, 200) || response.statusText),
      response.status,
    );
  }
  return json as T;
}

function unreachable(connection: Connection, error: unknown): BrokerError {
  const cause = (error as { cause?: { message?: string } }).cause;
  return new BrokerError(
    "unreachable",
    `Cannot reach ${connection.url}: ${
      cause?.message ?? (error as Error).message
    }`,
  );
}

/** A decoded server frame. */
export type Frame = Record<string, unknown> & { op: string };

/** An open WebSocket to the broker, speaking JSON frames. */
export interface BrokerSocket {
  /** Sends a frame as JSON text. */
  send(frame: Record<string, unknown>): void;
  /** Called for every frame the server sends. */
  onFrame: (frame: Frame) => void;
  /** Called once when the socket closes, whoever closed it. */
  onClose: (code: number) => void;
  close(): void;
}

/** The parts of a WebSocket the CLI uses: the browser API, which `ws` has. */
interface WebSocketLike {
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(): void;
}

type WebSocketConstructor = new (url: string) => WebSocketLike;

async function webSocketClass(): Promise<WebSocketConstructor> {
  const global = (globalThis as { WebSocket?: WebSocketConstructor })
    .WebSocket;
  if (global !== undefined) return global;
  return (await import("ws")).WebSocket as unknown as WebSocketConstructor;
}

/**
 * Opens `/ws`. The token goes in the query, which both runtimes' clients
 * support (browsers' cannot set headers).
 *
 * @param connection the broker
 * @returns the socket once open
 * @throws {BrokerError} when it cannot connect
 */
export async function openSocket(
  connection: Connection,
): Promise<BrokerSocket> {
  const url = new URL("/ws", connection.url.replace(/^http/, "ws"));
  if (connection.token !== undefined) {
    url.searchParams.set("token", connection.token);
  }
  const Socket = await webSocketClass();
  const socket = new Socket(url.href);
  const handle: BrokerSocket = {
    send: (frame) => socket.send(JSON.stringify(frame)),
    onFrame: () => {},
    onClose: () => {},
    close: () => socket.close(),
  };
  await new Promise<void>((resolve, reject) => {
    socket.onopen = () => resolve();
    socket.onerror = () =>
      reject(
        new BrokerError("unreachable", `Cannot reach ${connection.url}/ws`),
      );
    socket.onclose = () =>
      reject(
        new BrokerError("unreachable", `Cannot reach ${connection.url}/ws`),
      );
  });
  socket.onerror = () => {};
  socket.onclose = (event) => handle.onClose(event.code);
  socket.onmessage = (event) => {
    if (typeof event.data !== "string") return;
    handle.onFrame(JSON.parse(event.data) as Frame);
  };
  return handle;
}
