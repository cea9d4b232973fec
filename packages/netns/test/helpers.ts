import type { ChildProcess } from 'node:child_process';
import { NetworkHost } from '@nubes/netns';

/** The owner of everything these tests create: unique per test process, so parallel runs never collide. */
export const testOwner = `nbt-${process.pid}`;

/** A name under the test owner. */
export function ns(suffix: string): string {
  return `${testOwner}-${suffix}`;
}

/** A network client for the tests. */
export function testHost(): NetworkHost {
  return new NetworkHost({ owner: testOwner });
}

/** Waits until a spawned process prints `pattern` or a deadline passes. */
export function waitForOutput(child: ChildProcess, pattern: RegExp, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${pattern}: ${text}`)), timeoutMs);
    const onData = (chunk: Buffer) => {
      text += chunk.toString();
      if (pattern.test(text)) {
        clearTimeout(timer);
        resolve(text);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
  });
}

/** Sleeps. */
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
