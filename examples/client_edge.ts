/**
 * The client in an edge function: HTTP only, with nothing but fetch. The
 * handler takes a JSON order in a POST and publishes it to `orders`, keyed
 * by customer, answering with where it landed. A GET consumes: as member
 * `edge-billing` of group `billing` it long-polls up to 10 orders, handles
 * them and commits them. A broker error comes back with its status and code.
 *
 * Deploy `handle` as the function's fetch handler (Deno Deploy, Cloudflare
 * Workers, Vercel Edge, …), or try it locally with Deno:
 *
 *   deno run -A examples/client_edge.ts       # serves on http://127.0.0.1:8000
 *   curl -X POST localhost:8000 -d '{"customer":"c-42","total":12.5}'
 *   curl localhost:8000                       # consumes what was published
 */
import {
  createClient,
  DakgharClientError,
  type GroupMember,
} from "../src/client/mod.ts";

const client = createClient({
  url: (globalThis as { DAKGHAR_URL?: string }).DAKGHAR_URL ??
    "http://127.0.0.1:8080",
});

/** The group member, kept while this instance stays warm. */
let member: GroupMember | undefined;

/** Fetches up to 10 orders as a group member, handles and commits them. */
async function consume(): Promise<Response> {
  // A fixed member id: a cold start takes the member over, partitions and all.
  member ??= await client.joinGroup("billing", {
    topic: "orders",
    memberId: "edge-billing",
    from: "earliest",
  });
  let fetched;
  try {
    fetched = await member.fetch({ maxRecords: 10, maxWaitMs: 5_000 });
  } catch (error) {
    // Not heard from within its session timeout: join again next time.
    if (error instanceof DakgharClientError && error.code === "not_found") {
      member = undefined;
    }
    throw error;
  }
  const orders = fetched.records.map((record) => record.json());
  await member.commit(fetched.records);
  return Response.json({ orders });
}

/** Publishes the order in a POST, consumes orders on a GET. */
export async function handle(request: Request): Promise<Response> {
  if (request.method === "GET") {
    try {
      return await consume();
    } catch (error) {
      return errorResponse(error);
    }
  }
  if (request.method !== "POST") {
    return new Response("POST an order as JSON, or GET orders\n", {
      status: 405,
    });
  }
  const order = await request.json() as { customer?: string };
  try {
    const position = await client.publish("orders", {
      key: order.customer ?? null,
      value: order,
    });
    return Response.json(position);
  } catch (error) {
    return errorResponse(error);
  }
}

/** A broker error with its status and code; anything else is rethrown. */
function errorResponse(error: unknown): Response {
  if (!(error instanceof DakgharClientError)) throw error;
  return Response.json(
    { code: error.code, message: error.message },
    { status: error.status ?? 502 },
  );
}

// Run as a script under Deno, serve the handler locally.
const deno = (globalThis as {
  Deno?: { serve(handler: (request: Request) => Promise<Response>): unknown };
}).Deno;
if (deno && (import.meta as { main?: boolean }).main) deno.serve(handle);
