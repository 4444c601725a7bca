/**
 * Runs the `dakghar` CLI as a child process, the way a user does: the
 * compiled build/src/main.js on Node, src/main.ts on Deno.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { Buffer } from "node:buffer";
import process from "node:process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** What a finished CLI run left behind. */
export interface CliResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** How long a CLI run may take at most: a hung one cannot hang the suite. */
const LIFETIME_LIMIT_MS = 20_000;

/**
 * Spawns `dakghar <args>` against `url`.
 *
 * @param url the broker, passed as DAKGHAR_URL
 * @param args the command line
 * @returns the child, its stdin and stdout piped
 */
export function spawnCli(url: string, args: string[]): ChildProcess {
  // On Node this file runs from build/test/cli/, so the root is build/.
  const root = fileURLToPath(new URL("../..", import.meta.url));
  const deno = (globalThis as { Deno?: { execPath(): string } }).Deno;
  const [command, prefix] = deno
    ? [deno.execPath(), ["run", "-A", join(root, "src/main.ts")]]
    : [process.execPath, [join(root, "src/main.js")]];
  const child = spawn(command, [...prefix, ...args], {
    env: { ...process.env, DAKGHAR_URL: url, NO_COLOR: "1" },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let exited = false;
  const guard = setTimeout(() => {
    if (!exited) child.kill("SIGKILL");
  }, LIFETIME_LIMIT_MS);
  child.on("exit", () => {
    exited = true;
    clearTimeout(guard);
  });
  return child;
}

/**
 * Runs `dakghar <args>` to the end, with `input` on stdin.
 *
 * @param url the broker
 * @param args the command line
 * @param input what to write to stdin; stdin is closed either way
 * @returns the exit code and output
 */
export function runCli(
  url: string,
  args: string[],
  input?: string | Uint8Array,
): Promise<CliResult> {
  const child = spawnCli(url, args);
  const stdout: Buffer[] = [];
  let stderr = "";
  child.stdout!.on("data", (chunk: Buffer) => stdout.push(chunk));
  child.stderr!.on("data", (chunk: Buffer) => stderr += String(chunk));
  child.stdin!.end(input ?? "");
  return new Promise((resolve) => {
    child.on(
      "close",
      (code) => resolve({ code, stdout: Buffer.concat(stdout), stderr }),
    );
  });
}
