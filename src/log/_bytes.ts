/**
 * Little-endian field access on raw bytes, shared by the record batch, the
 * queue cursor and the delay journal. 64-bit fields hold values below 2^53
 * and are read as two 32-bit halves.
 */

const TWO_32 = 0x1_0000_0000;

export function readU16(bytes: Uint8Array, position: number): number {
  return bytes[position] | (bytes[position + 1] << 8);
}

export function readU32(bytes: Uint8Array, position: number): number {
  return (bytes[position] | (bytes[position + 1] << 8) |
    (bytes[position + 2] << 16) | (bytes[position + 3] << 24)) >>> 0;
}

export function readI32(bytes: Uint8Array, position: number): number {
  return bytes[position] | (bytes[position + 1] << 8) |
    (bytes[position + 2] << 16) | (bytes[position + 3] << 24);
}

export function readI64(bytes: Uint8Array, position: number): number {
  return readU32(bytes, position) + readI32(bytes, position + 4) * TWO_32;
}

export function writeU16(
  bytes: Uint8Array,
  position: number,
  value: number,
): void {
  bytes[position] = value;
  bytes[position + 1] = value >>> 8;
}

export function writeU32(
  bytes: Uint8Array,
  position: number,
  value: number,
): void {
  bytes[position] = value;
  bytes[position + 1] = value >>> 8;
  bytes[position + 2] = value >>> 16;
  bytes[position + 3] = value >>> 24;
}

export function writeI64(
  bytes: Uint8Array,
  position: number,
  value: number,
): void {
  writeU32(bytes, position, value >>> 0);
  writeU32(bytes, position + 4, Math.floor(value / TWO_32));
}
