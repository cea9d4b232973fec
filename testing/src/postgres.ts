import { type ChildProcess, spawn } from 'node:child_process';
import { chownSync, mkdtempSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCommand } from '@nubes/core';
import pg from 'pg';
import { postgresBinDir, which } from './capabilities.js';

/** A PostgreSQL server that lives for one test run. */
export interface TestPostgres {
  /** Connection string for the `nubes` superuser on 127.0.0.1. */
  url: string;
  /** Stops the server and removes its data directory. */
  stop(): Promise<void>;
}

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

/** PostgreSQL refuses to run as root, so as root every server command runs as the `postgres` user. */
function asServerUser(argv: string[]): string[] {
  if (process.getuid?.() !== 0) return argv;
  const setpriv = which('setpriv');
  if (!setpriv)
    throw new Error('running as root needs setpriv (util-linux) to start PostgreSQL as the postgres user');
  return [setpriv, '--reuid=postgres', '--regid=postgres', '--init-groups', '--', ...argv];
}

async function waitUntilReady(url: string, server: ChildProcess, logFile: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (server.exitCode !== null) {
      throw new Error(
        `postgres exited with ${server.exitCode}: ${readFileSync(logFile, 'utf8').slice(-2000)}`,
      );
    }
    const client = new pg.Client({ connectionString: url });
    try {
      await client.connect();
      await client.end();
      return;
    } catch (error) {
      await client.end().catch(() => {});
      if (Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/**
 * Starts a private PostgreSQL: initdb into a new temporary directory, listening only on
 * 127.0.0.1 on a free port (and a socket inside that directory), trust auth for user `nubes`.
 */
export async function startPostgres(): Promise<TestPostgres> {
  const bin = postgresBinDir();
  if (!bin) throw new Error('PostgreSQL server binaries are not installed (apt-get install postgresql)');
  const dir = mkdtempSync(join(tmpdir(), 'nubes-pg-'));
  const data = join(dir, 'data');
  const logFile = join(dir, 'postgres.log');
  if (process.getuid?.() === 0) {
    const { uid, gid } = statSync('/var/lib/postgresql');
    chownSync(dir, uid, gid);
  }
  const initdb = asServerUser([
    join(bin, 'initdb'),
    '-D',
    data,
    '-U',
    'nubes',
    '--auth=trust',
    '--encoding=UTF8',
    '--no-locale',
    '--no-sync',
  ]);
  await runCommand(initdb[0] as string, initdb.slice(1), { timeoutMs: 120_000 });
  const port = await freePort();
  const argv = asServerUser([
    join(bin, 'postgres'),
    '-D',
    data,
    '-p',
    String(port),
    '-k',
    dir,
    '-c',
    'listen_addresses=127.0.0.1',
    '-c',
    'fsync=off',
    '-c',
    'max_connections=200',
    '-c',
    'logging_collector=off',
  ]);
  const log = openSync(logFile, 'a');
  if (process.getuid?.() === 0) {
    const { uid, gid } = statSync('/var/lib/postgresql');
    chownSync(logFile, uid, gid);
  }
  const server = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', log, log] });
  const url = `postgres://nubes@127.0.0.1:${port}/postgres`;
  try {
    await waitUntilReady(url, server, logFile);
  } catch (error) {
    server.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    url,
    async stop() {
      if (server.exitCode === null) {
        const exited = new Promise((r) => server.once('exit', r));
        server.kill('SIGINT');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
        if (server.exitCode === null) server.kill('SIGKILL');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Creates a fresh database on the server at `url` and returns a connection string for it. */
export async function createDatabase(url: string, name: string): Promise<string> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`DROP DATABASE IF EXISTS "${name}"`);
    await client.query(`CREATE DATABASE "${name}"`);
  } finally {
    await client.end();
  }
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}
