/**
 * An in-process stand-in for the broker's WebSocket side of queue
 * subscriptions (/tmp/wire_contract.md): a WebSocket class the client opens
 * like a real one, whose server end answers `subscribe`, `settle` and
 * `unsubscribe` and lets a test push `deliveries` frames and drop the
 * connection. No network, so the tests are exact and fast.
 */
import { Packr } from "msgpackr";
import { encodeBatch, stampBatch } from "../../src/log/record_batch.ts";
import type { WebSocketConstructor } from "../../src/client/websocket_transport.ts";

const packr = new Packr({ useRecords: false });

/** A frame as decoded. */
// deno-lint-ignore no-explicit-any
export type Frame = Record<string, any>;

/** One connection's server end. */
export class FakeSocket {
  binaryType = "blob";
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onclose: ((event: unknown) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  /** The subscription id given on this connection. */
  sub: string | undefined;

  constructor(readonly server: FakeQueueServer, readonly url: string) {
    server.sockets.push(this);
    queueMicrotask(() => {
      this.readyState = 1;
      this.onopen?.({});
    });
  }

  send(data: string | Uint8Array): void {
    const frame =
      (typeof data === "string"
        ? JSON.parse(data)
        : packr.unpack(data)) as Frame;
    this.server.frames.push(frame);
    queueMicrotask(() => this.server.handle(this, frame));
  }

  close(code = 1000): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code }));
  }

  /** Sends a frame to the client, as msgpack. */
  push(frame: Frame): void {
    if (this.readyState !== 1) return;
    const bytes = packr.pack(frame);
    const buffer = bytes.buffer.slice(
      bytes.byteOffset,
      bytes.byteOffset + bytes.byteLength,
    );
    this.onmessage?.({ data: buffer });
  }
}

/** The broker side: every connection, every frame, and the answers. */
export class FakeQueueServer {
  sockets: FakeSocket[] = [];
  /** Every frame the client sent, in order. */
  frames: Frame[] = [];
  /** Decides which settlements a `settle` frame has refused. */
  refuse: (frame: Frame) => Frame[] = () => [];
  /** The mode `subscribed` reports (default: the one asked for). */
  mode: string | undefined;
  #subs = 0;
  #waiters: (() => void)[] = [];

  /** The WebSocket class to give the client. */
  get WebSocket(): WebSocketConstructor {
    // deno-lint-ignore no-this-alias
    const server = this;
    return class extends FakeSocket {
      constructor(url: string) {
        super(server, url);
      }
    };
  }

  /** The newest connection. */
  get socket(): FakeSocket {
    return this.sockets[this.sockets.length - 1];
  }

  /** Frames of one op, in order. */
  sent(op: string): Frame[] {
    return this.frames.filter((frame) => frame.op === op);
  }

  /** Resolves once the client has sent `count` frames of `op`. */
  async waitFor(op: string, count = 1): Promise<Frame[]> {
    while (this.sent(op).length < count) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    return this.sent(op);
  }

  handle(socket: FakeSocket, frame: Frame): void {
    switch (frame.op) {
      case "subscribe":
        socket.sub = `s${++this.#subs}`;
        socket.push({
          op: "subscribed",
          id: frame.id,
          sub: socket.sub,
          memberId: frame.memberId ?? "member-1",
          mode: this.mode ?? frame.mode ?? "stream",
        });
        break;
      case "settle": {
        const refused = this.refuse(frame);
        const settled = count(frame) - refused.length;
        if (frame.id !== undefined || refused.length > 0) {
          socket.push({
            op: "settled",
            ...(frame.id === undefined ? {} : { id: frame.id }),
            settled,
            refused,
          });
        }
        break;
      }
      case "unsubscribe":
        socket.push({ op: "unsubscribed", id: frame.id, sub: frame.sub });
        break;
    }
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /**
   * Delivers records `values` at `offset` on in `partition` to the newest
   * connection; `attempts` maps offsets to attempts above 1.
   */
  deliver(
    partition: number,
    offset: number,
    values: string[],
    attempts: Record<number, number> = {},
  ): void {
    const encoder = new TextEncoder();
    const bytes = encodeBatch(values.map((value) => ({
      key: null,
      value: encoder.encode(value),
      headers: [["dakghar.tag", encoder.encode("t")]],
      timestamp: 1_000,
    })));
    stampBatch(bytes, 0, offset, 1_000);
    const socket = this.socket;
    socket.push({
      op: "deliveries",
      sub: socket.sub,
      topic: "jobs",
      partition,
      bytes,
      redelivered: Object.entries(attempts).flatMap((
        [at, attempt],
      ) => [Number(at), attempt]),
    });
  }
}

/** Settlements named by a settle frame, ack ranges counted per record. */
function count(frame: Frame): number {
  let total = 0;
  for (const [, , records] of frame.acks ?? []) total += records;
  return total + (frame.nacks?.length ?? 0) + (frame.rejects?.length ?? 0) +
    (frame.extends?.length ?? 0);
}
