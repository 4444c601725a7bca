/** A small seeded generator (mulberry32) so randomized tests can be replayed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed from DAKGHAR_SEED when set, else a fresh one; printed by the caller. */
export function pickSeed(): number {
  const env =
    (globalThis as { Deno?: { env: { get(n: string): string | undefined } } })
      .Deno?.env.get("DAKGHAR_SEED") ??
      (globalThis as { process?: { env: Record<string, string | undefined> } })
        .process?.env.DAKGHAR_SEED;
  return env ? Number(env) : Math.floor(Math.random() * 2 ** 31);
}
