/**
 * Small statistics for the benchmark: medians over runs and percentiles
 * over latency samples.
 */

/** The median, smallest and largest of a list of run figures. */
export interface Spread {
  median: number;
  min: number;
  max: number;
}

/**
 * Summarizes run figures.
 *
 * @param values one figure per run, at least one
 * @returns median (mean of the middle two for an even count), min and max
 */
export function spread(values: number[]): Spread {
  if (values.length === 0) throw new RangeError("Cannot summarize: no values");
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  const median = sorted.length % 2 === 1
    ? sorted[middle]
    : (sorted[middle - 1] + sorted[middle]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1] };
}

/**
 * The q-quantile of samples by the nearest-rank method.
 *
 * @param sorted samples in ascending order
 * @param q between 0 and 1, e.g. 0.99
 * @returns the sample at rank ⌈q·n⌉, or NaN without samples
 */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1];
}

/**
 * Formats a figure for the table: thousands separators for large numbers,
 * a few significant digits for small ones.
 */
export function formatFigure(value: number): string {
  if (!Number.isFinite(value)) return "-";
  if (Math.abs(value) >= 1000) return Math.round(value).toLocaleString("en-US");
  if (Math.abs(value) >= 100) return value.toFixed(0);
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

/**
 * Lays out rows as a plain text table with aligned columns; the first row
 * is the header.
 */
export function formatTable(rows: string[][]): string {
  const widths = rows[0].map((_, column) =>
    Math.max(...rows.map((row) => (row[column] ?? "").length))
  );
  const line = (row: string[]) =>
    row.map((cell, column) =>
      column === 0 || column === 1
        ? cell.padEnd(widths[column])
        : cell.padStart(widths[column])
    ).join("  ").trimEnd();
  return [
    line(rows[0]),
    widths.map((width) => "-".repeat(width)).join("  "),
    ...rows.slice(1).map(line),
  ].join("\n");
}
