import { posix } from 'node:path';

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

/** What a tar entry means for the layer stack (OCI image spec, layer.md, "Whiteouts"). */
export type EntryMeaning =
  | { kind: 'entry' }
  | { kind: 'whiteout'; target: string }
  | { kind: 'opaque'; dir: string }
  /** Other `.wh..wh.` names are reserved (aufs hard-link bookkeeping): skipped. */
  | { kind: 'reserved' };

/** Classifies a normalized, layer-relative entry path. */
export function classifyEntry(path: string): EntryMeaning {
  const base = posix.basename(path);
  if (!base.startsWith(WHITEOUT)) return { kind: 'entry' };
  const dir = posix.dirname(path) === '.' ? '' : posix.dirname(path);
  if (base === OPAQUE) return { kind: 'opaque', dir };
  if (base.startsWith(`${WHITEOUT}${WHITEOUT}`)) return { kind: 'reserved' };
  const name = base.slice(WHITEOUT.length);
  if (name === '' || name === '.' || name === '..') return { kind: 'reserved' };
  return { kind: 'whiteout', target: dir ? `${dir}/${name}` : name };
}

/** One step of turning OCI whiteouts into overlayfs ones, run through an overlay mount of the layer on its parents. */
export type WhiteoutStep =
  /** Remove `path`, so overlayfs records a whiteout (a 0/0 character device) for it in the layer. */
  | { op: 'remove'; path: string }
  /**
   * Remove every name under directory `path` that the layer does not carry itself, and go on into the
   * layer's own subdirectories: the same view an opaque directory gives, built from plain whiteouts.
   */
  | { op: 'hide-lower'; path: string };

function under(path: string, dir: string): boolean {
  return dir === '' || path === dir || path.startsWith(`${dir}/`);
}

/**
 * Plans how a layer's whiteouts and opaque directories become overlayfs whiteouts. Only the kernel
 * writes those without extra tools (mknod for 0/0 devices, setfattr for `trusted.overlay.opaque`), so
 * the plan is carried out through an overlay mount of the layer on its parents: removing a name there
 * leaves the whiteout in the layer. Pure: it decides, the caller acts.
 *
 * Rules from the spec: whiteouts hide only what lies below, never entries of the same layer; an opaque
 * directory hides everything below it, so whiteouts and opaque markers under it add nothing; with no
 * parent there is nothing to hide and the plan is empty.
 */
export function planWhiteouts(input: {
  whiteouts: readonly string[];
  opaques: readonly string[];
  /** Paths this layer itself created (its own entries). */
  own: ReadonlySet<string>;
  hasParent: boolean;
}): WhiteoutStep[] {
  if (!input.hasParent) return [];
  const opaques = [...new Set(input.opaques)]
    .sort()
    .filter((d, i, all) => !all.slice(0, i).some((o) => o !== d && under(d, o)));
  const removals = [...new Set(input.whiteouts)]
    .filter((t) => !input.own.has(t) && !opaques.some((d) => under(t, d) && t !== d))
    .sort();
  return [
    ...removals.map((path): WhiteoutStep => ({ op: 'remove', path })),
    ...opaques.map((path): WhiteoutStep => ({ op: 'hide-lower', path })),
  ];
}
