import { suite } from "uvu";
import * as assert from "uvu/assert";
import {
  DEAD_LETTER_HEADERS,
  type ProducerRecord,
  TAG_HEADER,
} from "../../src/broker.ts";
import { UnknownTopicError } from "../../src/errors.ts";
import { type BatchRecord, encodeBatch } from "../../src/log/record_batch.ts";
import { redrive, type RedriveContext } from "../../src/router/redrive.ts";

const test = suite("redrive");
const text = (value: string) => new TextEncoder().encode(value);
const untext = (bytes: Uint8Array | null) =>
  bytes === null ? null : new TextDecoder().decode(bytes);

function letter(
  value: string,
  source: string,
  tags: string[] = [],
): BatchRecord {
  return {
    key: text(`k-${value}`),
    value: text(value),
    headers: [
      ["type", text("order")],
      ...tags.map((tag): [string, Uint8Array] => [TAG_HEADER, text(tag)]),
      [DEAD_LETTER_HEADERS.topic, text(source)],
      [DEAD_LETTER_HEADERS.reason, text("rejected")],
    ],
    timestamp: 1000,
  };
}

/** A dead-letter topic of one partition holding `letters` from offset 0. */
function fakeContext(letters: BatchRecord[]) {
  const published: { topic: string; records: ProducerRecord[] }[] = [];
  const commits: { partition: number; offset: number }[][] = [];
  let committed: (number | null)[] = [];
  const context: RedriveContext = {
    group: "mailer",
    deadLetterTopic: "orders.mailer.dlq",
    logRanges: (topic) => {
      if (topic !== "orders.mailer.dlq") throw new UnknownTopicError(topic);
      return Promise.resolve([
        { logStartOffset: 0, logEndOffset: letters.length },
      ]);
    },
    committed: (group, topic) => {
      assert.is(group, "mailer.redrive");
      assert.is(topic, "orders.mailer.dlq");
      return Promise.resolve(committed);
    },
    read: (_topic, _partition, offset) => {
      // Two letters per read, as a small maxBytes would give.
      const batch = encodeBatch(letters.slice(offset, offset + 2));
      new DataView(batch.buffer).setUint32(0, offset, true);
      return Promise.resolve({
        bytes: batch,
        highWatermark: letters.length,
        logStartOffset: 0,
        logEndOffset: letters.length,
      });
    },
    publish: (topic, records) => {
      published.push({ topic, records });
      return Promise.resolve();
    },
    commit: (_group, _topic, positions) => {
      commits.push(positions);
      committed = positions.map((p) => p.offset);
      return Promise.resolve();
    },
  };
  return { context, published, commits };
}

test("redrive() republishes letters to their source without dlq headers and commits the cursor", async () => {
  const { context, published, commits } = fakeContext([
    letter("a", "orders"),
    letter("b", "orders"),
    letter("c", "returns"),
  ]);
  const result = await redrive(context);
  assert.equal(result, {
    deadLetterTopic: "orders.mailer.dlq",
    redriven: 3,
    skipped: 0,
  });
  assert.equal(
    published.map((p) => [p.topic, p.records.map((r) => untext(r.value))]),
    [["orders", ["a", "b"]], ["returns", ["c"]]],
  );
  const headers = published[0].records[0].headers!.map(([name]) => name);
  assert.equal(headers, ["type"]);
  assert.equal(untext(published[0].records[0].key!), "k-a");
  assert.equal(commits, [[{ partition: 0, offset: 3 }]]);

  // Past the cursor there is nothing left, unless from the start.
  assert.is((await redrive(context)).redriven, 0);
  assert.is((await redrive(context, { fromStart: true })).redriven, 3);
});

test("redrive() with a filter and toTopic skips letters that do not match", async () => {
  const { context, published } = fakeContext([
    letter("a", "orders", ["eu"]),
    letter("b", "orders"),
    letter("c", "orders", ["eu", "vip"]),
  ]);
  const result = await redrive(context, {
    toTopic: "retry",
    filter: { tags: ["eu"], headers: { type: "order" } },
  });
  assert.is(result.redriven, 2);
  assert.is(result.skipped, 1);
  assert.equal(
    published.flatMap((p) =>
      p.records.map((r) => `${p.topic}:${untext(r.value)}`)
    ),
    ["retry:a", "retry:c"],
  );
  const tags = published[0].records[0].headers!.filter(([n]) =>
    n === TAG_HEADER
  );
  assert.is(tags.length, 1, "tags stay on the record");
});

test("redrive() of a group that never dead-lettered finds nothing", async () => {
  const { context } = fakeContext([]);
  const result = await redrive({ ...context, deadLetterTopic: "none.dlq" });
  assert.equal(result, {
    deadLetterTopic: "none.dlq",
    redriven: 0,
    skipped: 0,
  });
});

test.run();
