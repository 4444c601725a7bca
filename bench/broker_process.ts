/**
 * The broker under measurement, run as a child process so its CPU time and
 * event loop are apart from the load generator's. It gets a fresh data
 * directory under the system temporary directory, removed when it stops.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** A running broker child process. */
export interface BrokerProcess {
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  readonly pid: number;
  readonly dataDir: string;
  /** The last lines the broker logged, for error reports. */
  recentLog(): string[];
  /** Stops the child with SIGTERM (SIGKILL after `graceMs`) and removes its data. */
  stop(graceMs?: number): Promise<void>;
}

/** Options for {@linkcode startBrokerProcess}. */
export interface BrokerProcessOptions {
  /** Write a V8 CPU profile of the broker (main thread and workers) here. */
  profileDir?: string;
  /** Give up when the broker has not said where it listens by then. */
  startTimeoutMs?: number;
}

const logLinesKept = 50;

/**
 * Starts `build/src/main.js serve --port 0` on a fresh data directory and
 * waits until it logs the URL it listens on.
 *
 * @param options profiling and start timeout
 * @returns the running child
 * @throws {Error} when the child exits or stays silent before listening
 */
export async function startBrokerProcess(
  options: BrokerProcessOptions = {},
): Promise<BrokerProcess> {
  const root = mkdtempSync(join(tmpdir(), "dakghar-bench-"));
  const dataDir = join(root, "data");
  const main = fileURLToPath(new URL("../src/main.js", import.meta.url));
  const nodeFlags = options.profileDir === undefined
    ? []
    : ["--cpu-prof", `--cpu-prof-dir=${options.profileDir}`];
  const child = spawn(
    process.execPath,
    [...nodeFlags, main, "serve", "--port", "0", "--data-dir", dataDir],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env } },
  );
  const pid = child.pid;
  if (pid === undefined) {
    rmSync(root, { recursive: true, force: true });
    throw new Error("Cannot start broker: no process id");
  }
  // If the bench itself dies, the child must not outlive it.
  const killOnExit = () => killChild(child, "SIGKILL");
  process.once("exit", killOnExit);

  const lines: string[] = [];
  let url: string;
  try {
    url = await waitForUrl(child, lines, options.startTimeoutMs ?? 15_000);
  } catch (error) {
    killChild(child, "SIGKILL");
    process.off("exit", killOnExit);
    rmSync(root, { recursive: true, force: true });
    throw error;
  }

  let stopping: Promise<void> | undefined;
  return {
    url,
    pid,
    dataDir,
    recentLog: () => [...lines],
    stop(graceMs = 10_000) {
      stopping ??= (async () => {
        await terminate(child, graceMs);
        process.off("exit", killOnExit);
        rmSync(root, { recursive: true, force: true });
      })();
      return stopping;
    },
  };
}

/** Reads the child's log until the `listening` line; keeps echoing warnings after it. */
function waitForUrl(
  child: ChildProcess,
  lines: string[],
  timeoutMs: number,
): Promise<string> {
  return new Promise((resolve, reject) => {
    let pending = "";
    let found = false;
    const timer = setTimeout(() => {
      reject(
        new Error(
          `Cannot start broker: no "listening" line within ${timeoutMs} ms\n${
            lines.join("\n")
          }`,
        ),
      );
    }, timeoutMs);
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (chunk: string) => {
      pending += chunk;
      const complete = pending.split("\n");
      pending = complete.pop() ?? "";
      for (const line of complete) {
        lines.push(line);
        if (lines.length > logLinesKept) lines.shift();
        // The broker's own warnings and errors are part of the result.
        if (/ (WARN|ERROR) /.test(line)) {
          process.stderr.write(`broker: ${line}\n`);
        }
        const match = / listening url=(\S+)/.exec(line);
        if (match && !found) {
          found = true;
          clearTimeout(timer);
          resolve(match[1]);
        }
      }
    });
    child.once("exit", (code, signal) => {
      if (found) return;
      clearTimeout(timer);
      reject(
        new Error(
          `Cannot start broker: exited with ${code ?? signal}\n${
            lines.join("\n")
          }`,
        ),
      );
    });
  });
}

function killChild(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.exitCode === null && child.signalCode === null) {
    child.kill(signal);
  }
}

/** Sends SIGTERM, waits up to `graceMs`, then SIGKILL. */
async function terminate(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) =>
    child.once("exit", () => resolve())
  );
  killChild(child, "SIGTERM");
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) => {
    timer = setTimeout(() => resolve("late"), graceMs);
  });
  const outcome = await Promise.race([exited, late]);
  clearTimeout(timer);
  if (outcome === "late") {
    process.stderr.write(
      `broker ${child.pid} did not stop within ${graceMs} ms; killing it\n`,
    );
    killChild(child, "SIGKILL");
    await exited;
  }
}
