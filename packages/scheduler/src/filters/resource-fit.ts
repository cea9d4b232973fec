import type { ResourceColumn } from '../columns.js';
import { KEEP_ALL, withFilterKernel } from '../kernel.js';
import type { PlacementRequest } from '../model.js';
import { type Filter, type Rejection, reject } from '../plugin.js';

/** Beyond this many requested resource classes the kernel's bit mask of short resources would not fit. */
const MAX_KERNEL_RESOURCES = 16;

/** The requested resources the fit checks, in request order: those with a positive amount. */
function wantedOf(r: PlacementRequest): [string, number][] {
  return Object.entries(r.resources).filter(([, need]) => need > 0);
}

/**
 * Removes hosts without room for the request in every resource class, counting overcommit:
 * free = (capacity - reserved) x allocation ratio - allocated (Nova's resource filters, kube's NodeResourcesFit).
 * A resource the host does not have at all has no room.
 */
export function resourceFitFilter(): Filter {
  // The same request is checked against thousands of hosts in a row: list its resources once.
  let lastRequest: PlacementRequest | undefined;
  let wanted: [string, number][] = [];
  const filter: Filter = {
    name: 'ResourceFit',
    filter(c, r) {
      if (r !== lastRequest) {
        lastRequest = r;
        wanted = wantedOf(r);
      }
      const free = c.free;
      let missing: string[] | undefined;
      for (let i = 0; i < wanted.length; i++) {
        const [name, need] = wanted[i] as [string, number];
        if (need > (free[name] ?? 0)) {
          missing ??= [];
          missing.push(name);
        }
      }
      if (missing === undefined) return true;
      return reject(
        missing.map((name) => `insufficient ${name}`),
        missing
          .map(
            (name) =>
              `${name}: needs ${r.resources[name]}, ${free[name] ?? 0} free of ${c.usable[name] ?? 0} usable`,
          )
          .join('; '),
      );
    },
  };
  return withFilterKernel(filter, ({ columns, request }, rejections) => {
    const want = wantedOf(request);
    if (want.length > MAX_KERNEL_RESOURCES) return undefined;
    const free: Float64Array[] = [];
    for (const [name] of want) {
      const column: ResourceColumn | undefined = columns.resource(name);
      if (!column) return undefined;
      free.push(column.free);
    }
    const needs = Float64Array.from(want, ([, need]) => need);
    // A host's rejection depends only on which resources are short: one shared rejection per combination,
    // with the plugin's reasons (the per-host detail is rebuilt by the plugin if a failure is explained).
    const codeOfMask = new Int32Array(1 << want.length);
    const codeOf = (mask: number): number => {
      let code = codeOfMask[mask] as number;
      if (code === 0) {
        const reasons = want.filter((_, b) => mask & (1 << b)).map(([name]) => `insufficient ${name}`);
        code = rejections.push({ reasons } satisfies Rejection);
        codeOfMask[mask] = code;
      }
      return code;
    };
    const R = want.length;
    if (R === 0) return KEEP_ALL;
    if (R <= 4) {
      // Up to four resources (the usual three) without an inner loop. An unused slot repeats the first
      // column with a need of -Infinity, which is never short.
      const [f0, f1, f2, f3] = [0, 1, 2, 3].map((b) => free[b] ?? free[0]) as Float64Array[];
      const [n0, n1, n2, n3] = [0, 1, 2, 3].map((b) =>
        b < R ? needs[b] : Number.NEGATIVE_INFINITY,
      ) as number[];
      return {
        run: (hosts, m, codes) =>
          fitUpToFour(
            hosts,
            m,
            codes,
            codeOf,
            f0 as Float64Array,
            f1 as Float64Array,
            f2 as Float64Array,
            f3 as Float64Array,
            n0 as number,
            n1 as number,
            n2 as number,
            n3 as number,
          ),
      };
    }
    return {
      run(hosts, m, codes) {
        let kept = 0;
        for (let k = 0; k < m; k++) {
          const i = hosts[k] as number;
          let mask = 0;
          for (let b = 0; b < R; b++)
            if ((needs[b] as number) > ((free[b] as Float64Array)[i] as number)) mask |= 1 << b;
          if (mask === 0) hosts[kept++] = i;
          else codes[i] = codeOf(mask);
        }
        return kept;
      },
    };
  });
}

/**
 * The fit of up to four resources. A plain function taking everything as arguments: the columns and
 * needs stay in registers, where a closure would reload them from its context on every host.
 */
function fitUpToFour(
  hosts: Int32Array,
  m: number,
  codes: Int32Array,
  codeOf: (mask: number) => number,
  f0: Float64Array,
  f1: Float64Array,
  f2: Float64Array,
  f3: Float64Array,
  n0: number,
  n1: number,
  n2: number,
  n3: number,
): number {
  let kept = 0;
  for (let k = 0; k < m; k++) {
    const i = hosts[k] as number;
    const mask =
      (n0 > (f0[i] as number) ? 1 : 0) |
      (n1 > (f1[i] as number) ? 2 : 0) |
      (n2 > (f2[i] as number) ? 4 : 0) |
      (n3 > (f3[i] as number) ? 8 : 0);
    if (mask === 0) hosts[kept++] = i;
    else codes[i] = codeOf(mask);
  }
  return kept;
}
