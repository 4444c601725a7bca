/**
 * The client in an edge function: HTTP only, with nothing but fetch. The
 * handler takes a JSON order in a POST and publishes it to `orders`, keyed
 * by customer, answering with where it landed. A broker error comes back
 * with its status and code.
 *
 * Deploy `handle` as the function's fetch handler (Deno Deploy, Cloudflare
 * Workers, Vercel Edge, …), or try it locally with Deno:
 *
 *   deno run -A examples/client_edge.ts       # serves on http://127.0.0.1:8000
 *   curl -X POST localhost:8000 -d '{"customer":"c-42","total":12.5}'
 */
import { createClient, DakgharClientError } from "../src/client/mod.ts";

const client = createClient({
  url: (globalThis as { DAKGHAR_URL?: string }).DAKGHAR_URL ??
    "http://127.0.0.1:8080",
});

/** Publishes the order in `request` and answers with its position. */
export async function handle(request: Request): Promise<Response> {
  if (request.method !== "POST") {
    return new Response("POST an order as JSON\n", { status: 405 });
  }
  const order = await request.json() as { customer?: string };
  try {
    const position = await client.publish("orders", {
      key: order.customer ?? null,
      value: order,
    });
    return Response.json(position);
  } catch (error) {
    if (!(error instanceof DakgharClientError)) throw error;
    return Response.json(
      { code: error.code, message: error.message },
      { status: error.status ?? 502 },
    );
  }
}

// Run as a script under Deno, serve the handler locally.
const deno = (globalThis as {
  Deno?: { serve(handler: (request: Request) => Promise<Response>): unknown };
}).Deno;
if (deno && (import.meta as { main?: boolean }).main) deno.serve(handle);
