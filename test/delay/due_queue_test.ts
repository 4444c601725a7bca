import { suite } from "uvu";
import * as assert from "uvu/assert";
import { DueQueue } from "../../src/delay/due_queue.ts";
import { pickSeed, seededRandom } from "../log/_random.ts";

const test = suite("due_queue");

test("takeDue() returns due records by due time, then schedule order", () => {
  const queue = new DueQueue();
  queue.add("a", 30, 0, 10);
  queue.add("b", 10, 10, 10);
  queue.add("c", 30, 20, 10);
  queue.add("d", 20, 30, 10);
  queue.add("e", 99, 40, 10);
  assert.is(queue.size, 5);
  assert.is(queue.nextDue(), 10);
  assert.equal(queue.takeDue(5, 10, 1000).slots, []);
  const { slots, bytes } = queue.takeDue(30, 10, 1000);
  assert.equal(slots.map((s) => queue.entryOf(s).position), [10, 30, 0, 20]);
  assert.is(bytes, 40);
  assert.is(queue.size, 5, "firing records still count");
  assert.is(queue.nextDue(), 99);
});

test("takeDue() stops at maxRecords and maxBytes but takes one at least", () => {
  const queue = new DueQueue();
  for (let i = 0; i < 5; i++) queue.add(`r${i}`, i, i * 100, 100);
  assert.is(queue.takeDue(10, 2, 1e9).slots.length, 2);
  assert.is(queue.takeDue(10, 10, 150).slots.length, 1);
  assert.is(queue.takeDue(10, 10, 10).slots.length, 1, "larger than maxBytes");
  assert.is(queue.takeDue(10, 10, 1e9).slots.length, 1);
});

test("remove() cancels pending records and frees firing ones", () => {
  const queue = new DueQueue();
  queue.add("a", 1, 0, 10);
  queue.add("b", 2, 10, 10);
  assert.ok(queue.isPending("a"));
  assert.ok(queue.remove("a"));
  assert.not.ok(queue.remove("a"));
  assert.not.ok(queue.isPending("a"));
  assert.is(queue.nextDue(), 2);
  const [slot] = queue.takeDue(5, 10, 100).slots;
  assert.not.ok(queue.isPending("b"), "firing is not cancellable");
  assert.is(queue.liveBytes, 10);
  queue.restore(slot);
  assert.ok(queue.isPending("b"));
  const [again] = queue.takeDue(5, 10, 100).slots;
  assert.is(again, slot);
  assert.ok(queue.remove("b"));
  assert.is(queue.size, 0);
  assert.is(queue.liveBytes, 0);
  assert.is(queue.nextDue(), Infinity);
  assert.throws(() => {
    queue.add("c", 1, 0, 1);
    queue.add("c", 1, 0, 1);
  }, RangeError);
});

test("takeDue() keeps order under random adds, removes and restores", () => {
  const seed = pickSeed();
  console.log(`  due_queue seed ${seed}`);
  const random = seededRandom(seed);
  const queue = new DueQueue();
  const model = new Map<string, { due: number; order: number }>();
  let order = 0;
  let now = 0;
  for (let step = 0; step < 5000; step++) {
    const choice = random();
    if (choice < 0.6) {
      const id = `id${step}`;
      const due = now + Math.floor(random() * 100);
      queue.add(id, due, step, 1);
      model.set(id, { due, order: order++ });
    } else if (choice < 0.75 && model.size > 0) {
      const ids = [...model.keys()];
      const id = ids[Math.floor(random() * ids.length)];
      assert.ok(queue.remove(id));
      model.delete(id);
    } else {
      now += Math.floor(random() * 20);
      const { slots } = queue.takeDue(now, 1 + Math.floor(random() * 8), 1e9);
      const expected = [...model.entries()]
        .filter(([, r]) => r.due <= now)
        .sort(([, a], [, b]) => a.due - b.due || a.order - b.order)
        .slice(0, slots.length);
      assert.equal(
        slots.map((s) => queue.entryOf(s).position),
        expected.map(([id]) => Number(id.slice(2))),
        `seed ${seed} step ${step}`,
      );
      for (const [id] of expected) {
        if (random() < 0.2) {
          queue.restore(queue.slotOf(id));
        } else {
          queue.remove(id);
          model.delete(id);
        }
      }
    }
    assert.is(queue.size, model.size);
  }
});

test.run();
