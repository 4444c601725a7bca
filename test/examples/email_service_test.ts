import { suite } from "uvu";
import * as assert from "uvu/assert";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { silentLogger } from "../../src/logger.ts";
import { type RunningBroker, startBroker } from "../../src/server.ts";

// The example runs as a child process, as a user starts it, against an
// in-process broker on a fresh data directory.
const test = suite("email_service");

/** How long the example may live at most: a stuck one cannot hang the suite. */
const LIFETIME_LIMIT_MS = 20_000;

interface Example {
  /** Resolves with the first output line matching `pattern`. */
  line(pattern: RegExp): Promise<string>;
  stop(): Promise<void>;
}

function startExample(url: string): Example {
  // On Node this file runs from build/test/examples/, so the root is build/.
  const root = fileURLToPath(new URL("../..", import.meta.url));
  const deno = (globalThis as { Deno?: { execPath(): string } }).Deno;
  const [command, args] = deno
    ? [deno.execPath(), ["run", "-A", join(root, "examples/email_service.ts")]]
    : [process.execPath, [join(root, "examples/email_service.js")]];
  const child: ChildProcess = spawn(command, args, {
    env: { ...process.env, DAKGHAR_URL: url, NO_COLOR: "1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`Cannot start ${command}`);

  const lines: string[] = [];
  let partial = "";
  let listeners: (() => void)[] = [];
  const onData = (chunk: unknown) => {
    partial += String(chunk);
    const parts = partial.split("\n");
    partial = parts.pop()!;
    lines.push(...parts);
    for (const listener of listeners) listener();
  };
  child.stdout!.on("data", onData);
  child.stderr!.on("data", onData);

  let hasExited = false;
  const exited = new Promise<void>((resolve) => {
    child.on("exit", () => {
      hasExited = true;
      clearTimeout(guard);
      for (const listener of listeners) listener();
      resolve();
    });
  });
  const killNow = () => {
    // Only while it runs: after exit the PID may belong to someone else.
    if (!hasExited) process.kill(pid, "SIGKILL");
  };
  const guard = setTimeout(killNow, LIFETIME_LIMIT_MS);

  let seen = 0;
  return {
    line(pattern) {
      return new Promise((resolve, reject) => {
        const check = () => {
          for (; seen < lines.length; seen++) {
            if (!pattern.test(lines[seen])) continue;
            listeners = listeners.filter((l) => l !== check);
            resolve(lines[seen++]);
            return;
          }
          if (hasExited) {
            listeners = listeners.filter((l) => l !== check);
            reject(new Error(`Example exited:\n${lines.join("\n")}`));
          }
        };
        listeners.push(check);
        check();
      });
    },
    stop() {
      killNow();
      return exited;
    },
  };
}

async function withBroker(
  options: { maxPartitions?: number },
  run: (running: RunningBroker) => Promise<void>,
): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), "dakghar-email-"));
  const running = await startBroker({
    dataDir,
    port: 0,
    logger: silentLogger,
    ...options,
  });
  try {
    await run(running);
  } finally {
    await running.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

test("email_service creates orders on a fresh broker and joins", async () => {
  await withBroker({}, async (running) => {
    const example = startExample(running.url);
    try {
      const first = await example.line(/^(assigned|broker error)/);
      assert.is(
        first,
        "assigned generation 1: partition 0 from offset 0, " +
          "partition 1 from offset 0, partition 2 from offset 0",
      );
      const described = await running.broker.describeTopic("orders");
      assert.is(described.partitions.length, 3);
    } finally {
      await example.stop();
    }
  });
});

test("email_service reconnects after its subscribe fails", async () => {
  // Too few partitions allowed for the example to create its topic.
  await withBroker({ maxPartitions: 2 }, async (running) => {
    const example = startExample(running.url);
    try {
      await example.line(/^cannot create topic orders/);
      await example.line(/^broker error unknown_topic/);
      await example.line(/^disconnected; reconnecting/);
      await running.broker.createTopic("orders", { partitions: 2 });
      const assigned = await example.line(/^assigned/);
      assert.match(assigned, /^assigned generation 1: partition 0/);
    } finally {
      await example.stop();
    }
  });
});

test.run();
