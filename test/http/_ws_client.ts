/**
 * A small WebSocket test client: the global WebSocket on Deno, the `ws`
 * package on Node (which has none before version 22). Frames come back
 * decoded, JSON or msgpack, in arrival order.
 */
import { Packr } from "msgpackr";

/** A decoded frame, with how it arrived. */
export type Frame = Record<string, unknown> & { binary: boolean };

const packr = new Packr({ useRecords: false });

/** A connected test socket. */
export interface TestSocket {
  /** Sends a frame as JSON text, or as msgpack when `binary`. */
  send(frame: Record<string, unknown>, binary?: boolean): void;
  /** Sends raw text or bytes. */
  sendRaw(data: string | Uint8Array): void;
  /** The next frame; rejects if the socket closes first. */
  next(): Promise<Frame>;
  /** Skips frames until one with `op`; returns it and the skipped ones. */
  nextOp(op: string): Promise<{ frame: Frame; skipped: Frame[] }>;
  /** Resolves with the close code once the socket is closed. */
  readonly closed: Promise<number>;
  close(): Promise<number>;
}

/**
 * Connects to `url`.
 *
 * @param url a ws:// URL
 * @returns the socket, once open
 */
export async function connect(url: string): Promise<TestSocket> {
  const WebSocketClass: typeof WebSocket = "Deno" in globalThis
    ? WebSocket
    : (await import("ws")).WebSocket as unknown as typeof WebSocket;
  const socket = new WebSocketClass(url);
  socket.binaryType = "arraybuffer";

  const frames: Frame[] = [];
  const waiters: {
    resolve: (frame: Frame) => void;
    reject: (error: Error) => void;
  }[] = [];
  let closeCode: number | undefined;
  const closed = new Promise<number>((resolve) => {
    socket.onclose = (event) => {
      closeCode = event.code;
      for (const waiter of waiters.splice(0)) {
        waiter.reject(new Error(`Socket closed: ${event.code}`));
      }
      resolve(event.code);
    };
  });
  socket.onmessage = (event) => {
    const frame = typeof event.data === "string"
      ? { ...JSON.parse(event.data), binary: false }
      : { ...packr.unpack(new Uint8Array(event.data)), binary: true };
    const waiter = waiters.shift();
    if (waiter) waiter.resolve(frame);
    else frames.push(frame);
  };
  await new Promise<void>((resolve, reject) => {
    socket.onopen = () => resolve();
    socket.onerror = () => reject(new Error(`Cannot connect: ${url}`));
  });

  const next = () => {
    const frame = frames.shift();
    if (frame) return Promise.resolve(frame);
    if (closeCode !== undefined) {
      return Promise.reject(new Error(`Socket closed: ${closeCode}`));
    }
    return new Promise<Frame>((resolve, reject) =>
      waiters.push({ resolve, reject })
    );
  };
  return {
    send(frame, binary = false) {
      socket.send(
        binary
          ? packr.pack(frame) as Uint8Array<ArrayBuffer>
          : JSON.stringify(frame),
      );
    },
    sendRaw(data) {
      socket.send(data as string | Uint8Array<ArrayBuffer>);
    },
    next,
    async nextOp(op) {
      const skipped: Frame[] = [];
      for (;;) {
        const frame = await next();
        if (frame.op === op) return { frame, skipped };
        skipped.push(frame);
      }
    },
    closed,
    close() {
      socket.close();
      return closed;
    },
  };
}
