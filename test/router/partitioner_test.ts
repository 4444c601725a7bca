import { suite } from "uvu";
import * as assert from "uvu/assert";
import {
  murmur2,
  Partitioner,
  partitionForKey,
} from "../../src/router/partitioner.ts";

const test = suite("partitioner");
const bytes = (text: string) => new TextEncoder().encode(text);

test("murmur2() matches Kafka's test vectors", () => {
  // From Kafka's UtilsTest.testMurmur2.
  assert.is(murmur2(bytes("21")), -973932308);
  assert.is(murmur2(bytes("foobar")), -790332482);
  assert.is(murmur2(bytes("a-little-bit-long-string")), -985981536);
  assert.is(murmur2(bytes("a-little-bit-longer-string")), -1486304829);
  assert.is(
    murmur2(bytes("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8")),
    -58897971,
  );
  assert.is(murmur2(bytes("abc")), 479470107);
});

test("partitionForKey() is stable and within range", () => {
  for (let i = 0; i < 200; i++) {
    const key = bytes(`customer-${i}`);
    const partition = partitionForKey(key, 7);
    assert.ok(partition >= 0 && partition < 7);
    assert.is(partitionForKey(bytes(`customer-${i}`), 7), partition);
    assert.is(new Partitioner(7).choose(key), partition);
  }
});

test("partitionForKey() spreads keys over every partition", () => {
  const seen = new Set<number>();
  for (let i = 0; i < 100; i++) seen.add(partitionForKey(bytes(`k${i}`), 4));
  assert.equal([...seen].sort(), [0, 1, 2, 3]);
});

test("choose() without a key goes round robin", () => {
  const partitioner = new Partitioner(3);
  const chosen = [null, undefined, null, null].map((key) =>
    partitioner.choose(key)
  );
  assert.equal(chosen, [0, 1, 2, 0]);
});

test("Partitioner() rejects a partition count below 1", () => {
  assert.throws(() => new Partitioner(0), /partition count 0/);
});

test.run();
