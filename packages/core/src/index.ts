/**
 * @nubes/core: the contracts every Nubes package shares: the transactional Store, errors with
 * stable codes, resource vectors, ids, input validation and the host command runner.
 *
 * @packageDocumentation
 */

export type {
  CommandEvent,
  CommandOptions,
  CommandResult,
  CommandRunner,
  CommandRunnerOptions,
} from './command/runner.js';
export { commandRunner, createCommandRunner, runCommand } from './command/runner.js';
export type { ErrorCode, NubesErrorOptions } from './errors.js';
export { ERROR_STATUS, errorCode, invalidInput, isNubesError, NubesError, notFound } from './errors.js';
export { newHexId, newId } from './ids.js';
export type { Resources } from './resources.js';
export {
  addResources,
  fitsResources,
  isZeroResources,
  maxResources,
  parseResources,
  ResourceClass,
  resourceDeltaSchema,
  resourceShortfall,
  resourcesSchema,
  scaleResources,
  subtractResources,
} from './resources.js';
export { MemoryStore } from './store/memory-store.js';
export { openStore } from './store/open-store.js';
export type { PostgresStoreOptions } from './store/postgres-store.js';
export { PostgresStore } from './store/postgres-store.js';
export type { SqliteStoreOptions } from './store/sqlite-store.js';
export { SqliteStore } from './store/sqlite-store.js';
export type {
  DeleteOptions,
  Entry,
  JsonValue,
  ListOptions,
  ListPage,
  PutOptions,
  Store,
  StoreReader,
  Transaction,
  TransactionOptions,
  Watch,
  WatchEvent,
  WatchOptions,
} from './store/types.js';
export { parseInput } from './validation.js';
