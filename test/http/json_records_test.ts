import { suite } from "uvu";
import * as assert from "uvu/assert";
import { TAG_HEADER } from "../../src/broker.ts";
import { DakgharError } from "../../src/errors.ts";
import {
  decodeBatches,
  encodeBatch,
  stampBatch,
} from "../../src/log/record_batch.ts";
import {
  parseProducerBody,
  toConsumerRecords,
} from "../../src/http/json_records.ts";

const test = suite("json_records");
const utf8 = (text: string) => new TextEncoder().encode(text);
const text = (bytes: Uint8Array | null) =>
  bytes === null ? null : new TextDecoder().decode(bytes);

function roundTrip(body: unknown) {
  const parsed = parseProducerBody(body, {}, 1000);
  const batch = encodeBatch(parsed);
  stampBatch(batch, 0, 40, 2000);
  return toConsumerRecords(decodeBatches(batch));
}

function malformed(body: unknown, field: string) {
  try {
    parseProducerBody(body, {}, 0);
  } catch (error) {
    assert.instance(error, DakgharError);
    assert.is((error as DakgharError).code, "malformed_body");
    assert.is((error as DakgharError).context.field, field);
    assert.ok((error as DakgharError).message.startsWith(`${field}: `));
    return;
  }
  assert.unreachable(`accepted ${JSON.stringify(body)}`);
}

test("parseProducerBody() takes one record object", () => {
  const [record] = parseProducerBody({ key: "k", value: "v" }, {}, 5);
  assert.is(text(record.key), "k");
  assert.is(text(record.value), "v");
  assert.equal(record.headers, []);
  assert.is(record.timestamp, 5);
  assert.is(record.partition, undefined);
});

test("parseProducerBody() stores non-string values as JSON text", () => {
  const records = parseProducerBody(
    {
      records: [
        { value: { a: [1, 2] } },
        { value: 42 },
        { value: true },
        { value: null },
        { value: "quoted", valueEncoding: "json" },
        { value: null, valueEncoding: "json" },
      ],
    },
    {},
    0,
  );
  assert.equal(records.map((r) => text(r.value)), [
    '{"a":[1,2]}',
    "42",
    "true",
    null,
    '"quoted"',
    "null",
  ]);
});

test("parseProducerBody() decodes base64 per record, per body and per request", () => {
  const [a, b, c] = parseProducerBody(
    {
      valueEncoding: "base64",
      records: [
        { value: "aGk=" },
        { value: "plain", valueEncoding: "utf8" },
        { key: "AAE=", value: "", keyEncoding: "base64" },
      ],
    },
    { valueEncoding: "utf8" },
    0,
  );
  assert.is(text(a.value), "hi");
  assert.is(text(b.value), "plain");
  assert.equal([...c.key!], [0, 1]);
  assert.is(c.value!.length, 0);

  const [d] = parseProducerBody({ key: "AP8=", value: "x" }, {
    keyEncoding: "base64",
  }, 0);
  assert.equal([...d.key!], [0, 255]);
});

test("parseProducerBody() keeps headers, partition and timestamp", () => {
  const [record] = parseProducerBody(
    {
      value: "v",
      headers: { trace: "abc", empty: null },
      partition: 3,
      timestamp: 1234,
    },
    {},
    0,
  );
  assert.equal(record.headers.map(([n, v]) => [n, text(v)]), [
    ["trace", "abc"],
    ["empty", null],
  ]);
  assert.is(record.partition, 3);
  assert.is(record.timestamp, 1234);
});

test("parseProducerBody() names the field of every fault", () => {
  malformed(null, "body");
  malformed([1], "body");
  malformed("x", "body");
  malformed({}, "value");
  malformed({ value: 1, extra: 1 }, "extra");
  malformed({ records: "x" }, "records");
  malformed({ records: [] }, "records");
  malformed({ records: [], other: 1 }, "other");
  malformed({ records: [{ value: 1 }, 5] }, "records[1]");
  malformed(
    {
      records: [{ value: 1 }, { value: 2 }, { value: 3 }, { value: 1, key: 7 }],
    },
    "records[3].key",
  );
  malformed({ records: [{}] }, "records[0].value");
  malformed({ value: "x", key: "***", keyEncoding: "base64" }, "key");
  malformed({ value: "a=b", valueEncoding: "base64" }, "value");
  malformed({ value: 5, valueEncoding: "utf8" }, "value");
  malformed({ value: 5, valueEncoding: "base64" }, "value");
  malformed({ value: "x", valueEncoding: "hex" }, "valueEncoding");
  malformed({ value: "x", keyEncoding: "json" }, "keyEncoding");
  malformed({ records: [{ value: "x" }], keyEncoding: 1 }, "keyEncoding");
  malformed({ value: "x", headers: [] }, "headers");
  malformed({ value: "x", headers: { a: 1 } }, "headers.a");
  malformed({ value: "x", partition: -1 }, "partition");
  malformed({ value: "x", partition: 1.5 }, "partition");
  malformed({ value: "x", partition: "1" }, "partition");
  malformed({ value: "x", timestamp: -5 }, "timestamp");
  malformed(
    { records: [{ value: "x" }, { value: "x", partition: 2 ** 53 }] },
    "records[1].partition",
  );
});

