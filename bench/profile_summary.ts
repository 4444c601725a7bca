/**
 * Summarizes V8 CPU profiles written by `npm run bench -- --profile <dir>`:
 * self time by function and by source file, one block per profile (the
 * broker's main thread and each partition worker write their own).
 *
 *   node build/bench/profile_summary.js <dir or .cpuprofile>... [--top 25]
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import { formatTable } from "./stats.ts";

/** The parts of a `.cpuprofile` this summary reads. */
interface CpuProfile {
  nodes: {
    id: number;
    callFrame: {
      functionName: string;
      url: string;
      lineNumber: number;
    };
  }[];
  samples: number[];
  timeDeltas: number[];
}

/** Self time in ms, by key. */
type SelfTimes = Map<string, number>;

function add(times: SelfTimes, key: string, ms: number): void {
  times.set(key, (times.get(key) ?? 0) + ms);
}

/** Shortens a script URL to what tells files apart: package or path in the repo. */
function shortUrl(url: string): string {
  if (url === "") return "(native)";
  const modules = url.lastIndexOf("node_modules/");
  if (modules >= 0) return url.slice(modules + "node_modules/".length);
  const build = url.lastIndexOf("/build/");
  if (build >= 0) return url.slice(build + "/build/".length);
  return url;
}

/**
 * Self time per function and per file of one profile.
 *
 * @returns both tables and the profile's total sampled ms
 */
export function summarize(
  profile: CpuProfile,
): { byFunction: SelfTimes; byFile: SelfTimes; totalMs: number } {
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const byFunction: SelfTimes = new Map();
  const byFile: SelfTimes = new Map();
  let totalMs = 0;
  profile.samples.forEach((id, index) => {
    const ms = (profile.timeDeltas[index] ?? 0) / 1000;
    const frame = nodes.get(id)?.callFrame;
    if (!frame) return;
    totalMs += ms;
    const file = shortUrl(frame.url);
    const name = frame.functionName || "(anonymous)";
    add(
      byFunction,
      frame.url === "" ? name : `${name} ${file}:${frame.lineNumber + 1}`,
      ms,
    );
    add(byFile, frame.url === "" ? name : file, ms);
  });
  return { byFunction, byFile, totalMs };
}

function topRows(times: SelfTimes, totalMs: number, top: number): string[][] {
  return [...times]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([key, ms]) => [
      key,
      "",
      ms.toFixed(0),
      `${(100 * ms / totalMs).toFixed(1)}%`,
    ]);
}

function profilePaths(paths: string[]): string[] {
  return paths.flatMap((path) =>
    statSync(path).isDirectory()
      ? readdirSync(path)
        .filter((name) => name.endsWith(".cpuprofile"))
        .sort()
        .map((name) => join(path, name))
      : [path]
  );
}

function main(): void {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { top: { type: "string", default: "25" } },
  });
  const top = Number(values.top);
  for (const path of profilePaths(positionals)) {
    const profile = JSON.parse(readFileSync(path, "utf8")) as CpuProfile;
    const { byFunction, byFile, totalMs } = summarize(profile);
    process.stdout.write(
      [
        `\n${basename(path)}: ${(totalMs / 1000).toFixed(2)} s sampled`,
        "",
        formatTable([
          ["file", "", "self ms", "share"],
          ...topRows(byFile, totalMs, top),
        ]),
        "",
        formatTable([
          ["function", "", "self ms", "share"],
          ...topRows(byFunction, totalMs, top),
        ]),
        "",
      ].join("\n"),
    );
  }
}

main();
