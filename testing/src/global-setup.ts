import type { TestProject } from 'vitest/node';
import { capabilityReport, probe, strictCapabilities } from './capabilities.js';
import { startPostgres, type TestPostgres } from './postgres.js';

let server: TestPostgres | undefined;

/** Vitest global setup: prints what this machine can do and starts the run's PostgreSQL. */
export async function setup(project: TestProject): Promise<void> {
  const report = capabilityReport();
  const line = Object.entries(report)
    .map(([name, status]) => `${name}=${status.ok ? 'yes' : 'no'}`)
    .join(' ');
  console.log(
    `[nubes] host capabilities: ${line}${strictCapabilities() ? ' (CI=true: missing ones fail)' : ''}`,
  );
  let url = process.env.NUBES_TEST_POSTGRES_URL ?? '';
  let missing = '';
  if (!url && probe('postgres').ok) {
    try {
      server = await startPostgres();
      url = server.url;
      console.log(`[nubes] started PostgreSQL for this run at ${url}`);
    } catch (error) {
      missing = `PostgreSQL could not start: ${(error as Error).message}`;
    }
  } else if (!url) {
    missing = probe('postgres').reason;
  }
  project.provide('postgresUrl', url);
  project.provide('postgresMissing', missing);
}

/** Stops the run's PostgreSQL. */
export async function teardown(): Promise<void> {
  await server?.stop();
  server = undefined;
}
