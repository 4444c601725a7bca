import { suite } from "uvu";
import * as assert from "uvu/assert";
import { decode, encode, type RouterMessage } from "../src/envelope.ts";

const test = suite("envelope");

test("encode() packs a small append whole and decode() restores it", () => {
  const batches = new Uint8Array([1, 2, 3]);
  const { data, transfer } = encode({ type: "append", id: 1, batches });
  assert.instance(data, Uint8Array);
  assert.is(transfer.length, 1);
  const message = decode<RouterMessage>(data);
  assert.equal(message, { type: "append", id: 1, batches });
});

test("encode() posts a large batch that owns its buffer beside the map, uncopied", () => {
  const batches = new Uint8Array(64 * 1024).fill(7);
  const { data, transfer } = encode({ type: "append", id: 2, batches });
  assert.ok(Array.isArray(data));
  const [, payload] = data as [Uint8Array, Uint8Array];
  assert.is(payload, batches);
  assert.ok(transfer.includes(batches.buffer as ArrayBuffer));
  const message = decode<RouterMessage>(data);
  assert.is(message.type, "append");
  assert.is((message as { batches: Uint8Array }).batches, batches);
});

test("encode() copies a large batch that is a view into a larger buffer", () => {
  const backing = new Uint8Array(128 * 1024).fill(9);
  const batches = backing.subarray(1024, 1024 + 64 * 1024);
  const { data, transfer } = encode({ type: "append", id: 3, batches });
  const [, payload] = data as [Uint8Array, Uint8Array];
  assert.is.not(payload.buffer, backing.buffer);
  assert.not.ok(transfer.includes(backing.buffer as ArrayBuffer));
  assert.equal(payload, batches);
});

test("decode() rejects what is not an envelope", () => {
  assert.throws(() => decode("x"), /not a Uint8Array/);
  assert.throws(
    () => decode([encode({ type: "stats", id: 1 }).data, new Uint8Array(1)]),
    /stats has no payload/,
  );
  assert.throws(() => decode([new Uint8Array(1), "x"]), /payload/);
});

test.run();
