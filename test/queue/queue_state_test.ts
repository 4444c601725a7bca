import { suite } from "uvu";
import * as assert from "uvu/assert";
import { DakgharError } from "../../src/errors.ts";
import {
  decodeQueueState,
  encodeQueueState,
  type QueueCursorState,
} from "../../src/queue/queue_state.ts";

const test = suite("queue_state");

test("decodeQueueState reads back what encodeQueueState wrote", () => {
  const state: QueueCursorState = {
    floor: 1200,
    read: 1440,
    delivered: 1450,
    settled: [1203, 1210, 1300, 1301],
    failures: [
      {
        offset: 1201,
        deliveries: 3,
        firstFailedAt: 1_733_300_000_000,
        error: "timeout upstream",
        dead: "",
        retryAt: 1_733_300_060_000,
      },
      {
        offset: 1202,
        deliveries: 1,
        firstFailedAt: 1_733_300_000_500,
        error: null,
        dead: "rejected",
        retryAt: 0,
      },
    ],
    deadLettered: 4,
    lostToRetention: 2,
  };
  assert.equal(decodeQueueState(encodeQueueState(state), "g.state"), state);
});

test("decodeQueueState refuses bytes that are not a state file", () => {
  for (
    const bytes of [
      new Uint8Array([0xc1]),
      encodeQueueState({
        floor: 0,
        delivered: 0,
        settled: [1],
        failures: [],
        deadLettered: 0,
        lostToRetention: 0,
      }),
    ]
  ) {
    try {
      decodeQueueState(bytes, "q/g.state");
      assert.unreachable("decoded");
    } catch (error) {
      assert.ok(error instanceof DakgharError);
      assert.is(error.code, "storage_error");
      assert.match(error.message, "q/g.state");
    }
  }
});

test.run();
