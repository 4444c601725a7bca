import { suite } from "uvu";
import * as assert from "uvu/assert";
import {
  appendFileSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Buffer } from "node:buffer";
import { BATCH_MEDIA_TYPE } from "../src/http/app.ts";
import {
  batchBaseOffset,
  batchLength,
  decodeBatches,
  type DecodedRecord,
  encodeBatch,
} from "../src/log/record_batch.ts";
import {
  type BrokerProcess,
  spawnBrokerProcess,
  startBrokerProcess,
} from "./_broker_process.ts";
import { connect } from "./http/_ws_client.ts";
import { pickSeed, seededRandom } from "./log/_random.ts";

const test = suite("crash");

const encoder = new TextEncoder();
const ROUNDS = 3;
const PARTITIONS = 3;
const HTTP_PUBLISHERS = 3;
/** Publish requests per publisher and round; bounds every round. */
const MAX_REQUESTS = 60;
/** Publish requests a WebSocket publisher keeps in flight. */
const WS_PIPELINE = 3;

/** One record as a publisher sent it, and where the broker said it landed. */
interface SentRecord {
  id: string;
  publisher: string;
  /** Sequential publishers wait for each ack; their order is checked across requests. */
  sequential: boolean;
  request: number;
  /** The record in the JSON body. */
  json: Record<string, unknown>;
  key: Uint8Array | null;
  value: Uint8Array;
  headers: [string, Uint8Array | null][];
  timestamp?: number;
  partition?: number;
  /** From the ack, or where a restarted broker first served it. */
  at?: { partition: number; offset: number };
  /** Unacknowledged and missing after a restart: it must never appear. */
  gone?: boolean;
}

type Random = () => number;

/** Everything sent so far, by the id each value starts with. */
class Ledger {
  readonly records = new Map<string, SentRecord>();
  /**
   * Near the broker's clock: a batch holds timestamps within an int32 of ms
   * of its first record's, and records without one get the broker's clock.
   */
  readonly #epoch = Date.now() - 60_000;

  /** Makes a record whose value starts with `<publisher>-<seq>|`. */
  make(
    random: Random,
    publisher: string,
    seq: number,
    request: number,
    sequential: boolean,
    partitions: number,
  ): SentRecord {
    const id = `${publisher}-${seq}`;
    const json: Record<string, unknown> = {};
    let value: Uint8Array;
    const kind = Math.floor(random() * 3);
    if (kind === 0) {
      // Text beyond ASCII checks UTF-8 passes through unchanged.
      const text = `${id}|seq=${seq} ডাকঘর ${"x".repeat(random() * 40)}`;
      json.value = text;
      value = encoder.encode(text);
    } else if (kind === 1) {
      // Bytes that are not UTF-8, zeros included.
      const tail = randomBytes(random, Math.floor(random() * 64));
      value = concat(encoder.encode(`${id}|`), tail);
      json.value = Buffer.from(value).toString("base64");
      json.valueEncoding = "base64";
    } else {
      const text = `${id}|${JSON.stringify({ seq, n: [seq, -seq] })}`;
      json.value = text;
      json.valueEncoding = "utf8";
      value = encoder.encode(text);
    }

    let key: Uint8Array | null = null;
    const keyKind = random();
    if (keyKind < 0.2) {
      json.key = null;
    } else if (keyKind < 0.8) {
      json.key = `customer-${Math.floor(random() * 11)}`;
      key = encoder.encode(json.key as string);
    } else {
      key = randomBytes(random, 1 + Math.floor(random() * 8));
      json.key = Buffer.from(key).toString("base64");
      json.keyEncoding = "base64";
    }

    const headers: [string, Uint8Array | null][] = [];
    if (random() < 0.5) {
      const object: Record<string, string | null> = {
        seq: String(seq),
        publisher,
      };
      if (random() < 0.3) object.gone = null;
      json.headers = object;
      for (const [name, text] of Object.entries(object)) {
        headers.push([name, text === null ? null : encoder.encode(text)]);
      }
    }

    const record: SentRecord = {
      id,
      publisher,
      sequential,
      request,
      json,
      key,
      value,
      headers,
    };
    if (random() < 0.5) {
      record.timestamp = json.timestamp = this.#epoch + seq;
    }
    if (random() < 0.3) {
      record.partition = json.partition = Math.floor(random() * partitions);
    }
    this.records.set(id, record);
    return record;
  }

