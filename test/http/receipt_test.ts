import { suite } from "uvu";
import * as assert from "uvu/assert";
import { formatReceipt, parseReceipt } from "../../src/http/receipt.ts";

const test = suite("receipt");

test("formatReceipt() and parseReceipt() round-trip a delivery", () => {
  for (
    const target of [
      { partition: 0, offset: 0, attempt: 1 },
      { partition: 1023, offset: Number.MAX_SAFE_INTEGER, attempt: 70 },
    ]
  ) {
    assert.equal(parseReceipt(formatReceipt(target)), target);
  }
  assert.is(
    formatReceipt({ partition: 2, offset: 1041, attempt: 1 }),
    "2.1041.1",
  );
});

test("parseReceipt() accepts only the canonical form", () => {
  for (
    const receipt of [
      "",
      "1.2",
      "1.2.3.4",
      "01.2.3",
      "1.02.3",
      "1.2.0",
      "1.2.03",
      "-1.2.3",
      "1.2.3 ",
      "1.2.3\n",
      "1e3.2.3",
      "65536.0.1",
      "0.9007199254740992.1",
      "0.0.99999999999",
      12,
      null,
      ["1.2.3"],
    ]
  ) {
    assert.is(parseReceipt(receipt), undefined, JSON.stringify(receipt));
  }
});

test.run();
