import { NubesError } from '@nubes/core';

/** The life of an image, as Glance v2 has it. */
export type ImageStatus =
  | 'queued'
  | 'saving'
  | 'uploading'
  | 'importing'
  | 'active'
  | 'killed'
  | 'deactivated'
  | 'pending_delete'
  | 'deleted';

/** Every status, in the order Glance documents them. */
export const IMAGE_STATUSES: readonly ImageStatus[] = [
  'queued',
  'saving',
  'uploading',
  'importing',
  'active',
  'killed',
  'deactivated',
  'pending_delete',
  'deleted',
];

/**
 * Allowed moves. `saving` and `importing` fall back to `queued` where Glance lets a client retry
 * (a transport failure), and go to `killed` when the data itself was refused; `uploading` is the
 * staged half of an interoperable import; `pending_delete` waits for the scrubber.
 */
export const IMAGE_TRANSITIONS: Readonly<Record<ImageStatus, readonly ImageStatus[]>> = {
  queued: ['saving', 'uploading', 'importing', 'deleted', 'pending_delete'],
  saving: ['active', 'killed', 'queued', 'deleted', 'pending_delete'],
  uploading: ['importing', 'queued', 'killed', 'deleted', 'pending_delete'],
  importing: ['active', 'queued', 'killed', 'deleted', 'pending_delete'],
  active: ['deactivated', 'pending_delete', 'deleted'],
  deactivated: ['active', 'pending_delete', 'deleted'],
  killed: ['deleted', 'pending_delete'],
  pending_delete: ['deleted'],
  deleted: [],
};

/** Whether an image in `from` may move to `to`. */
export function canTransition(from: ImageStatus, to: ImageStatus): boolean {
  return IMAGE_TRANSITIONS[from].includes(to);
}

/** Refuses an illegal move with a `Conflict` that names both statuses (nothing has changed yet). */
export function assertTransition(imageId: string, from: ImageStatus, to: ImageStatus): void {
  if (!canTransition(from, to))
    throw new NubesError('Conflict', `image ${imageId}: cannot go from ${from} to ${to}`, {
      details: { imageId, from, to, reason: 'illegal-transition' },
    });
}
