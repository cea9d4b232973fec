import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { isNubesError } from '@nubes/core';
import {
  QmpClient,
  QmpCommandError,
  QmpCommands,
  QmpConnectionError,
  type QmpEvent,
  QmpNegotiationError,
} from '@nubes/kvm';
import { describeWith, freePort } from '@nubes/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, killChild, scratchDir, sleep, startBareQemu } from './helpers.js';

describeWith(['qemu-system'], 'QMP client against a real QEMU (-machine none)', () => {
  const scratch = scratchDir('qmp');
  const socket = join(scratch.dir, 'qmp.sock');
  let qemu: ChildProcess;
  let client: QmpClient;

  beforeAll(async () => {
    qemu = startBareQemu(socket);
    client = await eventually(() => QmpClient.connect({ path: socket }));
  });
  afterAll(async () => {
    await client?.close();
    await killChild(qemu);
    scratch.remove();
  });

  it('reads the greeting and negotiates out-of-band execution', () => {
    expect(client.greeting.version.qemu.major).toBeGreaterThanOrEqual(7);
    expect(client.greeting.capabilities).toContain('oob');
    expect(client.capabilities).toEqual(['oob']);
  });

  it('runs commands, raw and typed, matching replies by id', async () => {
    const qmp = new QmpCommands(client);
    const [raw, typed, name] = await Promise.all([
      client.execute<{ status: string }>('query-status'),
      qmp.queryStatus(),
      client.execute<{ name?: string }>('query-name'),
    ]);
    expect(raw.status).toBe('running');
    expect(typed.running).toBe(true);
    expect(name).toEqual({});
    expect(await qmp.humanMonitorCommand('info version')).toMatch(/^\d+\.\d+/);
  });

  it('surfaces QMP errors with their class and desc', async () => {
    const error = await client.execute('no-such-command').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QmpCommandError);
    expect((error as QmpCommandError).errorClass).toBe('CommandNotFound');
    expect((error as QmpCommandError).desc).toMatch(/no-such-command/);
    expect(isNubesError(error, 'CommandFailed')).toBe(true);
    const generic = await client.execute('query-status', { bogus: 1 }).catch((e: unknown) => e);
    expect((generic as QmpCommandError).errorClass).toBe('GenericError');
  });

  it('executes out of band', async () => {
    await expect(client.executeOob('yank', { instances: [] })).resolves.toEqual({});
    const refused = await client.executeOob('query-status').catch((e: unknown) => e);
    expect((refused as QmpCommandError).desc).toMatch(/OOB/);
  });

  it('delivers events to listeners, iterators and waiters', async () => {
    const seen: string[] = [];
    const off = client.events.on(['STOP', 'RESUME'], (e) => seen.push(e.event));
    const iterator = client.events.listen('RESUME');
    const stopped = client.events.waitFor('STOP', { timeoutMs: 5000 });
    await client.execute('stop');
    expect((await stopped).event).toBe('STOP');
    const resumed = client.events.waitFor((e) => e.event === 'RESUME', { timeoutMs: 5000 });
    await client.execute('cont');
    await resumed;
    const first = await iterator.next();
    expect((first.value as QmpEvent).event).toBe('RESUME');
    await iterator.return?.();
    off();
    expect(seen).toEqual(['STOP', 'RESUME']);
  });

  it('times out and cancels waits for events', async () => {
    const error = await client.events.waitFor('DEVICE_DELETED', { timeoutMs: 50 }).catch((e: unknown) => e);
    expect(isNubesError(error, 'Timeout')).toBe(true);
    const controller = new AbortController();
    const waiting = client.events.waitFor('NEVER', { signal: controller.signal });
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ code: 'Timeout', details: { aborted: true } });
  });

  it('rejects bad input before sending anything', async () => {
    await expect(client.execute('bad name')).rejects.toMatchObject({
      code: 'InvalidInput',
      details: { field: 'command' },
    });
    await expect(QmpClient.connect({ path: '' })).rejects.toMatchObject({ code: 'InvalidInput' });
  });
});

