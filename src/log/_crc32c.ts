/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of the
 * record batch format. Slicing-by-8: eight 256-entry tables let the loop
 * consume eight bytes per step, several times faster than the bytewise
 * table in plain JavaScript.
 *
 * Known answer: crc32c("123456789") = 0xE3069283.
 */

const POLYNOMIAL = 0x82f63b78;

/** Table k maps a byte to its CRC contribution k bytes further back. */
const tables = buildTables();

function buildTables(): Uint32Array {
  const t = new Uint32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLYNOMIAL : c >>> 1;
    t[n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n];
    for (let k = 1; k < 8; k++) {
      c = t[c & 0xff] ^ (c >>> 8);
      t[k * 256 + n] = c >>> 0;
    }
  }
  return t;
}

/**
 * Computes the CRC-32C of `bytes[start, end)`.
 *
 * @param bytes the data
 * @param start first byte included (default 0)
 * @param end first byte excluded (default `bytes.length`)
 * @returns the checksum as an unsigned 32-bit number
 */
export function crc32c(
  bytes: Uint8Array,
  start = 0,
  end: number = bytes.length,
): number {
  const t = tables;
  let crc = 0xffffffff;
  let i = start;

  // Eight bytes per step while eight remain, then the tail bytewise.
  const fastEnd = end - 8;
  while (i <= fastEnd) {
    const a = (crc ^ (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) |
      (bytes[i + 3] << 24))) >>> 0;
    crc = t[1792 + (a & 0xff)] ^ t[1536 + ((a >>> 8) & 0xff)] ^
      t[1280 + ((a >>> 16) & 0xff)] ^ t[1024 + (a >>> 24)] ^
      t[768 + bytes[i + 4]] ^ t[512 + bytes[i + 5]] ^
      t[256 + bytes[i + 6]] ^ t[bytes[i + 7]];
    i += 8;
  }
  while (i < end) {
    crc = t[(crc ^ bytes[i++]) & 0xff] ^ (crc >>> 8);
  }
  return (crc ^ 0xffffffff) >>> 0;
}
