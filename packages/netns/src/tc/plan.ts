import type { Argv } from '../ip/ip.js';
import { ipFamily } from '../names.js';
import { renderRate, renderSize } from '../units.js';
import type { ParsedQos } from './spec.js';

/** A qdisc as `tc -json qdisc show` reports it (the fields planning needs). */
export interface QdiscInfo {
  kind: string;
  handle: string;
  root?: boolean;
  parent?: string;
}

/** The `tc` lines that make a device's QoS match a spec, and the ifb device it needs, if any. */
export interface QosPlan {
  /** An ifb device that must exist (and be up) before the lines run. */
  ifb?: string;
  /** `tc` lines, in order, for one `tc -batch`. */
  lines: Argv[];
}

const DEFAULT_CLASS = 0x1000;

/** Bucket size: 10 ms worth of `rate`, and at least 16 KiB so one GSO burst fits. */
export function defaultBurst(bitsPerSecond: number): number {
  return Math.max(Math.ceil(bitsPerSecond / 8 / 100), 16 * 1024);
}

/** The default ifb device name for a device. */
export function ifbName(dev: string): string {
  return `ifb-${dev.slice(0, 11)}`;
}

/** Lines that remove what the library may have put on `dev` (root and ingress qdiscs). */
export function clearLines(dev: string, current: readonly QdiscInfo[]): Argv[] {
  const lines: Argv[] = [];
  // A device with only the kernel's default root qdisc has handle 0: and nothing to delete.
  if (current.some((q) => q.root && q.handle !== '0:')) lines.push(['qdisc', 'del', 'dev', dev, 'root']);
  if (current.some((q) => q.kind === 'ingress' || q.kind === 'clsact'))
    lines.push(['qdisc', 'del', 'dev', dev, 'ingress']);
  return lines;
}

function netemArgs(netem: NonNullable<ParsedQos['netem']>): string[] {
  return [
    'netem',
    'delay',
    `${netem.delayMs}ms`,
    ...(netem.jitterMs > 0 ? [`${netem.jitterMs}ms`] : []),
    ...(netem.lossPercent > 0 ? ['loss', `${netem.lossPercent}%`] : []),
  ];
}

function egressLines(
  dev: string,
  egress: NonNullable<ParsedQos['egress']>,
  netem: ParsedQos['netem'],
): Argv[] {
  const burst = egress.burst ?? defaultBurst(egress.rate);
  const useHtb =
    egress.qdisc === 'htb' ||
    (egress.qdisc === undefined && (egress.ceil !== undefined || egress.classes.length > 0));
  if (!useHtb) {
    const lines: Argv[] = [
      [
        'qdisc',
        'add',
        'dev',
        dev,
        'root',
        'handle',
        '1:',
        'tbf',
        'rate',
        renderRate(egress.rate),
        'burst',
        renderSize(burst),
        'latency',
        `${egress.latencyMs}ms`,
      ],
    ];
    if (netem)
      lines.push(['qdisc', 'add', 'dev', dev, 'parent', '1:1', 'handle', '10:', ...netemArgs(netem)]);
    return lines;
  }
  const ceil = Math.max(egress.ceil ?? egress.rate, egress.rate);
  const hex = (n: number) => n.toString(16);
  const lines: Argv[] = [
    ['qdisc', 'add', 'dev', dev, 'root', 'handle', '1:', 'htb', 'default', hex(DEFAULT_CLASS)],
    [
      'class',
      'add',
      'dev',
      dev,
      'parent',
      '1:',
      'classid',
      '1:1',
      'htb',
      'rate',
      renderRate(ceil),
      'ceil',
      renderRate(ceil),
      'burst',
      renderSize(burst),
      'cburst',
      renderSize(burst),
    ],
    [
      'class',
      'add',
      'dev',
      dev,
      'parent',
      '1:1',
      'classid',
      `1:${hex(DEFAULT_CLASS)}`,
      'htb',
      'rate',
      renderRate(egress.rate),
      'ceil',
      renderRate(ceil),
      'burst',
      renderSize(burst),
      'cburst',
      renderSize(burst),
    ],
  ];
  if (netem)
    lines.push([
      'qdisc',
      'add',
      'dev',
      dev,
      'parent',
      `1:${hex(DEFAULT_CLASS)}`,
      'handle',
      '10:',
      ...netemArgs(netem),
    ]);
  egress.classes.forEach((c, i) => {
    const classBurst = c.burst ?? defaultBurst(c.rate);
    const classCeil = Math.max(c.ceil ?? ceil, c.rate);
    lines.push([
      'class',
      'add',
      'dev',
      dev,
      'parent',
      '1:1',
      'classid',
      `1:${hex(c.id)}`,
      'htb',
      'rate',
      renderRate(c.rate),
      'ceil',
      renderRate(classCeil),
      'burst',
      renderSize(classBurst),
      'cburst',
      renderSize(classBurst),
    ]);
    for (const [direction, cidr] of [
      ['dst', c.match.dst],
      ['src', c.match.src],
    ] as const) {
      if (!cidr) continue;
      const v6 = ipFamily(cidr) === 6;
      lines.push([
        'filter',
        'add',
        'dev',
        dev,
        'parent',
        '1:',
        'protocol',
        v6 ? 'ipv6' : 'ip',
        'prio',
        String(i + 1),
        'u32',
        'match',
        v6 ? 'ip6' : 'ip',
        direction,
        cidr,
        'flowid',
        `1:${hex(c.id)}`,
      ]);
    }
  });
  return lines;
}

/**
 * Plans the `tc` lines for one device's QoS. Pure. Existing root and ingress qdiscs are removed
 * first, so applying is a replacement: the result depends only on the spec, never on history.
 */
export function planQos(qos: ParsedQos, current: readonly QdiscInfo[]): QosPlan {
  const dev = qos.dev;
  const lines: Argv[] = clearLines(dev, current);
  if (qos.egress) lines.push(...egressLines(dev, qos.egress, qos.netem));
  else if (qos.netem)
    lines.push(['qdisc', 'add', 'dev', dev, 'root', 'handle', '1:', ...netemArgs(qos.netem)]);
  if (!qos.ingress) return { lines };
  const burst = qos.ingress.burst ?? defaultBurst(qos.ingress.rate);
  lines.push(['qdisc', 'add', 'dev', dev, 'handle', 'ffff:', 'ingress']);
  // u32 "match u32 0 0" matches every packet and, unlike matchall, exists in every kernel config.
  const all = [
    'filter',
    'add',
    'dev',
    dev,
    'parent',
    'ffff:',
    'protocol',
    'all',
    'prio',
    '1',
    'u32',
    'match',
    'u32',
    '0',
    '0',
  ];
  if (qos.ingress.mode === 'police') {
    lines.push([
      ...all,
      'action',
      'police',
      'rate',
      renderRate(qos.ingress.rate),
      'burst',
      renderSize(burst),
      'conform-exceed',
      'drop',
    ]);
    return { lines };
  }
  const ifb = qos.ingress.ifb ?? ifbName(dev);
  lines.push([...all, 'action', 'mirred', 'egress', 'redirect', 'dev', ifb]);
  return {
    ifb,
    lines: [
      ...lines,
      [
        'qdisc',
        'replace',
        'dev',
        ifb,
        'root',
        'handle',
        '1:',
        'tbf',
        'rate',
        renderRate(qos.ingress.rate),
        'burst',
        renderSize(burst),
        'latency',
        '50ms',
      ],
    ],
  };
}