describeWith(['qemu-system'], 'QMP client when QEMU stalls, dies or lies', () => {
  const scratch = scratchDir('qmp-eof');
  afterAll(() => scratch.remove());

  it('applies per-command timeouts and cancellation, then fails every pending call on EOF', async () => {
    const socket = join(scratch.dir, 'eof.sock');
    const qemu = startBareQemu(socket);
    try {
      const client = await eventually(() => QmpClient.connect({ path: socket }));
      const disconnected = new Promise<QmpConnectionError>((resolve) => client.once('disconnect', resolve));
      process.kill(qemu.pid as number, 'SIGSTOP');
      const timedOut = await client
        .execute('query-status', undefined, { timeoutMs: 100 })
        .catch((e: unknown) => e);
      expect(isNubesError(timedOut, 'Timeout')).toBe(true);
      const controller = new AbortController();
      const cancelled = client.execute('query-status', undefined, { signal: controller.signal });
      controller.abort();
      await expect(cancelled).rejects.toMatchObject({ code: 'Timeout', details: { aborted: true } });
      const pending = [
        client.execute('query-status'),
        client.execute('query-name'),
        client.events.waitFor('STOP'),
      ];
      const iterator = client.events.listen();
      process.kill(qemu.pid as number, 'SIGKILL');
      const results = await Promise.allSettled(pending);
      for (const r of results) {
        expect(r.status).toBe('rejected');
        expect((r as PromiseRejectedResult).reason).toBeInstanceOf(QmpConnectionError);
      }
      expect((await disconnected).reason).toBe('eof');
      expect(await iterator.next()).toEqual({ value: undefined, done: true });
      await expect(client.execute('query-status')).rejects.toBeInstanceOf(QmpConnectionError);
      expect(client.connected).toBe(false);
    } finally {
      await killChild(qemu);
    }
  });

  it('connects over TCP on loopback', async () => {
    const port = await freePort();
    const qemu = startBareQemu(`tcp:127.0.0.1:${port}`);
    try {
      const client = await eventually(() => QmpClient.connect({ host: '127.0.0.1', port }));
      expect((await new QmpCommands(client).queryStatus()).status).toBe('running');
      await client.close();
    } finally {
      await killChild(qemu);
    }
  });

  it('reports a refused connection as Unavailable', async () => {
    const error = await QmpClient.connect({ path: join(scratch.dir, 'nothing.sock') }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(QmpConnectionError);
    expect(isNubesError(error, 'Unavailable')).toBe(true);
  });
});

// QEMU never sends garbage, so a tiny socket server plays a broken peer for these cases.
describe('QMP client against a broken peer', () => {
  const scratch = scratchDir('qmp-peer');
  const servers: Server[] = [];
  afterAll(async () => {
    for (const s of servers) await new Promise((r) => s.close(r));
    scratch.remove();
  });

  async function peer(
    name: string,
    onCommand: (line: string, write: (s: string) => void, end: () => void) => void,
  ) {
    const path = join(scratch.dir, `${name}.sock`);
    const server = createServer((conn) => {
      conn.write(
        '{"QMP": {"version": {"qemu": {"major": 9, "minor": 0, "micro": 0}, "package": ""}, "capabilities": []}}\r\n',
      );
      let negotiated = false;
      conn.on('data', (chunk) => {
        for (const line of chunk.toString().split('\n').filter(Boolean)) {
          if (!negotiated) {
            negotiated = true;
            conn.write('{"return": {}, "id": "negotiate"}\r\n');
          } else if (conn.writable)
            onCommand(
              line,
              (s) => conn.write(s),
              () => conn.end(),
            );
        }
      });
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(path, resolve));
    return path;
  }

  it('fails pending commands on garbage', async () => {
    const path = await peer('garbage', (_line, write) => write('this is not json\r\n'));
    const client = await QmpClient.connect({ path });
    expect(client.capabilities).toEqual([]);
    const error = await client.execute('query-status').catch((e: unknown) => e);
    expect(error).toMatchObject({ reason: 'garbage', code: 'Unavailable' });
  });

  it('fails pending commands on a half-written message', async () => {
    const path = await peer('torn', (_line, write, end) => {
      write('{"return": {"status": "runn');
      end();
    });
    const client = await QmpClient.connect({ path });
    const first = client.execute('query-status');
    const second = client.execute('query-name');
    await expect(first).rejects.toMatchObject({ reason: 'truncated' });
    await expect(second).rejects.toMatchObject({ reason: 'truncated' });
  });

  it('refuses a peer that does not greet like QMP', async () => {
    const path = join(scratch.dir, 'http.sock');
    const server = createServer((conn) => conn.end('{"hello": "world"}\n'));
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(path, resolve));
    await expect(QmpClient.connect({ path })).rejects.toBeInstanceOf(QmpNegotiationError);
    expect(existsSync(path)).toBe(true);
    await sleep(1);
  });
});
