/**
 * The order service: publishes orders to the `orders` topic over plain HTTP,
 * with nothing but fetch, the way an edge function would. Each order is keyed
 * by its customer, so one customer's orders stay in one partition, in order.
 *
 *   deno run -A examples/order_service.ts [count] [intervalMs]
 *   node build/examples/order_service.js [count] [intervalMs]
 *
 * DAKGHAR_URL changes the broker's address (default http://127.0.0.1:8080).
 */
const broker = readEnv("DAKGHAR_URL") ?? "http://127.0.0.1:8080";
const args = readArgs();
const count = Number(args[0] ?? 100);
const intervalMs = Number(args[1] ?? 200);

// Create the topic once; 409 topic_exists means an earlier run did it.
const created = await fetch(`${broker}/topics`, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ name: "orders", partitions: 3 }),
});
if (!created.ok && created.status !== 409) {
  throw new Error(`Cannot create topic orders: ${await created.text()}`);
}

for (let i = 0; i < count; i++) {
  const customer = `customer-${i % 7}`;
  const order = {
    orderId: `${Date.now().toString(36)}-${i}`,
    customer,
    email: `${customer}@example.com`,
    total: Math.round(1000 + (i * 7919) % 9000) / 100,
  };
  const response = await fetch(`${broker}/topics/orders/records`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ key: customer, value: order }),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(`Publish failed: ${JSON.stringify(body)}`);
  const { partition, offset } = body.offsets[0];
  console.log(
    `order ${order.orderId} for ${customer} -> partition ${partition} offset ${offset}`,
  );
  await new Promise((resolve) => setTimeout(resolve, intervalMs));
}

function readEnv(name: string): string | undefined {
  const deno =
    (globalThis as { Deno?: { env: { get(n: string): string | undefined } } })
      .Deno;
  return deno ? deno.env.get(name) : process.env[name];
}

function readArgs(): string[] {
  const deno = (globalThis as { Deno?: { args: string[] } }).Deno;
  return deno ? deno.args : process.argv.slice(2);
}
