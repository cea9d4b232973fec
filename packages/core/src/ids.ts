import { randomUUID } from 'node:crypto';

/** A new random identifier (UUID v4), the form OpenStack APIs use for resource ids. */
export function newId(): string {
  return randomUUID();
}

/** A new random identifier in OpenStack's dashless form (32 lowercase hex digits), as Keystone uses. */
export function newHexId(): string {
  return randomUUID().replaceAll('-', '');
}
