import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import process from "node:process";
import { startRouter } from "../../actors/router_actor.ts";
import { DakgharError } from "../../src/errors.ts";
import { createLogger, silentLogger } from "../../src/logger.ts";
import { lockDataDir } from "../../src/router/data_dir_lock.ts";
import { runtime } from "../../src/runtime/mod.ts";

const test = suite("data_dir_lock");
let dir = "";

test.before.each(() => {
  dir = mkdtempSync(`${tmpdir()}/dakghar-lock-`);
});
test.after.each(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** The id of a process that has exited. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ["--version"]);
  return child.pid as number;
}

test("lockDataDir() refuses a directory held by a live process", () => {
  writeFileSync(`${dir}/.lock`, `${process.ppid}\n`);
  try {
    lockDataDir(runtime.fs, dir, silentLogger);
    assert.unreachable("locked twice");
  } catch (error) {
    assert.instance(error, DakgharError);
    assert.is((error as DakgharError).code, "storage_error");
    assert.match((error as Error).message, /in use by process/);
  }
});

test("lockDataDir() takes over a lock left by a dead process and release() removes it", () => {
  writeFileSync(`${dir}/.lock`, `${deadPid()}\n`);
  const warnings: string[] = [];
  const log = createLogger((level, _scope, message) => {
    if (level === "warn") warnings.push(message);
  }, "warn");
  const lock = lockDataDir(runtime.fs, dir, log);
  assert.equal(warnings, ["stale data directory lock removed"]);
  lock.release();
  assert.not.ok(existsSync(`${dir}/.lock`));
});

test("startRouter() on a directory another router holds fails and leaves it alone", async () => {
  const first = await startRouter({ dataDir: dir, runtime });
  try {
    await first.createTopic("orders", { partitions: 1 });
    try {
      await startRouter({ dataDir: dir, runtime });
      assert.unreachable("second router started");
    } catch (error) {
      assert.is((error as DakgharError).code, "storage_error");
    }
    assert.ok(existsSync(`${dir}/.lock`));
    assert.ok(existsSync(`${dir}/topics/orders/0`));
    assert.not.ok(existsSync(`${dir}/topics/orders/0/clean-shutdown`));
  } finally {
    await first.close();
  }
  assert.not.ok(existsSync(`${dir}/.lock`));
  const again = await startRouter({ dataDir: dir, runtime });
  await again.close();
});

test("lockDataDir() takes over a lock naming this process that it does not hold", () => {
  writeFileSync(`${dir}/.lock`, `${process.pid}\n`);
  lockDataDir(runtime.fs, dir, silentLogger).release();
});

test.run();