  /** Records the ack's offsets, one per record, in request order. */
  acknowledge(records: SentRecord[], offsets: unknown): void {
    const list = offsets as { partition: number; offset: number }[];
    assert.is(list.length, records.length, "one offset per record");
    records.forEach((record, i) => {
      record.at = { partition: list[i].partition, offset: list[i].offset };
    });
  }
}

function randomBytes(random: Random, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = Math.floor(random() * 256);
  return bytes;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** The id a value starts with: the bytes before the first `|`. */
function idOf(value: Uint8Array | null): string {
  if (value === null) return "(null value)";
  const bar = value.indexOf(0x7c);
  return new TextDecoder().decode(value.subarray(0, bar < 0 ? 16 : bar));
}

function hex(bytes: Uint8Array | null): string {
  return bytes === null ? "null" : Buffer.from(bytes).toString("hex");
}

async function post(
  url: string,
  path: string,
  body: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const response = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, json: text ? JSON.parse(text) : {} };
}

/** Every record of a partition, as raw batches decoded, paging to the end. */
async function readPartition(
  url: string,
  topic: string,
  partition: number,
): Promise<DecodedRecord[]> {
  const records: DecodedRecord[] = [];
  let offset = 0;
  for (;;) {
    const response = await fetch(
      `${url}/topics/${topic}/partitions/${partition}/records?offset=${offset}&maxRecords=10000`,
      { headers: { Accept: BATCH_MEDIA_TYPE } },
    );
    const bytes = new Uint8Array(await response.arrayBuffer());
    assert.is(response.status, 200, `read ${topic}/${partition}@${offset}`);
    records.push(...decodeBatches(bytes));
    const next = Number(response.headers.get("X-Dakghar-Next-Offset"));
    const highWatermark = Number(
      response.headers.get("X-Dakghar-High-Watermark"),
    );
    if (next >= highWatermark) return records;
    assert.ok(next > offset, `read ${topic}/${partition} makes progress`);
    offset = next;
  }
}

/**
 * Reads every partition back and checks it against the ledger: offsets
 * contiguous from 0, every record one that was sent, at most once, byte for
 * byte, every acknowledged record at its acknowledged place, and order kept
 * within a request and across a sequential publisher's requests. Records
 * sent but never acknowledged may be there; from now on they are held to
 * the place they were served at, as a consumer may have read them, and
 * those missing must stay missing.
 *
 * @param segments receives each partition's segment count
 * @returns the log end of each partition
 */
async function checkLog(
  url: string,
  topic: string,
  partitions: number,
  ledger: Ledger,
  segments: number[] = [],
): Promise<number[]> {
  const seen = new Set<string>();
  const ends: number[] = [];
  for (let partition = 0; partition < partitions; partition++) {
    const records = await readPartition(url, topic, partition);
    ends.push(records.length);
    records.forEach((record, index) => {
      const where = `${topic}/${partition}@${record.offset}`;
      assert.is(record.offset, index, `${where}: offsets contiguous from 0`);
      const id = idOf(record.value);
      const sent = ledger.records.get(id);
      if (!sent) return assert.unreachable(`${where}: never sent: ${id}`);
      assert.not.ok(seen.has(id), `${where}: ${id} appears twice`);
      assert.not.ok(sent.gone, `${where}: ${id} was missing after a restart`);
      seen.add(id);
      if (sent.at) {
        assert.equal(sent.at, { partition, offset: record.offset }, id);
      } else if (sent.partition !== undefined) {
        assert.is(partition, sent.partition, `${id}: explicit partition`);
      }
      assert.is(hex(record.key), hex(sent.key), `${id}: key`);
      assert.is(hex(record.value), hex(sent.value), `${id}: value`);
      assert.equal(
        record.headers.map(([name, bytes]) => [name, hex(bytes)]),
        sent.headers.map(([name, bytes]) => [name, hex(bytes)]),
        `${id}: headers`,
      );
      if (sent.timestamp !== undefined) {
        assert.is(record.timestamp, sent.timestamp, `${id}: timestamp`);
      }
      sent.at = { partition, offset: record.offset };
    });
  }
  const described = await fetch(`${url}/topics/${topic}`);
  const { partitions: stats } = await described.json() as {
    partitions: {
      logStartOffset: number;
      logEndOffset: number;
      segments: number;
    }[];
  };
  assert.equal(
    stats.map((p) => [p.logStartOffset, p.logEndOffset]),
    ends.map((end) => [0, end]),
    "described log ends",
  );
  segments.push(...stats.map((p) => p.segments));
  const lost = [...ledger.records.values()].filter((r) =>
    r.at && !seen.has(r.id)
  );
  assert.equal(
    lost.map((r) => `${r.id}@${r.at!.partition}/${r.at!.offset}`),
    [],
    "acknowledged records lost",
  );
  checkOrder(ledger);
  for (const record of ledger.records.values()) {
    if (!record.at) record.gone = true;
  }
  return ends;
}

