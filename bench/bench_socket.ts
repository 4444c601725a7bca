/**
 * A lean msgpack WebSocket client for the benchmark, on the `ws` package:
 * requests with an `id` resolve on the reply carrying it; every other frame
 * (batch, assigned, errors without an id) goes to `onFrame`.
 */
import { Packr } from "msgpackr";
import { WebSocket } from "ws";

/** A decoded frame: a map with an `op`. */
export type Frame = Record<string, unknown>;

const packr = new Packr({ useRecords: false });

/** A connected benchmark socket speaking msgpack binary frames. */
export class BenchSocket {
  /** Receives frames that answer no request. */
  onFrame: (frame: Frame) => void = () => {};
  #ws: WebSocket;
  #nextId = 1;
  #pending = new Map<
    number,
    { resolve: (frame: Frame) => void; reject: (error: Error) => void }
  >();
  #closed: Promise<void>;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    // A protocol or socket error is followed by "close", which fails what
    // is pending; without a listener it would crash the bench instead.
    ws.on("error", () => {});
    this.#closed = new Promise((resolve) => {
      ws.on("close", (code) => {
        const error = new Error(`WebSocket closed: ${code}`);
        for (const waiter of this.#pending.values()) waiter.reject(error);
        this.#pending.clear();
        resolve();
      });
    });
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      const frame = (isBinary
        ? packr.unpack(data)
        : JSON.parse(data.toString("utf8"))) as Frame;
      const id = frame.id;
      const waiter = typeof id === "number" ? this.#pending.get(id) : undefined;
      if (waiter === undefined) {
        this.onFrame(frame);
        return;
      }
      this.#pending.delete(id as number);
      if (frame.op === "error") {
        waiter.reject(new Error(`${frame.code}: ${frame.message}`));
      } else waiter.resolve(frame);
    });
  }

  /**
   * Connects to the broker's `/ws`.
   *
   * @param url the broker's `http://host:port`
   * @returns the socket, once open
   */
  static open(url: string): Promise<BenchSocket> {
    const ws = new WebSocket(`${url.replace(/^http/, "ws")}/ws`, {
      perMessageDeflate: false,
    });
    return new Promise((resolve, reject) => {
      ws.once("open", () => resolve(new BenchSocket(ws)));
      ws.once("error", reject);
    });
  }

  /** Requests not answered yet. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /** Bytes queued in the socket, not yet handed to the kernel. */
  get bufferedAmount(): number {
    return this.#ws.bufferedAmount;
  }

  /** Sends `frame` with a fresh `id`; resolves with the reply, rejects on an `error` reply. */
  request(frame: Frame): Promise<Frame> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#ws.send(packr.pack({ ...frame, id }));
    });
  }

  /** Sends a frame that gets no reply. */
  send(frame: Frame): void {
    this.#ws.send(packr.pack(frame));
  }

  /** Closes the socket; drops the connection if the close handshake takes over 2 s. */
  async close(): Promise<void> {
    if (this.#ws.readyState === WebSocket.OPEN) this.#ws.close(1000);
    else if (this.#ws.readyState === WebSocket.CONNECTING) this.#ws.terminate();
    const timer = setTimeout(() => this.#ws.terminate(), 2000);
    await this.#closed;
    clearTimeout(timer);
  }
}
