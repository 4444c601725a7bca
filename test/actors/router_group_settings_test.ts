import { suite } from "uvu";
import * as assert from "uvu/assert";
import { type RouterActor, startRouter } from "../../actors/router_actor.ts";
import type { MemberHandle } from "../../src/broker.ts";
import { DakgharError } from "../../src/errors.ts";
import { silentLogger } from "../../src/logger.ts";
import { runtime } from "../../src/runtime/mod.ts";
import { makeTempDir, removeTempDir } from "../router/_temp_dir.ts";

// createGroup on groups that exist, through the real router: what is kept,
// what is refused, and which field a bad request names.
const test = suite(`router_group_settings (${runtime.name})`);

let dir = "";
let router: RouterActor | null = null;

async function start(): Promise<RouterActor> {
  router = await startRouter({ dataDir: dir, runtime, logger: silentLogger });
  await router.createTopic("orders");
  await router.createTopic("payments");
  return router;
}

test.before.each(() => {
  dir = makeTempDir("router-group-settings");
});
test.after.each(async () => {
  await router?.close();
  router = null;
  removeTempDir(dir);
});

async function refused(
  call: () => Promise<unknown>,
  code: string,
): Promise<DakgharError> {
  try {
    await call();
  } catch (error) {
    assert.instance(error, DakgharError);
    assert.is((error as DakgharError).code, code);
    return error as DakgharError;
  }
  return assert.unreachable(`not refused with ${code}`) as never;
}

const member: MemberHandle = {
  id: "m1",
  onAssignment() {},
  onRevocation() {},
};

test("createGroup() on a stream group a join made refuses another topic", async () => {
  const broker = await start();
  await broker.joinGroup("readers", "orders", member, "earliest");
  assert.is(broker.groupSettings("readers")?.from, null);
  await refused(
    () => broker.createGroup("readers", { topic: "payments", mode: "stream" }),
    "group_exists",
  );
  assert.is(broker.groupSettings("readers")?.topic, "orders");
  // The topic it reads is accepted, and gives the group its settings.
  const settings = await broker.createGroup("readers", {
    topic: "orders",
    mode: "stream",
  });
  assert.is(settings.topic, "orders");
  assert.is(broker.groupSettings("readers")?.topic, "orders");
  broker.leaveGroup("readers", "m1");
});

test("createGroup() again without from or filter keeps the stored ones", async () => {
  const broker = await start();
  const filter = { tags: ["eu"] };
  const first = await broker.createGroup("w", {
    topic: "orders",
    mode: "queue",
    from: "latest",
    filter,
  });
  const again = await broker.createGroup("w", {
    topic: "orders",
    mode: "queue",
    queue: { maxDeliveries: 3 },
  });
  assert.is(again.from, "latest");
  assert.equal(again.filter, first.filter);
  assert.is(again.queue?.maxDeliveries, 3);
  assert.equal(broker.groupSettings("w"), again);

  // The same filter given explicitly is fine; another one, or none, is not.
  await broker.createGroup("w", { topic: "orders", mode: "queue", filter });
  await refused(
    () =>
      broker.createGroup("w", {
        topic: "orders",
        mode: "queue",
        filter: { tags: ["us"] },
      }),
    "group_exists",
  );
  await refused(
    () =>
      broker.createGroup("w", { topic: "orders", mode: "queue", filter: null }),
    "group_exists",
  );
  assert.is(broker.groupSettings("w")?.from, "latest");
});

test("createGroup() with a bad group name names the group, not a setting", async () => {
  const broker = await start();
  for (const name of ["bad name", "g".repeat(300), ".."]) {
    const error = await refused(
      () => broker.createGroup(name, { topic: "orders", mode: "queue" }),
      "bad_request",
    );
    assert.equal(error.context, { group: name }, name);
    assert.match(error.message, "Invalid group name");
  }
});

test.run();
