/**
 * Expands role names through implication rules (`admin` implies `member` implies `reader`), following
 * chains to any depth. Pure: the caller supplies the rules as `prior -> implied[]`.
 */
export function expandRoles(
  roles: Iterable<string>,
  implies: ReadonlyMap<string, readonly string[]>,
): string[] {
  const seen = new Set<string>();
  const stack = [...roles];
  while (stack.length > 0) {
    const role = stack.pop() as string;
    if (seen.has(role)) continue;
    seen.add(role);
    for (const implied of implies.get(role) ?? []) if (!seen.has(implied)) stack.push(implied);
  }
  return [...seen].sort();
}

/** True when adding `prior -> implied` would close a cycle (a role implying itself through others). */
export function wouldCycle(
  prior: string,
  implied: string,
  implies: ReadonlyMap<string, readonly string[]>,
): boolean {
  return expandRoles([implied], implies).includes(prior);
}

/** The default implications of the reader/member/admin personas, as Keystone bootstraps them. */
export const DEFAULT_IMPLICATIONS: readonly (readonly [string, string])[] = [
  ['admin', 'member'],
  ['member', 'reader'],
];
