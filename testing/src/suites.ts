import { describe, inject, it } from 'vitest';
import { type Capability, probe, strictCapabilities } from './capabilities.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Connection string of the run's PostgreSQL, or an empty string if none could start. */
    postgresUrl: string;
    /** Why PostgreSQL is missing, when it is. */
    postgresMissing: string;
  }
}

/** Why the listed capabilities are not all present, or `undefined` when they are. */
export function missingCapabilities(needs: readonly Capability[]): string | undefined {
  const missing = needs.map(probe).filter((status) => !status.ok);
  if (needs.includes('postgres') && !testPostgresUrl())
    missing.push({ ok: false, reason: inject('postgresMissing') });
  return missing.length ? missing.map((m) => m.reason).join('; ') : undefined;
}

/** The connection string of the PostgreSQL this test run started (or was given), if any. */
export function testPostgresUrl(): string | undefined {
  return inject('postgresUrl') || undefined;
}

/**
 * `describe` for an integration suite that needs host capabilities. When one is missing the suite
 * is skipped with the reason printed, except under `CI=true`, where it fails so CI cannot go green
 * without really running it.
 */
export function describeWith(needs: readonly Capability[], name: string, body: () => void): void {
  const missing = missingCapabilities(needs);
  if (!missing) {
    describe(name, body);
    return;
  }
  if (strictCapabilities()) {
    describe(name, () => {
      it('has the host capabilities it needs', () => {
        throw new Error(`CI=true and this suite cannot run: ${missing}`);
      });
    });
    return;
  }
  console.warn(`[nubes] skipping "${name}": ${missing}`);
  describe.skip(`${name} (skipped: ${missing})`, body);
}
