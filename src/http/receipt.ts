/**
 * Receipts: how an HTTP queue consumer names a delivery it settles. A
 * receipt is opaque to clients; today it is `<partition>.<offset>.<attempt>`,
 * e.g. `2.1041.1`, which is all the broker needs to find the delivery and
 * to refuse a settlement of an attempt that was redelivered since.
 */

/** The delivery a receipt names. */
export interface ReceiptTarget {
  partition: number;
  offset: number;
  /** The delivery count the record was handed out with, 1 or more. */
  attempt: number;
}

// Canonical decimal only, so that one delivery has exactly one receipt.
const receiptPattern =
  /^(0|[1-9][0-9]{0,15})\.(0|[1-9][0-9]{0,15})\.([1-9][0-9]{0,9})$/;

/**
 * The receipt of a delivery.
 *
 * @example formatReceipt({ partition: 2, offset: 1041, attempt: 1 }) // "2.1041.1"
 */
export function formatReceipt(target: ReceiptTarget): string {
  return `${target.partition}.${target.offset}.${target.attempt}`;
}

/**
 * Parses a receipt strictly.
 *
 * @returns the delivery it names, or undefined when it is not a receipt
 */
export function parseReceipt(receipt: unknown): ReceiptTarget | undefined {
  if (typeof receipt !== "string") return undefined;
  const match = receiptPattern.exec(receipt);
  if (match === null) return undefined;
  const [partition, offset, attempt] = match.slice(1).map(Number);
  if (
    !Number.isSafeInteger(offset) || !Number.isSafeInteger(attempt) ||
    partition > 0xffff
  ) {
    return undefined;
  }
  return { partition, offset, attempt };
}
