/** Path helpers shared by the Node and Deno file systems. */

/** Parent directory of a "/"-joined path. */
export function parentOf(path: string): string {
  const slash = path.lastIndexOf("/");
  if (slash > 0) return path.slice(0, slash);
  return slash === 0 ? "/" : ".";
}

let temporaryCounter = 0;

/**
 * A name beside `path` that no other writer uses at the same time: the
 * process id tells processes apart, the counter tells writers apart.
 */
export function temporaryPathFor(path: string, pid: number): string {
  temporaryCounter = (temporaryCounter + 1) % 1_000_000;
  return `${path}.${pid}-${temporaryCounter}.tmp`;
}
