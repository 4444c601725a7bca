/**
 * Pieces every measurement shares: topic administration over HTTP, record
 * values of a given size, a bounded pipeline of requests in flight and a
 * watchdog so nothing waits forever on a stuck broker.
 */

/** What one timed run moved. */
export interface Throughput {
  records: number;
  /** Bytes of record values (keys and framing not counted). */
  valueBytes: number;
  seconds: number;
}

/** The topic settings the bench varies; the rest keep the broker's defaults. */
export interface BenchTopicConfig {
  partitions: number;
  /** "sync" (the default: fsync before ack) or "interval". */
  flush: "sync" | "interval";
}

/**
 * Creates a topic for one measurement.
 *
 * @param url the broker's `http://host:port`
 * @param name topic name
 * @param config partition count and flush policy
 * @throws {Error} when the broker refuses
 */
export async function createTopic(
  url: string,
  name: string,
  config: BenchTopicConfig,
): Promise<void> {
  const response = await fetch(`${url}/topics`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name, ...config }),
    signal: AbortSignal.timeout(30_000),
  });
  if (response.status !== 201) {
    throw new Error(
      `Cannot create topic ${name}: ${response.status} ${await response
        .text()}`,
    );
  }
}

/** Deletes a topic and its files, so long runs do not fill the disk. */
export async function deleteTopic(url: string, name: string): Promise<void> {
  const response = await fetch(`${url}/topics/${name}`, {
    method: "DELETE",
    signal: AbortSignal.timeout(60_000),
  });
  if (response.status !== 204) {
    throw new Error(
      `Cannot delete topic ${name}: ${response.status} ${await response
        .text()}`,
    );
  }
}

/** An ASCII string of `bytes` characters, so its UTF-8 form has exactly that size. */
export function valueText(bytes: number): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  let text = "";
  for (let i = 0; i < bytes; i++) text += alphabet[i % alphabet.length];
  return text;
}

/**
 * Keeps `inFlight` requests going until `deadline` (a `performance.now()`
 * time) or until `requestsMax` were issued, then waits for the last ones.
 *
 * @param issue sends one request and resolves with the records it carried
 * @returns records acknowledged and the seconds from start to the last reply
 */
export async function pipeline(
  inFlight: number,
  deadline: number,
  requestsMax: number,
  issue: () => Promise<number>,
): Promise<{ records: number; seconds: number }> {
  const start = performance.now();
  let issued = 0;
  let records = 0;
  const worker = async () => {
    while (performance.now() < deadline && issued < requestsMax) {
      issued++;
      // Not `records += await issue()`: that reads `records` before the
      // await and loses what the other workers added meanwhile.
      const carried = await issue();
      records += carried;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return { records, seconds: (performance.now() - start) / 1000 };
}

/**
 * Rejects when `promise` has not settled within `ms`; the bench then stops
 * the broker rather than wait on it.
 */
export function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`Timed out after ${ms} ms: ${what}`)),
      ms,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
