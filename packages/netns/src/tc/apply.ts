import { NubesError } from '@nubes/core';
import type { Iproute } from '../ip/ip.js';
import { clearLines, planQos, type QdiscInfo } from './plan.js';
import type { ParsedQos } from './spec.js';
import { type ClassStats, parseClassStats, parseQdiscStats, type QdiscStats } from './stats.js';

const MISSING_FEATURE =
  /qdisc kind is unknown|Failed to load TC action module|TC classifier not found|Unknown action/i;

/** Turns "the kernel lacks this qdisc/action/classifier" into `Unsupported`; other errors pass through. */
export function classifyTcError(error: unknown): unknown {
  if (error instanceof NubesError && MISSING_FEATURE.test(String(error.details.stderr ?? ''))) {
    return new NubesError(
      'Unsupported',
      `this kernel lacks a tc feature the QoS spec needs: ${error.message}`,
      {
        cause: error,
        details: error.details,
      },
    );
  }
  return error;
}

/** Reads the qdiscs of a device. */
export async function readQdiscs(
  ip: Iproute,
  dev: string,
  namespace: string | undefined,
): Promise<QdiscInfo[]> {
  return ip.tcJson<QdiscInfo>(['qdisc', 'show', 'dev', dev], { namespace });
}

/**
 * Applies a QoS spec to a device in one `tc -batch`. If it fails, the device is cleared again, so a
 * half-applied shaping never stays behind.
 */
export async function applyQos(
  ip: Iproute,
  qos: ParsedQos,
  ensureIfb: (name: string) => Promise<void>,
): Promise<void> {
  const where = { namespace: qos.namespace };
  const plan = planQos(qos, await readQdiscs(ip, qos.dev, qos.namespace));
  if (plan.ifb) await ensureIfb(plan.ifb);
  try {
    await ip.tcBatch(plan.lines, where);
  } catch (error) {
    await clearQosOf(ip, qos.dev, qos.namespace).catch(() => undefined);
    throw classifyTcError(error);
  }
}

/** Removes root and ingress qdiscs from a device (back to the kernel default). */
export async function clearQosOf(ip: Iproute, dev: string, namespace: string | undefined): Promise<void> {
  await ip.tcBatch(clearLines(dev, await readQdiscs(ip, dev, namespace)), { namespace });
}

/** Statistics of a device: every qdisc and every class. */
export interface QosStats {
  qdiscs: QdiscStats[];
  classes: ClassStats[];
}

/** Reads per-qdisc and per-class statistics of a device. */
export async function readQosStats(
  ip: Iproute,
  dev: string,
  namespace: string | undefined,
): Promise<QosStats> {
  const [qdiscs, classes] = await Promise.all([
    ip.tcJson(['qdisc', 'show', 'dev', dev], { namespace }, true),
    ip.tc(['-s', 'class', 'show', 'dev', dev], { namespace }),
  ]);
  return { qdiscs: parseQdiscStats(qdiscs), classes: parseClassStats(classes.stdout) };
}
