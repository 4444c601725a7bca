import { suite } from "uvu";
import * as assert from "uvu/assert";
import { crc32c } from "../../src/log/_crc32c.ts";

const test = suite("crc32c");
const text = (s: string) => new TextEncoder().encode(s);

test("crc32c() matches the known answer for 123456789", () => {
  assert.is(crc32c(text("123456789")), 0xe3069283);
});

test("crc32c() matches the RFC 3720 vectors", () => {
  const ascending = new Uint8Array(32).map((_, i) => i);
  const descending = new Uint8Array(32).map((_, i) => 31 - i);
  assert.is(crc32c(new Uint8Array(32)), 0x8a9136aa);
  assert.is(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  assert.is(crc32c(ascending), 0x46dd794e);
  assert.is(crc32c(descending), 0x113fdb5c);
  assert.is(crc32c(new Uint8Array(0)), 0);
});

test("crc32c() over a range equals crc32c() of the subarray at every alignment", () => {
  const bytes = new Uint8Array(100).map((_, i) => (i * 37 + 11) & 0xff);
  for (let start = 0; start < 20; start++) {
    for (let end = start; end <= 100; end += 7) {
      assert.is(
        crc32c(bytes, start, end),
        crc32c(bytes.slice(start, end)),
        `range [${start}, ${end})`,
      );
    }
  }
});

test("crc32c() agrees with a bytewise reference", () => {
  const reference = (bytes: Uint8Array) => {
    let crc = 0xffffffff;
    for (const byte of bytes) {
      crc ^= byte;
      for (let k = 0; k < 8; k++) {
        crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
      }
    }
    return (crc ^ 0xffffffff) >>> 0;
  };
  for (let length = 0; length < 70; length++) {
    const bytes = new Uint8Array(length).map((_, i) =>
      (i * 151 + length) & 0xff
    );
    assert.is(crc32c(bytes), reference(bytes), `length ${length}`);
  }
});

test.run();