test("toConsumerRecords() round-trips text, JSON and null", () => {
  const records = roundTrip({
    records: [
      { key: "k1", value: "hello", headers: { h: "1" } },
      { value: { n: 1 } },
      { key: null, value: null },
    ],
  });
  assert.equal(records, [
    {
      offset: 40,
      timestamp: 1000,
      key: "k1",
      value: "hello",
      headers: { h: "1" },
    },
    { offset: 41, timestamp: 1000, key: null, value: '{"n":1}', headers: {} },
    { offset: 42, timestamp: 1000, key: null, value: null, headers: {} },
  ]);
});

test("toConsumerRecords() falls back to base64 for bytes that are not UTF-8", () => {
  const [record] = roundTrip({
    key: "/w==",
    keyEncoding: "base64",
    value: "gICA",
    valueEncoding: "base64",
  });
  assert.is(record.key, "/w==");
  assert.is(record.keyEncoding, "base64");
  assert.is(record.value, "gICA");
  assert.is(record.valueEncoding, "base64");
});

test("toConsumerRecords() writes base64 when asked", () => {
  const batch = encodeBatch([{
    key: utf8("k"),
    value: utf8("hi"),
    headers: [["h", new Uint8Array([0xff])]],
    timestamp: 7,
  }]);
  const [record] = toConsumerRecords(decodeBatches(batch), "base64");
  assert.equal(record, {
    offset: 0,
    timestamp: 7,
    key: "aw==",
    value: "aGk=",
    headers: { h: "/w==" },
    keyEncoding: "base64",
    valueEncoding: "base64",
    headersEncoding: "base64",
  });
});

test("toConsumerRecords() writes UTF-8 header values as base64 when asked", () => {
  const batch = encodeBatch([{
    key: null,
    value: utf8("hi"),
    headers: [["trace", utf8("abc")], ["empty", null]],
    timestamp: 7,
  }, {
    key: null,
    value: utf8("no headers"),
    headers: [],
    timestamp: 7,
  }]);
  const [record, bare] = toConsumerRecords(decodeBatches(batch), "base64");
  assert.equal(record.headers, { trace: "YWJj", empty: null });
  assert.is(record.headersEncoding, "base64");
  assert.equal(bare.headers, {});
  assert.is(bare.headersEncoding, undefined);
});

test("parseProducerBody() stores tags as dakghar.tag headers after the others", () => {
  const [record] = parseProducerBody(
    { value: "v", headers: { type: "order" }, tags: ["eu", "vip"] },
    {},
    0,
  );
  assert.equal(
    record.headers.map(([name, value]) => [name, text(value)]),
    [["type", "order"], [TAG_HEADER, "eu"], [TAG_HEADER, "vip"]],
  );
});

test("parseProducerBody() takes delayMs and deliverAt as ms or ISO-8601", () => {
  const now = Date.UTC(2026, 0, 1);
  const [delayed, due, iso] = parseProducerBody(
    {
      records: [
        { value: "a", delayMs: 1500 },
        { value: "b", deliverAt: now + 60_000, delayMs: 5 },
        { value: "c", deliverAt: "2026-01-01T01:00:00.250+01:00" },
      ],
    },
    {},
    now,
  );
  assert.is(delayed.delayMs, 1500);
  assert.is(delayed.deliverAt, undefined);
  assert.is(due.deliverAt, now + 60_000);
  assert.is(due.delayMs, 5);
  assert.is(iso.deliverAt, now + 250);
});

test("parseProducerBody() refuses bad tags, delays and due times by field", () => {
  malformed({ value: 1, tags: "eu" }, "tags");
  malformed({ value: 1, tags: ["eu", ""] }, "tags");
  malformed({ records: [{ value: 1, tags: [3] }] }, "records[0].tags");
  malformed({ value: 1, delayMs: -1 }, "delayMs");
  malformed({ value: 1, delayMs: 1.5 }, "delayMs");
  malformed({ value: 1, delayMs: 91 * 86_400_000 }, "delayMs");
  malformed({ value: 1, deliverAt: "tomorrow" }, "deliverAt");
  malformed({ value: 1, deliverAt: "2026-01-01T00:00:00" }, "deliverAt");
  malformed({ value: 1, deliverAt: "2027-02-29T09:00:00Z" }, "deliverAt");
  malformed({ value: 1, deliverAt: "2026-04-31T09:00:00Z" }, "deliverAt");
  malformed({ value: 1, deliverAt: "2026-12-05T24:00:00Z" }, "deliverAt");
  malformed({ value: 1, deliverAt: "2026-13-45T00:00:00Z" }, "deliverAt");
  malformed({ value: 1, deliverAt: 91 * 86_400_000 }, "deliverAt");
  malformed({ value: 1, deliverAt: true }, "deliverAt");
});

test("toConsumerRecords() lists tags apart from headers", () => {
  const [tagged, bare] = roundTrip({
    records: [
      { value: "v", headers: { type: "order" }, tags: ["eu", "vip"] },
      { value: "w" },
    ],
  });
  assert.equal(tagged.headers, { type: "order" });
  assert.equal(tagged.tags, ["eu", "vip"]);
  assert.not.ok("tags" in bare);
});

test.run();
