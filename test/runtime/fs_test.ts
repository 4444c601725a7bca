import { suite } from "uvu";
import * as assert from "uvu/assert";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import type { FileSystem } from "../../src/runtime/types.ts";

// One contract, run against the file system of whichever runtime runs it.
const runtimeName = "Deno" in globalThis ? "deno" : "node";
const fs: FileSystem = runtimeName === "deno"
  ? (await import("../../src/runtime/deno_fs.ts")).denoFileSystem
  : (await import("../../src/runtime/node_fs.ts")).nodeFileSystem;

const test = suite(`fs (${runtimeName})`);
const bytes = (...values: number[]) => new Uint8Array(values);
let dir = "";

test.before.each(() => {
  dir = mkdtempSync(`${tmpdir()}/dakghar-fs-`).replaceAll("\\", "/");
});
test.after.each(() => {
  rmSync(dir, { recursive: true, force: true });
});

test("open() readWrite creates a file and write()/read() work at positions", () => {
  const file = fs.open(`${dir}/a.log`, "readWrite");
  assert.is(file.path, `${dir}/a.log`);
  assert.is(file.size(), 0);
  file.write(bytes(1, 2, 3, 4), 0);
  file.write(bytes(9, 9), 6);
  assert.is(file.size(), 8);
  const into = new Uint8Array(10);
  assert.is(file.read(into, 0), 8);
  assert.equal([...into], [1, 2, 3, 4, 0, 0, 9, 9, 0, 0]);
  assert.is(file.read(new Uint8Array(4), 8), 0);
  const middle = new Uint8Array(2);
  assert.is(file.read(middle, 2), 2);
  assert.equal([...middle], [3, 4]);
  file.close();
});

test("open() readWrite never truncates an existing file", () => {
  const first = fs.open(`${dir}/a.log`, "readWrite");
  first.write(bytes(1, 2, 3), 0);
  first.close();
  const second = fs.open(`${dir}/a.log`, "readWrite");
  assert.is(second.size(), 3);
  second.write(bytes(7), 3);
  second.close();
  assert.equal([...fs.readFile(`${dir}/a.log`)], [1, 2, 3, 7]);
});

test("open() read fails on a missing file and cannot write", () => {
  assert.throws(() => fs.open(`${dir}/missing`, "read"));
  fs.writeFileAtomic(`${dir}/r`, bytes(5));
  const file = fs.open(`${dir}/r`, "read");
  assert.throws(() => file.write(bytes(1), 0));
  file.close();
});

test("sync() and syncNow() resolve; truncate() cuts the file", async () => {
  const file = fs.open(`${dir}/a.log`, "readWrite");
  file.write(new Uint8Array(100).fill(1), 0);
  await file.sync();
  file.syncNow();
  file.truncate(40);
  assert.is(file.size(), 40);
  file.close();
  file.close();
  assert.is(fs.sizeOf(`${dir}/a.log`), 40);
});

test("write() of a large buffer writes every byte", () => {
  const big = new Uint8Array(3 << 20).map((_, i) => i & 0xff);
  const file = fs.open(`${dir}/big`, "readWrite");
  file.write(big, 5);
  const back = new Uint8Array(big.length);
  assert.is(file.read(back, 5), big.length);
  assert.ok(back.every((b, i) => b === big[i]));
  file.close();
});

test("exists(), sizeOf(), mkdirs(), list() and remove()", () => {
  assert.not.ok(fs.exists(`${dir}/x`));
  assert.is(fs.sizeOf(`${dir}/x`), -1);
  fs.mkdirs(`${dir}/x/y/z`);
  fs.mkdirs(`${dir}/x/y/z`);
  assert.ok(fs.exists(`${dir}/x/y`));
  fs.writeFileAtomic(`${dir}/x/f`, bytes(1, 2));
  assert.is(fs.sizeOf(`${dir}/x/f`), 2);
  const entries = fs.list(`${dir}/x`).sort((a, b) =>
    a.name.localeCompare(b.name)
  );
  assert.equal(entries, [
    { name: "f", isFile: true, isDirectory: false },
    { name: "y", isFile: false, isDirectory: true },
  ]);
  fs.remove(`${dir}/x`);
  fs.remove(`${dir}/x`);
  assert.not.ok(fs.exists(`${dir}/x`));
});

test("rename() moves a file over another", () => {
  fs.writeFileAtomic(`${dir}/a`, bytes(1));
  fs.writeFileAtomic(`${dir}/b`, bytes(2));
  fs.rename(`${dir}/a`, `${dir}/b`);
  assert.not.ok(fs.exists(`${dir}/a`));
  assert.equal([...fs.readFile(`${dir}/b`)], [1]);
});

test("writeFileAtomic() replaces content and leaves no temporary file", async () => {
  fs.writeFileAtomic(`${dir}/t.json`, bytes(1, 2, 3));
  fs.writeFileAtomic(`${dir}/t.json`, bytes(4));
  assert.equal([...fs.readFile(`${dir}/t.json`)], [4]);
  await fs.writeFileAtomicAsync(`${dir}/t.json`, bytes(5, 6));
  assert.equal([...fs.readFile(`${dir}/t.json`)], [5, 6]);
  assert.equal(fs.list(dir).map((e) => e.name), ["t.json"]);
  fs.syncDirectory(dir);
});

test("writeFileAtomic() into a missing directory throws and leaves nothing", async () => {
  assert.throws(() => fs.writeFileAtomic(`${dir}/none/t.json`, bytes(1)));
  try {
    await fs.writeFileAtomicAsync(`${dir}/none/t.json`, bytes(1));
    assert.unreachable();
  } catch (error) {
    assert.instance(error, Error);
  }
  assert.equal(fs.list(dir), []);
});

test("createExclusive() creates a file once and never overwrites it", () => {
  assert.ok(fs.createExclusive(`${dir}/lock`, bytes(1, 2)));
  assert.not.ok(fs.createExclusive(`${dir}/lock`, bytes(3)));
  assert.equal([...fs.readFile(`${dir}/lock`)], [1, 2]);
  assert.throws(() => fs.createExclusive(`${dir}/none/lock`, bytes(1)));
});

test.run();
