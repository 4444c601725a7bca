#!/usr/bin/env node
// `npm test`: builds with tsc, runs every suite on Node (compiled) and on Deno
// (from source), runs `deno lint` and `deno fmt --check`, and ends with one
// line `N passed, N failed`. Plain JavaScript because it must run before the
// build exists. Arguments are passed to both runners as suite filters.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bin = (name) => join(root, "node_modules", ".bin", name);
const filters = process.argv.slice(2);

/** Runs a command, echoing its output, and resolves with exit code and text. */
function run(command, args) {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0" },
    });
    let text = "";
    child.stdout.on("data", (chunk) => {
      text += chunk;
      process.stdout.write(chunk);
    });
    child.stderr.on("data", (chunk) => {
      text += chunk;
      process.stderr.write(chunk);
    });
    child.on(
      "close",
      (code, signal) => resolve({ code: code ?? (signal ? 1 : 0), text }),
    );
    child.on("error", (error) => resolve({ code: 1, text: String(error) }));
  });
}

// uvu prints "Total: N", "Passed: N" and "Skipped: N" when every suite ran.
function uvuCounts({ code, text }) {
  // deno-lint-ignore no-control-regex
  const plain = text.replace(/\x1b\[[0-9;]*m/g, "");
  const number = (label) => {
    const match = plain.match(new RegExp(`^\\s*${label}:\\s+(\\d+)`, "m"));
    return match ? Number(match[1]) : undefined;
  };
  const total = number("Total");
  const passed = number("Passed");
  const skipped = number("Skipped") ?? 0;
  if (total === undefined || passed === undefined) {
    return { passed: 0, failed: 1, skipped: 0 }; // crashed before its summary
  }
  // uvu counts a skipped test in Skipped only, never in Total.
  const failed = total - passed;
  return { passed, failed: failed > 0 || code === 0 ? failed : 1, skipped };
}

const totals = { passed: 0, failed: 0, skipped: 0 };
const add = (label, counts) => {
  totals.passed += counts.passed;
  totals.failed += counts.failed;
  totals.skipped += counts.skipped;
  console.log(
    `${label}: ${counts.passed} passed, ${counts.failed} failed` +
      (counts.skipped ? `, ${counts.skipped} skipped` : ""),
  );
};

if (!existsSync(bin("tsc")) || !existsSync(bin("deno"))) {
  console.log("node_modules is missing tsc or deno: run `npm install` first");
  console.log("0 passed, 1 failed");
  process.exit(1);
}

console.log("# build (tsc)");
const build = await run(bin("tsc"), ["-p", "."]);
add(
  "build",
  build.code === 0 ? { passed: 1, failed: 0, skipped: 0 } : {
    passed: 0,
    failed: 1,
    skipped: 0,
  },
);

console.log("\n# node suites");
add(
  "node",
  uvuCounts(await run(process.execPath, ["build/test/run.js", ...filters])),
);

console.log("\n# deno suites");
add(
  "deno",
  uvuCounts(await run(bin("deno"), ["run", "-A", "test/run.ts", ...filters])),
);

if (filters.length === 0) {
  console.log("\n# deno lint, deno fmt --check");
  const lint = await run(bin("deno"), ["lint", "--quiet"]);
  const fmt = await run(bin("deno"), ["fmt", "--check", "--quiet"]);
  add("style", {
    passed: (lint.code === 0) + (fmt.code === 0),
    failed: (lint.code !== 0) + (fmt.code !== 0),
    skipped: 0,
  });
}

console.log(
  `\n${totals.passed} passed, ${totals.failed} failed` +
    (totals.skipped ? `, ${totals.skipped} skipped` : ""),
);
process.exit(totals.failed > 0 ? 1 : 0);
