import { suite } from "uvu";
import * as assert from "uvu/assert";
import { DEAD_LETTER_HEADERS } from "../../src/broker.ts";
import {
  BATCH_HEADER_BYTES,
  decodeBatches,
  encodeBatch,
  validateBatches,
} from "../../src/log/record_batch.ts";
import {
  buildDeadLetters,
  capUtf8,
  DEAD_LETTER_ERROR_MAX_BYTES,
  DEAD_LETTER_PROVENANCE_MAX_BYTES,
} from "../../src/queue/dead_letter_batch.ts";
import { MemoryLog, textRecord } from "./_memory_log.ts";

const test = suite("dead_letter_batch");
const decoder = new TextDecoder();

test("buildDeadLetters keeps key, value, headers and timestamp and adds provenance", () => {
  const log = new MemoryLog();
  log.append([textRecord("skip"), textRecord("v1", "k1", [["type", "order"]])]);
  log.append([textRecord("v2")]);
  const letters = buildDeadLetters(log, [
    {
      offset: 1,
      deliveries: 5,
      reason: "max_deliveries",
      error: "timeout",
      firstFailedAt: 1234,
    },
    {
      offset: 2,
      deliveries: 1,
      reason: "rejected",
      error: null,
      firstFailedAt: 99,
    },
  ], { topic: "orders", partition: 3, group: "billing" });
  assert.is(letters.records, 2);
  assert.equal(letters.missing, []);
  validateBatches(letters.bytes, 1 << 20);
  const [first, second] = decodeBatches(letters.bytes);
  const text = (value: Uint8Array | null) =>
    value === null ? null : decoder.decode(value);
  assert.is(text(first.key), "k1");
  assert.is(text(first.value), "v1");
  assert.is(first.timestamp, 5000);
  assert.equal(first.headers.map(([name, value]) => [name, text(value)]), [
    ["type", "order"],
    [DEAD_LETTER_HEADERS.topic, "orders"],
    [DEAD_LETTER_HEADERS.partition, "3"],
    [DEAD_LETTER_HEADERS.offset, "1"],
    [DEAD_LETTER_HEADERS.group, "billing"],
    [DEAD_LETTER_HEADERS.deliveries, "5"],
    [DEAD_LETTER_HEADERS.reason, "max_deliveries"],
    [DEAD_LETTER_HEADERS.firstFailedAt, "1234"],
    [DEAD_LETTER_HEADERS.error, "timeout"],
  ]);
  assert.is(text(second.value), "v2");
  assert.ok(
    !second.headers.some(([name]) => name === DEAD_LETTER_HEADERS.error),
    "no error header without an error",
  );
});

test("buildDeadLetters lists records retention already removed as missing", () => {
  const log = new MemoryLog();
  log.append([textRecord("gone")]);
  log.append([textRecord("kept")]);
  log.logStartOffset = 1;
  const note = {
    deliveries: 1,
    reason: "rejected" as const,
    error: null,
    firstFailedAt: 1,
  };
  const letters = buildDeadLetters(log, [
    { offset: 0, ...note },
    { offset: 1, ...note },
  ], { topic: "t", partition: 0, group: "g" });
  assert.equal(letters.missing, [0]);
  assert.is(letters.records, 1);
});

test("capUtf8 cuts at a character boundary within the byte limit", () => {
  const encoded = (value: string) => new TextEncoder().encode(value).length;
  assert.is(capUtf8("short", 1024), "short");
  assert.is(capUtf8("héllo", 2), "h", "é is 2 bytes: not split");
  assert.is(capUtf8("héllo", 3), "hé");
  assert.is(capUtf8("€€€", 7), "€€", "3-byte characters");
  assert.is(capUtf8("a😀b", 4), "a", "a surrogate pair is 4 bytes: not split");
  assert.is(capUtf8("a😀b", 5), "a😀");
  const long = "€".repeat(4096);
  const cut = capUtf8(long, DEAD_LETTER_ERROR_MAX_BYTES);
  assert.ok(encoded(cut) <= DEAD_LETTER_ERROR_MAX_BYTES);
  assert.is(cut, "€".repeat(Math.floor(DEAD_LETTER_ERROR_MAX_BYTES / 3)));
});

test("buildDeadLetters with the longest names and error fits DEAD_LETTER_PROVENANCE_MAX_BYTES", () => {
  const source = textRecord("v".repeat(500), "k", [["type", "order"]]);
  // The source record's bytes, its length field included.
  const sourceBytes = encodeBatch([source]).length - BATCH_HEADER_BYTES;
  const log = new MemoryLog();
  log.append([source]);
  const name = "n".repeat(200);
  const letters = buildDeadLetters(log, [{
    offset: 0,
    deliveries: Number.MAX_SAFE_INTEGER,
    reason: "max_deliveries",
    // 4096 characters of 3 bytes each: what HTTP lets through.
    error: "€".repeat(4096),
    firstFailedAt: Number.MAX_SAFE_INTEGER,
  }], { topic: name, partition: 65535, group: name });
  const [letter] = decodeBatches(letters.bytes);
  const error = letter.headers.find(([n]) =>
    n === DEAD_LETTER_HEADERS.error
  )![1]!;
  assert.ok(error.length <= DEAD_LETTER_ERROR_MAX_BYTES, `${error.length}`);
  const letterBytes = letters.bytes.length - BATCH_HEADER_BYTES;
  assert.ok(
    letterBytes <= sourceBytes + DEAD_LETTER_PROVENANCE_MAX_BYTES,
    `${letterBytes} > ${sourceBytes} + ${DEAD_LETTER_PROVENANCE_MAX_BYTES}`,
  );
  validateBatches(
    letters.bytes,
    sourceBytes + DEAD_LETTER_PROVENANCE_MAX_BYTES,
  );
});

test.run();
