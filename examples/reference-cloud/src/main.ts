/**
 * Starts the reference cloud's API on 127.0.0.1.
 *
 * Environment: `NUBES_API_PORT` (default: a free port), `NUBES_STORE` (`openStore` URL: `postgres://…` when
 * agents run as their own processes, default `sqlite:./reference-cloud.db`), `NUBES_DATA` (images and disks, default `./reference-cloud-data`),
 * `OS_USERNAME` / `OS_PASSWORD` / `OS_PROJECT_NAME` for the bootstrapped admin (defaults `admin` / `admin` /
 * `admin`, as devstack's), so the same variables then drive the `openstack` CLI.
 */
import { openStore } from '@nubes/core';
import { ReferenceCloud } from './cloud.js';

const store = openStore(process.env.NUBES_STORE ?? 'sqlite:reference-cloud.db');
const cloud = await ReferenceCloud.open({
  store,
  dataDir: process.env.NUBES_DATA ?? 'reference-cloud-data',
  admin: {
    user: process.env.OS_USERNAME ?? 'admin',
    password: process.env.OS_PASSWORD ?? 'admin',
    project: process.env.OS_PROJECT_NAME ?? 'admin',
  },
  onServerError: (error) => console.error('[api] internal error:', error),
});
const port = await cloud.listen(Number(process.env.NUBES_API_PORT ?? 0));
console.log(`reference cloud API on http://127.0.0.1:${port}/v3`);
console.log(`export OS_AUTH_URL=http://127.0.0.1:${port}/v3 OS_IDENTITY_API_VERSION=3 OS_AUTH_TYPE=password`);
console.log('export OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default');

// Stop cleanly so the SQLite file is closed and nothing in flight is cut mid-commit.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void cloud
      .close()
      .then(() => store.close())
      .then(() => process.exit(0));
  });
}
