import { NubesError } from '@nubes/core';

/**
 * Why an image was refused. Stable strings: callers branch on them, and the inspector's fuzz
 * tests assert that every rejection carries one.
 */
export type InvalidImageReason =
  | 'unknown-format'
  | 'ambiguous-format'
  | 'truncated'
  | 'bad-header'
  | 'bad-version'
  | 'bad-cluster-size'
  | 'bad-refcount-order'
  | 'bad-virtual-size'
  | 'offset-out-of-range'
  | 'table-too-large'
  | 'overlapping-metadata'
  | 'bad-extension'
  | 'bad-l2-entry'
  | 'bad-compressed-cluster'
  | 'bad-snapshot-table'
  | 'backing-file'
  | 'data-file'
  | 'external-extent'
  | 'backing-cycle'
  | 'backing-too-deep'
  | 'corrupt'
  | 'encrypted'
  | 'unsupported-feature';

/**
 * A disk image that is malformed, or (for the inspector) unsafe to hand to QEMU. It is an
 * `InvalidInput` {@link NubesError} (HTTP 400) whose `reason` says what is wrong and whose
 * `details.file` names the image.
 */
export class InvalidImage extends NubesError {
  /** What is wrong with the image, as a stable code. */
  readonly reason: InvalidImageReason;

  constructor(reason: InvalidImageReason, message: string, details: Record<string, unknown> = {}) {
    super('InvalidInput', message, { details: { reason, ...details } });
    this.name = 'InvalidImage';
    this.reason = reason;
  }
}

/** True when `error` is an {@link InvalidImage}, optionally with one of the given reasons. */
export function isInvalidImage(error: unknown, ...reasons: InvalidImageReason[]): error is InvalidImage {
  return error instanceof InvalidImage && (reasons.length === 0 || reasons.includes(error.reason));
}

/** An `Unsupported` error for a feature of an image this engine refuses to touch. */
export function unsupported(file: string, feature: string, message: string): NubesError {
  return new NubesError('Unsupported', `${file}: ${message}`, { details: { file, feature } });
}

/** An {@link InvalidImage} whose message starts with the file name, so a log line says which image. */
export function badImage(
  file: string,
  reason: InvalidImageReason,
  message: string,
  details: Record<string, unknown> = {},
): InvalidImage {
  return new InvalidImage(reason, `${file}: ${message}`, { file, ...details });
}
