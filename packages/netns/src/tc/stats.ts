/** Statistics of a qdisc (`tc -s -json qdisc show`). */
export interface QdiscStats {
  kind: string;
  handle: string;
  /** Parent handle, or `root`. */
  parent: string;
  bytes: number;
  packets: number;
  drops: number;
  overlimits: number;
  requeues: number;
  backlog: number;
  qlen: number;
}

/** Statistics of a class (`tc -s class show`). */
export interface ClassStats {
  kind: string;
  /** `1:10` */
  classid: string;
  /** Parent class id, or `root`. */
  parent: string;
  /** Configured rate as tc prints it (`10Mbit`). */
  rate?: string;
  /** Configured ceiling as tc prints it. */
  ceil?: string;
  bytes: number;
  packets: number;
  drops: number;
  overlimits: number;
  backlog: number;
}

interface RawQdisc {
  kind: string;
  handle: string;
  root?: boolean;
  parent?: string;
  bytes?: number;
  packets?: number;
  drops?: number;
  overlimits?: number;
  requeues?: number;
  backlog?: number;
  qlen?: number;
}

/** Parses `tc -s -json qdisc show`. */
export function parseQdiscStats(raw: readonly unknown[]): QdiscStats[] {
  return (raw as RawQdisc[]).map((q) => ({
    kind: q.kind,
    handle: q.handle,
    parent: q.root ? 'root' : (q.parent ?? ''),
    bytes: q.bytes ?? 0,
    packets: q.packets ?? 0,
    drops: q.drops ?? 0,
    overlimits: q.overlimits ?? 0,
    requeues: q.requeues ?? 0,
    backlog: q.backlog ?? 0,
    qlen: q.qlen ?? 0,
  }));
}

/**
 * Parses the text of `tc -s class show`. Text, not JSON, because iproute2 6.1 prints htb classes
 * as text even with `-json`.
 */
export function parseClassStats(text: string): ClassStats[] {
  const blocks = text.split(/\n(?=class )/).filter((b) => b.startsWith('class '));
  return blocks.map((block) => {
    const head = /^class (\S+) (\S+) (?:parent (\S+)|root)/.exec(block);
    const sent = /Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)/.exec(block);
    const backlog = /backlog (\d+)b/.exec(block);
    const rate = / rate (\S+)/.exec(block);
    const ceil = / ceil (\S+)/.exec(block);
    return {
      kind: head?.[1] ?? 'unknown',
      classid: head?.[2] ?? '',
      parent: head?.[3] ?? 'root',
      ...(rate ? { rate: rate[1] as string } : {}),
      ...(ceil ? { ceil: ceil[1] as string } : {}),
      bytes: Number(sent?.[1] ?? 0),
      packets: Number(sent?.[2] ?? 0),
      drops: Number(sent?.[3] ?? 0),
      overlimits: Number(sent?.[4] ?? 0),
      backlog: Number(backlog?.[1] ?? 0),
    };
  });
}
