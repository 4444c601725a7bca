/**
 * Standard output for commands that print data: writes that wait when the
 * pipe is full, and a signal when the reader has gone (EPIPE, as after
 * `| head -3`), so that a command can stop and exit 0.
 */
import process from "node:process";

/** Standard output as a command sees it. */
export interface Output {
  /** Writes text or bytes; resolves once the pipe accepts more. */
  write(data: string | Uint8Array): Promise<void>;
  /** Resolves when the reader has closed standard output. */
  readonly closed: Promise<void>;
  /** Whether the reader has closed standard output. */
  isClosed(): boolean;
}

let shared: Output | undefined;

/**
 * The process's standard output, wrapped once.
 *
 * @returns the output
 */
export function standardOutput(): Output {
  if (shared) return shared;
  const stdout = process.stdout;
  let isClosed = false;
  let markClosed = () => {};
  const closed = new Promise<void>((resolve) => {
    markClosed = () => {
      isClosed = true;
      resolve();
    };
  });
  stdout.on("error", (error: NodeJS.ErrnoException) => {
    // Any write failure means nobody reads on: stop as for EPIPE.
    if (error.code !== "EPIPE") process.stderr.write(`${error.message}\n`);
    markClosed();
  });
  shared = {
    closed,
    isClosed: () => isClosed,
    write(data) {
      if (isClosed) return Promise.resolve();
      return new Promise<void>((resolve) => {
        let flushed = false;
        try {
          flushed = stdout.write(data);
        } catch {
          markClosed();
          flushed = true;
        }
        if (flushed) resolve();
        else {
          const done = () => {
            stdout.off("drain", done);
            resolve();
          };
          stdout.on("drain", done);
          closed.then(done);
        }
      });
    },
  };
  return shared;
}
