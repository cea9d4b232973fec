/**
 * A compute agent as a process of its own (nova-compute), sharing the cloud's Store and data directory:
 *
 * ```sh
 * NUBES_STORE=sqlite:/var/lib/nubes/cloud.db NUBES_DATA=/var/lib/nubes NUBES_HOST=h1 \
 *   NUBES_NAMESPACE=rc-1-h1 NUBES_UNDERLAY_IP=10.255.0.11 tsx src/agent/main.ts
 * ```
 *
 * `NUBES_NAMESPACE` is optional (unset: the machine's own namespace); `NUBES_ACCEL` is `tcg` (default),
 * `kvm` or `auto`. It prints `compute agent <host> ready` once it watches the servers, and stops on SIGTERM
 * or SIGINT, leaving its guests running.
 */
import { NubesError, openStore } from '@nubes/core';
import { ComputeAgent } from './agent.js';

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new NubesError('InvalidInput', `${name} must be set`, { details: { field: name } });
  return value;
}

const accel = process.env.NUBES_ACCEL ?? 'tcg';
if (accel !== 'tcg' && accel !== 'kvm' && accel !== 'auto')
  throw new NubesError('InvalidInput', 'NUBES_ACCEL must be tcg, kvm or auto', {
    details: { field: 'NUBES_ACCEL' },
  });
const store = openStore(env('NUBES_STORE'));
const host = env('NUBES_HOST');
const namespace = process.env.NUBES_NAMESPACE;
const agent = new ComputeAgent({
  store,
  dataDir: env('NUBES_DATA'),
  host: { name: host, underlayIp: env('NUBES_UNDERLAY_IP'), ...(namespace ? { namespace } : {}) },
  accelerator: accel,
  log: (line) => console.log(line),
  onError: (error) => console.error(`[${host}] error:`, error instanceof Error ? error.message : error),
});
await agent.start();
console.log(`compute agent ${host} ready`);
// The Store's watch timers are unref'd and a host with no guests holds no other handle: without this
// the process would end as soon as it is idle.
const keepAlive = setInterval(() => {}, 60_000);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  clearInterval(keepAlive);
  await agent.stop();
  await store.close();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