/** Offsets grow with the send order wherever the broker promised it. */
function checkOrder(ledger: Ledger): void {
  const last = new Map<string, { offset: number; request: number }>();
  for (const record of ledger.records.values()) {
    if (!record.at) continue;
    const lane = `${record.publisher} ${record.at.partition}`;
    const before = last.get(lane);
    if (
      before &&
      (record.sequential || before.request === record.request)
    ) {
      assert.ok(
        record.at.offset > before.offset,
        `${record.id} at ${record.at.offset} after ${before.offset}`,
      );
    }
    last.set(lane, { offset: record.at.offset, request: record.request });
  }
}

/** Shared by the publishers of one round: the kill trigger and failures. */
interface Round {
  url: string;
  topic: string;
  ledger: Ledger;
  random: Random;
  name: string;
  acks: number;
  killAt: number;
  killed: boolean;
  broker: BrokerProcess;
  failures: string[];
}

function acked(round: Round): void {
  round.acks++;
  if (round.acks >= round.killAt && !round.killed) {
    // Synchronously, while the other publishers have requests in flight.
    round.killed = true;
    round.broker.killNow();
  }
}

function failed(round: Round, who: string, error: unknown): void {
  // Once the broker is killed every error is the crash itself.
  if (!round.killed) round.failures.push(`${who}: ${error}`);
}

/** Publishes JSON batches over HTTP, one request at a time. */
async function publishOverHttp(round: Round, index: number): Promise<void> {
  const name = `${round.name}h${index}`;
  let seq = 0;
  for (let request = 0; request < MAX_REQUESTS && !round.killed; request++) {
    const count = 1 + Math.floor(round.random() * 5);
    const records: SentRecord[] = [];
    for (let i = 0; i < count; i++) {
      records.push(
        round.ledger.make(round.random, name, seq++, request, true, PARTITIONS),
      );
    }
    try {
      const response = await post(
        round.url,
        `/topics/${round.topic}/records`,
        { records: records.map((r) => r.json) },
      );
      if (response.status !== 200) {
        throw new Error(`${response.status} ${JSON.stringify(response.json)}`);
      }
      round.ledger.acknowledge(records, response.json.offsets);
    } catch (error) {
      return failed(round, name, error);
    }
    acked(round);
  }
}

/** Publishes over one WebSocket with a few requests in flight. */
async function publishOverWebSocket(round: Round): Promise<void> {
  const name = `${round.name}w`;
  let socket;
  try {
    socket = await connect(`${round.url.replace("http", "ws")}/ws`);
  } catch (error) {
    return failed(round, name, error);
  }
  const pending = new Map<number, SentRecord[]>();
  let seq = 0;
  let request = 0;
  try {
    for (;;) {
      while (
        pending.size < WS_PIPELINE && request < MAX_REQUESTS && !round.killed
      ) {
        const count = 1 + Math.floor(round.random() * 4);
        const records: SentRecord[] = [];
        for (let i = 0; i < count; i++) {
          records.push(
            round.ledger.make(
              round.random,
              name,
              seq++,
              request,
              false,
              PARTITIONS,
            ),
          );
        }
        pending.set(request, records);
        if (round.random() < 0.3) {
          // A pre-framed batch in a msgpack frame, all for one partition.
          const partition = Math.floor(round.random() * PARTITIONS);
          for (const record of records) {
            record.partition = partition;
            record.timestamp ??= Date.now();
          }
          socket.send({
            op: "publish",
            id: request,
            topic: round.topic,
            partition,
            batch: encodeBatch(records.map((r) => ({
              key: r.key,
              value: r.value,
              headers: r.headers,
              timestamp: r.timestamp!,
            }))),
          }, true);
        } else {
          socket.send({
            op: "publish",
            id: request,
            topic: round.topic,
            records: records.map((r) => r.json),
          });
        }
        request++;
      }
      if (pending.size === 0) break;
      const frame = await socket.next();
      const records = pending.get(frame.id as number);
      if (frame.op !== "ack" || !records) {
        throw new Error(`unexpected frame ${JSON.stringify(frame)}`);
      }
      pending.delete(frame.id as number);
      if (frame.lastOffset === undefined) {
        round.ledger.acknowledge(records, frame.offsets);
      } else {
        const [{ partition, offset }] = frame.offsets as {
          partition: number;
          offset: number;
        }[];
        assert.is(frame.lastOffset, offset + records.length - 1, "lastOffset");
        round.ledger.acknowledge(
          records,
          records.map((_, i) => ({ partition, offset: offset + i })),
        );
      }
      acked(round);
    }
  } catch (error) {
    failed(round, name, error);
  } finally {
    if (!round.killed) await socket.close();
  }
}

