import { suite } from "uvu";
import * as assert from "uvu/assert";
import { BATCH_MEDIA_TYPE, createApp } from "../../src/http/app.ts";
import { createLogger, silentLogger } from "../../src/logger.ts";
import { decodeBatches, encodeBatch } from "../../src/log/record_batch.ts";
import { FakeBroker } from "./_fake_broker.ts";

const test = suite("app");
const utf8 = (text: string) => new TextEncoder().encode(text);

async function setup(options: { token?: string; maxBodyBytes?: number } = {}) {
  const broker = new FakeBroker();
  await broker.createTopic("orders", { partitions: 2 });
  const app = createApp(broker, { log: silentLogger, ...options });
  return { broker, app };
}

function postJson(body: unknown, path = "/topics/orders/records") {
  return new Request(`http://localhost${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

async function errorOf(
  response: Response,
): Promise<Record<string, unknown> & { status: number }> {
  const body = await response.json() as { error: Record<string, unknown> };
  return { ...body.error, status: response.status };
}

test("GET /health answers ok", async () => {
  const { app } = await setup();
  const response = await app.request("/health");
  assert.is(response.status, 200);
  assert.equal(await response.json(), { status: "ok" });
});

test("POST /topics creates a topic and refuses a duplicate", async () => {
  const { app, broker } = await setup();
  const created = await app.request(
    postJson({ name: "audit", partitions: 3 }, "/topics"),
  );
  assert.is(created.status, 201);
  assert.is(broker.topics.get("audit")?.partitions.length, 3);

  const again = await app.request(postJson({ name: "audit" }, "/topics"));
  const error = await errorOf(again);
  assert.is(error.status, 409);
  assert.is(error.code, "topic_exists");
});

test("POST /topics rejects malformed JSON and a missing name", async () => {
  const { app } = await setup();
  const broken = await errorOf(await app.request(postJson("{nope", "/topics")));
  assert.is(broken.status, 400);
  assert.is(broken.code, "malformed_body");

  const nameless = await errorOf(
    await app.request(postJson({ partitions: 1 }, "/topics")),
  );
  assert.is(nameless.code, "malformed_body");
  assert.is(nameless.field, "name");
});

test("GET /topics and GET /topics/:topic describe topics", async () => {
  const { app } = await setup();
  const list = await (await app.request("/topics")).json() as {
    topics: { name: string }[];
  };
  assert.equal(list.topics.map((t) => t.name), ["orders"]);

  const one = await (await app.request("/topics/orders")).json() as {
    partitions: unknown[];
  };
  assert.is(one.partitions.length, 2);

  const missing = await errorOf(await app.request("/topics/nope"));
  assert.is(missing.status, 404);
  assert.is(missing.code, "unknown_topic");
});

test("DELETE /topics/:topic deletes it", async () => {
  const { app, broker } = await setup();
  const response = await app.request("/topics/orders", { method: "DELETE" });
  assert.is(response.status, 204);
  assert.not.ok(broker.topics.has("orders"));
  const again = await app.request("/topics/orders", { method: "DELETE" });
  assert.is(again.status, 404);
});

test("POST /topics/:topic/records publishes JSON records", async () => {
  const { app } = await setup();
  const one = await app.request(postJson({ key: "a", value: "x" }));
  assert.equal(await one.json(), { offsets: [{ partition: 0, offset: 0 }] });

  const many = await app.request(postJson({
    records: [{ value: 1 }, { value: 2, partition: 1 }],
  }));
  assert.equal(await many.json(), {
    offsets: [{ partition: 0, offset: 1 }, { partition: 1, offset: 0 }],
  });
});

test("POST /topics/:topic/records names the bad field", async () => {
  const { app } = await setup();
  const error = await errorOf(
    await app.request(
      postJson({ records: [{ value: 1 }, { value: 2, key: 3 }] }),
    ),
  );
  assert.is(error.status, 400);
  assert.is(error.code, "malformed_body");
  assert.is(error.field, "records[1].key");

  const broken = await errorOf(await app.request(postJson("[1,")));
  assert.is(broken.code, "malformed_body");
});

test("POST /topics/:topic/records takes octet-stream and batch bodies", async () => {
  const { app, broker } = await setup();
  const raw = await app.request("/topics/orders/records?partition=1&key=k", {
    method: "POST",
    headers: { "Content-Type": "application/octet-stream" },
    body: utf8("bytes"),
  });
  assert.equal(await raw.json(), {
    offsets: [{ partition: 1, offset: 0 }],
    lastOffset: 0,
  });

  const batch = encodeBatch([
    { key: null, value: utf8("a"), headers: [], timestamp: 1 },
    { key: null, value: utf8("b"), headers: [], timestamp: 2 },
  ]);
  const framed = await app.request("/topics/orders/records?partition=1", {
    method: "POST",
    headers: { "Content-Type": BATCH_MEDIA_TYPE },
    body: batch.slice().buffer,
  });
  assert.equal(await framed.json(), {
    offsets: [{ partition: 1, offset: 1 }],
    lastOffset: 2,
  });
  assert.is(broker.topics.get("orders")!.partitions[1].logEndOffset, 3);

  const corrupt = batch.slice();
  corrupt[50] ^= 1;
  const refused = await errorOf(
    await app.request("/topics/orders/records", {
      method: "POST",
      headers: { "Content-Type": BATCH_MEDIA_TYPE },
      body: corrupt.buffer,
    }),
  );
  assert.is(refused.status, 400);
  assert.is(refused.code, "malformed_batch");
});

test("POST /topics/:topic/records refuses other content types and large bodies", async () => {
  const { app } = await setup({ maxBodyBytes: 64 });
  const text = await errorOf(
    await app.request("/topics/orders/records", {
      method: "POST",
      headers: { "Content-Type": "text/plain" },
      body: "x",
    }),
  );
  assert.is(text.status, 400);
  assert.is(text.code, "bad_request");

  const large = await errorOf(
    await app.request(postJson({ value: "x".repeat(100) })),
  );
  assert.is(large.status, 413);
  assert.is(large.code, "body_too_large");
});

test("GET .../records reads JSON records with positions", async () => {
  const { app } = await setup();
  await app.request(
    postJson({ records: [{ value: "a" }, { value: "b" }, { value: "c" }] }),
  );
  const response = await app.request(
    "/topics/orders/partitions/0/records?offset=1&maxRecords=1",
  );
  const body = await response.json() as Record<string, unknown>;
  assert.is(response.status, 200);
  assert.equal(body.records, [
    {
      offset: 1,
      timestamp: (body.records as { timestamp: number }[])[0].timestamp,
      key: null,
      value: "b",
      headers: {},
    },
  ]);
  assert.is(body.nextOffset, 2);
  assert.is(body.highWatermark, 3);
  assert.is(body.logStartOffset, 0);

  const fromStart =
    await (await app.request("/topics/orders/partitions/0/records"))
      .json() as { records: { value: string }[]; nextOffset: number };
  assert.equal(fromStart.records.map((r) => r.value), ["a", "b", "c"]);
  assert.is(fromStart.nextOffset, 3);

  const atEnd = await (await app.request(
    "/topics/orders/partitions/0/records?offset=3",
  )).json() as { records: unknown[]; nextOffset: number };
  assert.equal(atEnd.records, []);
  assert.is(atEnd.nextOffset, 3);
});

test("GET .../records answers raw batches for the batch media type", async () => {
  const { app } = await setup();
  await app.request(postJson({ records: [{ value: "a" }, { value: "b" }] }));
  const response = await app.request(
    "/topics/orders/partitions/0/records?offset=1",
    { headers: { Accept: BATCH_MEDIA_TYPE } },
  );
  assert.is(response.headers.get("Content-Type"), BATCH_MEDIA_TYPE);
  assert.is(response.headers.get("X-Dakghar-Next-Offset"), "2");
  assert.is(response.headers.get("X-Dakghar-High-Watermark"), "2");
  const records = decodeBatches(new Uint8Array(await response.arrayBuffer()));
  assert.equal(
    records.map((r) => [r.offset, new TextDecoder().decode(r.value!)]),
    [
      [1, "b"],
    ],
  );
});

test("GET .../records maps bad offsets and queries to 416 and 400", async () => {
  const { app } = await setup();
  const past = await errorOf(
    await app.request("/topics/orders/partitions/0/records?offset=5"),
  );
  assert.is(past.status, 416);
  assert.is(past.code, "offset_out_of_range");
  assert.is(past.logEndOffset, 0);

  for (
    const query of ["offset=-1", "offset=x", "maxRecords=0", "encoding=hex"]
  ) {
    const bad = await errorOf(
      await app.request(`/topics/orders/partitions/0/records?${query}`),
    );
    assert.is(bad.status, 400, query);
  }
  const partition = await errorOf(
    await app.request("/topics/orders/partitions/9/records?offset=0"),
  );
  assert.is(partition.status, 404);
  assert.is(partition.code, "unknown_partition");
});

test("GET /groups and GET /groups/:group describe groups", async () => {
  const { app, broker } = await setup();
  await broker.joinGroup("billing", "orders", {
    id: "m1",
    onAssignment: () => {},
    onRevocation: () => {},
  }, "earliest");
  const list = await (await app.request("/groups")).json() as {
    groups: { name: string; members: number }[];
  };
  assert.equal(list.groups.map((g) => [g.name, g.members]), [["billing", 1]]);
  const one = await (await app.request("/groups/billing")).json() as {
    members: { id: string; partitions: number[] }[];
  };
  assert.equal(one.members, [{
    id: "m1",
    topic: "orders",
    partitions: [0, 1],
  }]);
  const missing = await errorOf(await app.request("/groups/nope"));
  assert.is(missing.status, 404);
  assert.is(missing.code, "unknown_group");
});

test("createApp() with a token requires it everywhere but /health", async () => {
  const { app } = await setup({ token: "s3cret" });
  assert.is((await app.request("/health")).status, 200);
  const denied = await errorOf(await app.request("/topics"));
  assert.is(denied.status, 401);
  assert.is(denied.code, "unauthorized");
  const wrong = await app.request("/topics", {
    headers: { Authorization: "Bearer nope" },
  });
  assert.is(wrong.status, 401);
  const allowed = await app.request("/topics", {
    headers: { Authorization: "Bearer s3cret" },
  });
  assert.is(allowed.status, 200);
});

test("createApp() answers a malformed Authorization header with 401 JSON", async () => {
  const { app } = await setup({ token: "s3cret" });
  for (const header of ["Basic czNjcmV0", "Bearer", "Bearer a b", "s3cret"]) {
    const response = await app.request("/topics", {
      headers: { Authorization: header },
    });
    const denied = await errorOf(response);
    assert.is(denied.status, 401, header);
    assert.is(denied.code, "unauthorized", header);
    assert.ok(response.headers.get("WWW-Authenticate"), header);
  }
});

test("createApp() takes the token as ?token= on /ws only", async () => {
  const { app } = await setup({ token: "s3cret" });
  // No WebSocket helper here, so a request that passes auth finds no route.
  assert.is((await app.request("/ws?token=s3cret")).status, 404);
  assert.is((await app.request("/ws?token=wrong")).status, 401);
  assert.is((await app.request("/topics?token=s3cret")).status, 401);
});

test("createApp() answers CORS preflights and unknown routes", async () => {
  const { app } = await setup({ token: "s3cret" });
  const preflight = await app.request("/topics", {
    method: "OPTIONS",
    headers: {
      Origin: "http://example.test",
      "Access-Control-Request-Method": "GET",
    },
  });
  assert.is(preflight.status, 204);
  assert.is(preflight.headers.get("Access-Control-Allow-Origin"), "*");

  const open = await setup();
  const missing = await errorOf(await open.app.request("/nowhere"));
  assert.is(missing.status, 404);
  assert.is(missing.code, "not_found");
});

test("createApp() hides unexpected errors behind internal and logs them", async () => {
  const broker = new FakeBroker();
  broker.listTopics = () => {
    throw new Error("disk on fire at /secret/path");
  };
  const lines: string[] = [];
  const app = createApp(broker, {
    log: createLogger(
      (level, _scope, message, fields) =>
        lines.push(`${level} ${message} ${String(fields.error)}`),
      "error",
    ),
  });
  const response = await app.request("/topics");
  const body = await response.text();
  assert.is(response.status, 500);
  assert.equal(JSON.parse(body), {
    error: { code: "internal", message: "Internal error" },
  });
  assert.not.match(body, /secret/);
  assert.is(lines.length, 1);
  assert.match(lines[0], /error request failed .*disk on fire/);
});

test.run();
