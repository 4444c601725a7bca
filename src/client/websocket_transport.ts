/**
 * One WebSocket connection to `/ws`: sends frames as JSON text or msgpack
 * binary messages, matches replies to requests by `id`, and hands every other
 * frame (records, batch, assigned, revoked, reset, errors of a fetch) to
 * `onFrame`. It uses only the standard WebSocket interface, so a browser's,
 * Deno's or the `ws` package's WebSocket all work. It does not reconnect:
 * subscriptions do that themselves, since only they know where to resume.
 */
import { Packr } from "msgpackr";
import { DakgharClientError, errorFromBody } from "./errors.ts";

/** The part of the standard WebSocket this client uses. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onclose: ((event: unknown) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
}

/**
 * A WebSocket class: the global one, or `ws`'s default export on Node. Typed
 * loosely so that both fit as they are; its instances must behave as
 * {@linkcode WebSocketLike}.
 */
export type WebSocketConstructor = new (url: string) => object;

/** A frame: a map with an `op` field (docs/protocol.md). */
export type Frame = Record<string, unknown> & { op: string };

/** How a frame goes on the wire. */
export type FrameEncoding = "json" | "msgpack";

const OPEN = 1;
const packr = new Packr({ useRecords: false });

/** Replies that answer a request by its id. */
const replyOps = new Set([
  "subscribed",
  "ack",
  "committed",
  "unsubscribed",
  "pong",
  "moved",
  "settled",
]);

interface Pending {
  resolve(frame: Frame): void;
  reject(error: DakgharClientError): void;
}

/** An open WebSocket with request/reply matching. */
export class WebSocketTransport {
  /** Frames that answer no request of this transport. */
  onFrame: (frame: Frame) => void = () => {};
  /** Called once when the socket closes, by either side. */
  onClose: (error: DakgharClientError) => void = () => {};

  readonly #socket: WebSocketLike;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #closed = false;

  private constructor(socket: WebSocketLike) {
    this.#socket = socket;
  }

  /**
   * Opens a connection to `url` (ws:// or wss://, ending in /ws).
   * @throws {DakgharClientError} `network_error` when it cannot open
   */
  static open(
    url: string,
    WebSocketImpl: WebSocketConstructor,
  ): Promise<WebSocketTransport> {
    return new Promise((resolve, reject) => {
      let socket: WebSocketLike;
      try {
        socket = new (WebSocketImpl as new (url: string) => WebSocketLike)(
          url,
        );
      } catch (error) {
        reject(
          new DakgharClientError("network_error", `Cannot open ${url}`, {
            cause: error,
          }),
        );
        return;
      }
      socket.binaryType = "arraybuffer";
      const transport = new WebSocketTransport(socket);
      socket.onopen = () => resolve(transport);
      socket.onerror = () => {};
      socket.onclose = (event) => {
        const error = new DakgharClientError(
          "network_error",
          `Cannot open ${url}${closeDetail(event)}`,
        );
        reject(error);
        transport.#closeWith(
          new DakgharClientError(
            "connection_closed",
            `Connection closed${closeDetail(event)}`,
          ),
        );
      };
      socket.onmessage = (event) => transport.#receive(event.data);
    });
  }

  get isOpen(): boolean {
    return !this.#closed && this.#socket.readyState === OPEN;
  }

  /** Sends a frame that gets no reply (credit). */
  send(frame: Frame, encoding: FrameEncoding = "json"): void {
    if (!this.isOpen) {
      throw new DakgharClientError("connection_closed", "Connection closed");
    }
    this.#socket.send(
      encoding === "json" ? JSON.stringify(frame) : packr.pack(frame),
    );
  }

  /**
   * Sends a frame with a fresh `id` and resolves with its reply.
   * @throws {DakgharClientError} the broker's `error` frame, or
   *   `connection_closed` when the socket closes first
   */
  request(
    frame: Frame,
    encoding: FrameEncoding = "json",
  ): Promise<Frame> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      try {
        this.send({ ...frame, id }, encoding);
      } catch (error) {
        reject(error);
        return;
      }
      this.#pending.set(id, { resolve, reject });
    });
  }

  /** Closes the socket; pending requests fail with `connection_closed`. */
  close(): void {
    this.#closeWith(
      new DakgharClientError("connection_closed", "Connection closed"),
    );
    try {
      this.#socket.close(1000);
    } catch {
      // Already closing: nothing left to release.
    }
  }

  #receive(data: unknown): void {
    let frame: Frame;
    try {
      frame = (typeof data === "string"
        ? JSON.parse(data)
        : packr.unpack(new Uint8Array(data as ArrayBuffer))) as Frame;
    } catch {
      return; // The broker sends only valid frames; nothing to dispatch.
    }
    if (typeof frame !== "object" || frame === null) return;

    const pending = typeof frame.id === "number"
      ? this.#pending.get(frame.id)
      : undefined;
    if (pending && (replyOps.has(frame.op) || frame.op === "error")) {
      this.#pending.delete(frame.id as number);
      if (frame.op === "error") {
        const { op: _op, id: _id, ...body } = frame;
        pending.reject(errorFromBody(body));
      } else pending.resolve(frame);
      return;
    }
    this.onFrame(frame);
  }

  #closeWith(error: DakgharClientError): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const pending of this.#pending.values()) pending.reject(error);
    this.#pending.clear();
    this.onClose(error);
  }
}

function closeDetail(event: unknown): string {
  const code = (event as { code?: unknown } | undefined)?.code;
  return typeof code === "number" ? ` (code ${code})` : "";
}
