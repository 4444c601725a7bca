import { suite } from "uvu";
import * as assert from "uvu/assert";
import { DakgharClientError } from "../../src/client/errors.ts";
import { withBroker } from "./_broker.ts";

const test = suite("GroupMember");

test("joinGroup() fetches, commits, heartbeats and leaves over HTTP alone", async () => {
  await withBroker(async ({ client }) => {
    await client.createTopic("orders", { partitions: 2 });
    await client.publishBatch("orders", [
      { value: { total: 1 }, partition: 0 },
      { value: new Uint8Array([0, 255]), partition: 1, key: "k" },
      { value: "c", partition: 0, headers: { trace: "t" } },
    ]);
    const member = await client.joinGroup("billing", {
      topic: "orders",
      from: "earliest",
    });
    assert.equal(member.assignment.map((a) => a.partition), [0, 1]);
    assert.is(member.sessionTimeoutMs, 45_000);

    const { records, generation } = await member.fetch({ maxRecords: 10 });
    assert.is(records.length, 3);
    const byPosition = new Map(
      records.map((r) => [`${r.partition}:${r.offset}`, r]),
    );
    assert.equal(byPosition.get("0:0")!.json(), { total: 1 });
    assert.equal([...byPosition.get("1:0")!.value!], [0, 255]);
    assert.is(byPosition.get("1:0")!.key, "k");
    assert.equal(byPosition.get("0:1")!.headers, { trace: "t" });
    assert.is(byPosition.get("0:1")!.topic, "orders");

    await member.commit(records, generation);
    const group = await client.describeGroup("billing");
    assert.equal(group.partitions.map((p) => p.committedOffset), [2, 1]);

    await member.heartbeat();
    assert.is(member.generation, generation);
    await member.leave();
    try {
      await member.heartbeat();
      assert.unreachable("a member that left answered");
    } catch (error) {
      assert.instance(error, DakgharClientError);
      assert.is((error as DakgharClientError).code, "not_found");
      assert.is((error as DakgharClientError).status, 404);
    }
  });
});

test.run();
