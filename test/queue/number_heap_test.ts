import { suite } from "uvu";
import * as assert from "uvu/assert";
import { NumberHeap } from "../../src/queue/number_heap.ts";
import { pickSeed, seededRandom } from "../log/_random.ts";

const test = suite("number_heap");

test("pop returns entries in order of their fields, first field first", () => {
  const heap = new NumberHeap(2);
  heap.push(5, 1);
  heap.push(3, 9);
  heap.push(5, 0);
  heap.push(3, 2);
  const popped: number[][] = [];
  const entry = [0, 0];
  while (heap.pop(entry)) popped.push([...entry]);
  assert.equal(popped, [[3, 2], [3, 9], [5, 0], [5, 1]]);
  assert.is(heap.size, 0);
  assert.is(heap.peek(), undefined);
});

test("pop matches a sort on random entries", () => {
  const seed = pickSeed();
  console.log(`number_heap seed ${seed}`);
  const random = seededRandom(seed);
  const heap = new NumberHeap(3);
  const entries: number[][] = [];
  for (let i = 0; i < 2000; i++) {
    const entry = [
      Math.floor(random() * 50),
      Math.floor(random() * 50),
      i,
    ];
    entries.push(entry);
    heap.push(entry[0], entry[1], entry[2]);
    // Interleave pops so that sift-down runs on partial heaps too.
    if (random() < 0.3) {
      entries.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]);
      const expected = entries.shift()!;
      const got = [0, 0, 0];
      heap.pop(got);
      assert.equal(got, expected, `seed ${seed}`);
    }
  }
  entries.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]);
  for (const expected of entries) {
    const got = [0, 0, 0];
    assert.ok(heap.pop(got));
    assert.equal(got, expected, `seed ${seed}`);
  }
});

test.run();
