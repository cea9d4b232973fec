/**
 * Test helpers for this repository (not published): host capability probes, suites that skip
 * locally and fail under CI when a capability is missing, and a throwaway PostgreSQL.
 */
export type { Capability, CapabilityStatus } from './capabilities.js';
export { capabilityReport, postgresBinDir, probe, strictCapabilities, which } from './capabilities.js';
export type { TestPostgres } from './postgres.js';
export { createDatabase, freePort, startPostgres } from './postgres.js';
export { describeWith, missingCapabilities, testPostgresUrl } from './suites.js';
