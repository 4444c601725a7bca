import { suite } from "uvu";
import * as assert from "uvu/assert";
import {
  defaultPartitionLogConfig,
  PartitionLog,
  type PartitionLogConfig,
} from "../../src/log/partition_log.ts";
import { silentLogger } from "../../src/logger.ts";
import { batchOf, fileSystem as fs, temporaryDir } from "./_helpers.ts";

const test = suite("partition_log_retention_guard");

function withLog(
  config: Partial<PartitionLogConfig>,
  body: (log: PartitionLog) => void,
): void {
  const dir = temporaryDir();
  const log = PartitionLog.open(
    fs,
    `${dir}/topic/0`,
    {
      ...defaultPartitionLogConfig,
      segmentBytes: batchOf(2, "r", 100).length * 2,
      retentionMs: 1000,
      flush: "interval",
      ...config,
    },
    silentLogger,
  );
  try {
    body(log);
  } finally {
    log.close();
    fs.remove(dir);
  }
}

/** Three segments of 4 records each: [0, 4), [4, 8), [8, 12). */
function fill(log: PartitionLog): void {
  for (let i = 0; i < 6; i++) log.append(batchOf(2, "r", 100), 10_000);
}

test("maybeApplyRetention() keeps segments at or above the unsettled floor", () => {
  withLog({}, (log) => {
    fill(log);
    log.maybeApplyRetention(1_000_000, 3);
    assert.is(log.logStartOffset, 0, "offset 3 is in the first segment");
    log.maybeApplyRetention(1_000_000, 4);
    assert.is(log.logStartOffset, 4);
    log.maybeApplyRetention(1_000_000, 7);
    assert.is(log.logStartOffset, 4);
    log.maybeApplyRetention(1_000_000);
    assert.is(log.logStartOffset, 8, "no queue group: plain retention");
  });
});

test("maybeApplyRetention() with retentionDropsUnsettled ignores the floor", () => {
  withLog({ retentionDropsUnsettled: true }, (log) => {
    fill(log);
    log.maybeApplyRetention(1_000_000, 0);
    assert.is(log.logStartOffset, 8);
  });
});

test.run();
