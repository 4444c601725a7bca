/**
 * The email service: consumes `orders` as a member of the consumer group
 * `email` over WebSocket, "sends" one email per order, and commits after each
 * batch. Stop it at any time: orders keep flowing into the broker, and when it
 * comes back it resumes from the group's committed offsets, so nothing is lost
 * and nothing is skipped. Run two of them and the group splits the partitions.
 * It may start before the order service: it creates the topic when missing.
 *
 *   deno run -A examples/email_service.ts
 *   node build/examples/email_service.js
 *
 * DAKGHAR_URL changes the broker's address (default http://127.0.0.1:8080).
 */
interface Socket {
  send(data: string): void;
  close(): void;
  onopen: (() => void) | null;
  onclose: (() => void) | null;
  onerror: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
}
type SocketConstructor = new (url: string) => Socket;

// Browsers and Deno have a global WebSocket; Node 20 takes the `ws` package.
const WebSocketImpl: SocketConstructor =
  (globalThis as { WebSocket?: SocketConstructor }).WebSocket ??
    ((await import("ws")).default as unknown as SocketConstructor);

const broker = readEnv("DAKGHAR_URL") ?? "http://127.0.0.1:8080";
const wsUrl = broker.replace(/^http/, "ws") + "/ws";
const creditRecords = 100;

// Create the topic once, as the order service does; 409 topic_exists means
// it exists. Any other failure is only logged: the subscribe then fails and
// is retried every second until the topic appears.
const subscribeId = 1;
try {
  const created = await fetch(`${broker}/topics`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: "orders", partitions: 3 }),
  });
  if (!created.ok && created.status !== 409) {
    console.error(`cannot create topic orders: ${await created.text()}`);
  }
} catch (error) {
  console.error(`cannot reach ${broker}: ${(error as Error).message}`);
}

/** Next offset expected per partition, to prove nothing is skipped. */
const expected = new Map<number, number>();
let sent = 0;

function connect(): void {
  const ws = new WebSocketImpl(wsUrl);
  ws.onopen = () => {
    console.log(`connected to ${wsUrl}, joining group email`);
    ws.send(JSON.stringify({
      op: "subscribe",
      id: subscribeId,
      topic: "orders",
      group: "email",
      from: "earliest",
      credit: creditRecords,
    }));
  };
  ws.onmessage = (event) => {
    const frame = JSON.parse(String(event.data));
    switch (frame.op) {
      case "assigned":
        for (const { partition, offset } of frame.partitions) {
          expected.set(partition, offset);
        }
        console.log(
          `assigned generation ${frame.generation}: ${
            frame.partitions.map((p: { partition: number; offset: number }) =>
              `partition ${p.partition} from offset ${p.offset}`
            ).join(", ") || "no partitions (more members than partitions)"
          }`,
        );
        break;
      case "reset":
        // Retention deleted records this member had not read yet.
        expected.set(frame.partition, frame.offset);
        console.log(
          `partition ${frame.partition} moved from offset ${frame.previousOffset} to ${frame.offset} (${frame.reason})`,
        );
        break;
      case "revoked":
        for (const partition of frame.partitions) expected.delete(partition);
        break;
      case "records": {
        for (const record of frame.records) {
          const want = expected.get(frame.partition);
          if (want !== undefined && record.offset !== want) {
            console.error(
              `GAP partition ${frame.partition}: expected offset ${want}, got ${record.offset}`,
            );
          }
          expected.set(frame.partition, record.offset + 1);
          const order = parseOrder(record.value);
          if (!order) {
            console.error(
              `not an order, skipped: partition ${frame.partition} offset ${record.offset}`,
            );
            continue;
          }
          sent++;
          console.log(
            `email to ${order.email}: order ${order.orderId} (${order.total}) [partition ${frame.partition} offset ${record.offset}, ${sent} sent]`,
          );
        }
        const last = frame.records[frame.records.length - 1].offset;
        ws.send(JSON.stringify({
          op: "commit",
          id: `c${last}`,
          sub: frame.sub,
          partition: frame.partition,
          offset: last + 1,
        }));
        ws.send(
          JSON.stringify({
            op: "credit",
            sub: frame.sub,
            records: frame.records.length,
          }),
        );
        break;
      }
      case "error":
        console.error(`broker error ${frame.code}: ${frame.message}`);
        // Without a subscription there is nothing to wait for: start over.
        if (frame.id === subscribeId) ws.close();
        break;
    }
  };
  ws.onerror = () => {};
  ws.onclose = () => {
    console.log("disconnected; reconnecting in 1 s");
    setTimeout(connect, 1000);
  };
}

connect();

interface Order {
  orderId: string;
  email: string;
  total: number;
}

function parseOrder(value: string | null): Order | undefined {
  try {
    const order = JSON.parse(value ?? "");
    return typeof order?.email === "string" ? order : undefined;
  } catch {
    return undefined;
  }
}

function readEnv(name: string): string | undefined {
  const deno =
    (globalThis as { Deno?: { env: { get(n: string): string | undefined } } })
      .Deno;
  return deno ? deno.env.get(name) : process.env[name];
}
