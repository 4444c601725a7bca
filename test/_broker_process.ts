/**
 * Runs `dakghar serve` as a child process, the way an operator does: the
 * compiled CLI on Node (build/src/main.js), the sources on Deno
 * (src/main.ts). Crash tests kill it with SIGKILL and start it again on the
 * same data directory.
 */
import { type ChildProcess, spawn } from "node:child_process";
import process from "node:process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** A broker running in a child process. */
export interface BrokerProcess {
  /** `http://127.0.0.1:<port>`, from the broker's `listening` line. */
  readonly url: string;
  readonly pid: number;
  /** Everything the broker wrote to stderr so far (its log). */
  output(): string;
  /** Sends SIGKILL to this process by its PID; resolves once it has exited. */
  kill(): Promise<void>;
  /** Sends SIGKILL without waiting; does nothing once the process exited. */
  killNow(): void;
  /** Resolves once the process has exited, however it ended. */
  readonly exited: Promise<void>;
}

/** How long a child may live at most: a hung broker cannot hang the suite. */
const LIFETIME_LIMIT_MS = 30_000;

/** A broker process just spawned, maybe not listening yet. */
export interface SpawnedBroker extends Omit<BrokerProcess, "url"> {
  /** Resolves with the URL once it listens; rejects if it exits first. */
  readonly listening: Promise<string>;
}

/**
 * Spawns `serve --port 0 --data-dir <dataDir>` without waiting for it.
 *
 * @param dataDir the broker's data directory
 * @returns the process handle
 */
export function spawnBrokerProcess(dataDir: string): SpawnedBroker {
  // On Node this file runs from build/test/, so the root is build/.
  const root = fileURLToPath(new URL("..", import.meta.url));
  const deno = (globalThis as { Deno?: { execPath(): string } }).Deno;
  const [command, args] = deno
    ? [deno.execPath(), ["run", "-A", join(root, "src/main.ts")]]
    : [process.execPath, [join(root, "src/main.js")]];
  const child: ChildProcess = spawn(command, [
    ...args,
    "serve",
    "--port",
    "0",
    "--data-dir",
    dataDir,
  ], {
    env: { ...process.env, NO_COLOR: "1" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`Cannot start ${command}`);

  let output = "";
  let hasExited = false;
  const exited = new Promise<void>((resolve) => {
    child.on("exit", () => {
      hasExited = true;
      clearTimeout(guard);
      resolve();
    });
  });
  const killNow = () => {
    // Only while it runs: after exit the PID may belong to someone else.
    if (!hasExited) process.kill(pid, "SIGKILL");
  };
  const guard = setTimeout(killNow, LIFETIME_LIMIT_MS);
  const listening = new Promise<string>((resolve, reject) => {
    child.stderr!.on("data", (chunk) => {
      output += String(chunk);
      const match = /listening url=(\S+)/.exec(output);
      if (match) resolve(match[1]);
    });
    exited.then(() =>
      reject(new Error(`Broker exited before listening:\n${output}`))
    );
  });
  // Callers that kill it early never look at the outcome.
  listening.catch(() => {});
  return {
    pid,
    output: () => output,
    killNow,
    kill() {
      killNow();
      return exited;
    },
    exited,
    listening,
  };
}

/**
 * Starts `serve --port 0 --data-dir <dataDir>` and waits for its
 * `listening` line.
 *
 * @param dataDir the broker's data directory
 * @returns the running process
 * @throws {Error} when the process exits before it listens (with its output)
 */
export async function startBrokerProcess(
  dataDir: string,
): Promise<BrokerProcess> {
  const spawned = spawnBrokerProcess(dataDir);
  try {
    return { ...spawned, url: await spawned.listening };
  } catch (error) {
    await spawned.kill();
    throw error;
  }
}
