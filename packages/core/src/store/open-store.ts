import { invalidInput } from '../errors.js';
import { MemoryStore } from './memory-store.js';
import { PostgresStore } from './postgres-store.js';
import { SqliteStore } from './sqlite-store.js';
import type { Store } from './types.js';

/**
 * Opens a Store from one configuration string:
 * `memory:`; `sqlite:/path/state.db` (or a plain path); `postgres://…` / `postgresql://…`.
 */
export function openStore(url: string): Store {
  if (typeof url !== 'string' || url === '') throw invalidInput('url', 'must be a non-empty string');
  if (url === 'memory:') return new MemoryStore();
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) return new PostgresStore(url);
  if (url.startsWith('sqlite:')) return new SqliteStore(url.slice('sqlite:'.length));
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url))
    throw invalidInput('url', `unsupported store scheme in ${JSON.stringify(url)}`);
  return new SqliteStore(url);
}