/** Publishes one record to each partition; each must land at the log end. */
async function publishAtEnds(
  url: string,
  topic: string,
  ends: number[],
  ledger: Ledger,
  random: Random,
  name: string,
): Promise<void> {
  const records = ends.map((_, partition) => {
    const record = ledger.make(random, name, partition, 0, true, ends.length);
    record.partition = record.json.partition = partition;
    return record;
  });
  const response = await post(url, `/topics/${topic}/records`, {
    records: records.map((r) => r.json),
  });
  assert.is(response.status, 200, JSON.stringify(response.json));
  assert.equal(
    response.json.offsets,
    ends.map((offset, partition) => ({ partition, offset })),
    "new publishes continue at the recovered log end",
  );
  ledger.acknowledge(records, response.json.offsets);
}

function logSeed(name: string, seed: number): void {
  console.log(`  ${name}: seed ${seed} (replay with DAKGHAR_SEED=${seed})`);
}

test("dakghar serve keeps every acknowledged record across SIGKILL and restart", async () => {
  const seed = pickSeed();
  logSeed("crash", seed);
  const random = seededRandom(seed);
  const dataDir = mkdtempSync(join(tmpdir(), "dakghar-crash-"));
  const topic = "orders";
  const ledger = new Ledger();
  let broker: BrokerProcess | undefined;
  try {
    // Small segments make kills land around rolls and recovery span segments.
    const segmentBytes = [1024, 4096, 128 * 1024 * 1024][
      Math.floor(random() * 3)
    ];
    console.log(`  segmentBytes=${segmentBytes}`);
    broker = await startBrokerProcess(dataDir);
    const created = await post(broker.url, "/topics", {
      name: topic,
      partitions: PARTITIONS,
      segmentBytes,
    });
    assert.is(created.status, 201);

    for (let r = 0; r < ROUNDS; r++) {
      const round: Round = {
        url: broker.url,
        topic,
        ledger,
        random,
        name: `r${r}`,
        acks: 0,
        killAt: 5 + Math.floor(random() * 100),
        killed: false,
        broker,
        failures: [],
      };
      const publishers = [publishOverWebSocket(round)];
      for (let i = 0; i < HTTP_PUBLISHERS; i++) {
        publishers.push(publishOverHttp(round, i));
      }
      await Promise.all(publishers);
      // Every publisher stopped, whether or not the kill came first.
      round.killed = true;
      await broker.kill();
      assert.equal(round.failures, [], "publishers before the kill");

      // Sometimes the next start dies too, anywhere in its own recovery.
      let interrupted = "";
      if (random() < 0.5) {
        const delay = Math.floor(random() * 400);
        const doomed = spawnBrokerProcess(dataDir);
        await new Promise((resolve) => setTimeout(resolve, delay));
        await doomed.kill();
        interrupted = `; a restart killed after ${delay} ms`;
      }

      broker = await startBrokerProcess(dataDir);
      const open = [...ledger.records.values()].filter((r) => !r.at && !r.gone);
      const segments: number[] = [];
      const ends = await checkLog(
        broker.url,
        topic,
        PARTITIONS,
        ledger,
        segments,
      );
      const kept = open.filter((r) => r.at).length;
      console.log(
        `  round ${r}: kill at ack ${round.killAt} of ${round.acks}; ` +
          `log ends ${ends} in ${segments} segments; ` +
          `${kept} of ${open.length} unacknowledged records kept${interrupted}`,
      );
      await publishAtEnds(broker.url, topic, ends, ledger, random, `r${r}m`);
    }
    await checkLog(broker.url, topic, PARTITIONS, ledger);
  } catch (error) {
    if (broker) console.error(`broker log:\n${broker.output()}`);
    throw error;
  } finally {
    await broker?.kill();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

/** The last segment file of a partition directory. */
function activeSegment(dir: string): string {
  const logs = readdirSync(dir).filter((n) => n.endsWith(".log")).sort();
  assert.ok(logs.length > 0, `segments in ${dir}`);
  return join(dir, logs.at(-1)!);
}

/** Where the last batch of a segment file starts, its length and base offset. */
function lastBatch(path: string) {
  const bytes = new Uint8Array(readFileSync(path));
  let position = 0;
  let last = { position: -1, length: 0, baseOffset: -1 };
  while (position < bytes.length) {
    const length = batchLength(bytes, position);
    last = { position, length, baseOffset: batchBaseOffset(bytes, position) };
    position += length;
  }
  assert.is(position, bytes.length, `${path} ends at a batch boundary`);
  return { ...last, size: bytes.length };
}

/** The `bytesTruncated` of the broker's warning about a cut segment. */
function truncationWarning(output: string, path: string): number {
  const line = output.split("\n").find((l) =>
    /^\S+ WARN /.test(l) && l.includes("truncated") && l.includes(path)
  );
  assert.ok(line, `a warning names ${path}:\n${output}`);
  const match = /bytesTruncated=(\d+)/.exec(line!);
  assert.ok(match, line);
  return Number(match![1]);
}

test("dakghar serve cuts a garbled or torn segment tail after SIGKILL", async () => {
  const seed = pickSeed();
  logSeed("garbled tail", seed);
  const random = seededRandom(seed);
  const dataDir = mkdtempSync(join(tmpdir(), "dakghar-tail-"));
  const topic = "tail";
  const ledger = new Ledger();
  const publishSome = async (url: string, name: string) => {
    for (let request = 0; request < 6; request++) {
      const records = Array.from(
        { length: 1 + Math.floor(random() * 4) },
        (_, i) => {
          const record = ledger.make(
            random,
            name,
            request * 10 + i,
            request,
            true,
            2,
          );
          record.partition = record.json.partition = request % 2;
          return record;
        },
      );
      const response = await post(url, `/topics/${topic}/records`, {
        records: records.map((r) => r.json),
      });
      assert.is(response.status, 200, JSON.stringify(response.json));
      ledger.acknowledge(records, response.json.offsets);
    }
  };
  let broker: BrokerProcess | undefined;
  try {
    broker = await startBrokerProcess(dataDir);
    assert.is(
      (await post(broker.url, "/topics", {
        name: topic,
        partitions: 2,
        segmentBytes: 1024,
      })).status,
      201,
    );
    await publishSome(broker.url, "a");
    await broker.kill();

    // Torn: the last batch of partition 0 loses its last few bytes.
    const segment = activeSegment(join(dataDir, "topics", topic, "0"));
    const batch = lastBatch(segment);
    assert.ok(batch.length > 0, `a batch in ${segment}`);
    const cut = 1 + Math.floor(random() * Math.min(batch.length - 1, 64));
    truncateSync(segment, batch.size - cut);
    for (const record of ledger.records.values()) {
      // Destroyed by hand; the broker cannot know they were acknowledged.
      if (record.at?.partition === 0 && record.at.offset >= batch.baseOffset) {
        ledger.records.delete(record.id);
      }
    }
    broker = await startBrokerProcess(dataDir);
    assert.is(
      truncationWarning(broker.output(), segment),
      batch.length - cut,
      "bytes cut from the torn batch",
    );
    let ends = await checkLog(broker.url, topic, 2, ledger);
    assert.is(ends[0], batch.baseOffset, "partition 0 ends before the tear");
    await publishAtEnds(broker.url, topic, ends, ledger, random, "b");
    await publishSome(broker.url, "c");
    await broker.kill();

    // Garbled: random bytes after the last whole batch of partition 0.
    const garbled = activeSegment(join(dataDir, "topics", topic, "0"));
    const noise = randomBytes(random, 1 + Math.floor(random() * 200));
    appendFileSync(garbled, noise);
    broker = await startBrokerProcess(dataDir);
    assert.is(
      truncationWarning(broker.output(), garbled),
      noise.length,
      "bytes cut after the last batch",
    );
    ends = await checkLog(broker.url, topic, 2, ledger);
    const acknowledged = [0, 1].map((p) =>
      [...ledger.records.values()].filter((r) => r.at?.partition === p).length
    );
    assert.equal(ends, acknowledged, "every record before the damage");
    await publishAtEnds(broker.url, topic, ends, ledger, random, "d");
    await checkLog(broker.url, topic, 2, ledger);
  } catch (error) {
    if (broker) console.error(`broker log:\n${broker.output()}`);
    throw error;
  } finally {
    await broker?.kill();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test.run();
