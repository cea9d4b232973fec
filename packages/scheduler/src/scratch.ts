/**
 * Typed arrays reused from one pick to the next. A decision over 100,000 hosts needs a dozen arrays of
 * that length; allocating (and zeroing) them per pick showed up as garbage-collector time. Arrays only
 * grow, and their contents are garbage until written.
 */
export class Scratch {
  private readonly intArrays = new Map<string, Int32Array>();
  private readonly floatArrays = new Map<string, Float64Array>();

  /** An `Int32Array` of at least `length` elements, named so that two uses in one pick never share one. */
  ints(name: string, length: number): Int32Array {
    let a = this.intArrays.get(name);
    if (!a || a.length < length) {
      a = new Int32Array(grow(length));
      this.intArrays.set(name, a);
    }
    return a;
  }

  /** A `Float64Array` of at least `length` elements (see {@link Scratch.ints}). */
  floats(name: string, length: number): Float64Array {
    let a = this.floatArrays.get(name);
    if (!a || a.length < length) {
      a = new Float64Array(grow(length));
      this.floatArrays.set(name, a);
    }
    return a;
  }
}

/** Some headroom, so a host list that grows by a few hosts does not reallocate every time. */
function grow(length: number): number {
  return Math.max(16, Math.ceil(length * 1.25));
}
