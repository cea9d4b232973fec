/**
 * The reference cloud put together: one Store holds everything (identity, images, networks, quota,
 * placement, servers); the API process serves the four OpenStack services over it; compute agents (in this
 * process or others sharing the Store) do the work on their hosts.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { AuthService } from '@nubes/auth';
import type { Store } from '@nubes/core';
import { ImageStore } from '@nubes/images';
import { Vpc } from '@nubes/netns';
import { Quota } from '@nubes/quota';
import { Inventory, Scheduler } from '@nubes/scheduler';
import { ComputeApi } from './api/compute.js';
import { type AdminAccount, IdentityApi, openAuth } from './api/identity.js';
import { ImageApi } from './api/image.js';
import { NetworkApi } from './api/network.js';
import { CloudServer } from './api/server.js';

/** Options of {@link ReferenceCloud.open}. */
export interface ReferenceCloudOptions {
  /** Where all state lives: a SqliteStore for one process, a PostgresStore shared by API and agents. */
  store: Store;
  /** Where image blobs and instance disks live (shared by the API and the agents of this machine). */
  dataDir: string;
  /** The administrator bootstrapped on every start. */
  admin: AdminAccount;
  /** The region named in the catalog (default `RegionOne`). */
  region?: string;
  /** Called with every error answered with a 5xx, for logs. */
  onServerError?: (error: unknown) => void;
}

/** The parts every process of the cloud opens on the shared Store. */
export interface CloudParts {
  store: Store;
  images: ImageStore;
  vpc: Vpc;
  quota: Quota;
  inventory: Inventory;
}

/** Opens the shared parts on a Store. API processes and agents call this alike. */
export function openParts(store: Store, dataDir: string): CloudParts {
  mkdirSync(dataDir, { recursive: true });
  return {
    store,
    images: new ImageStore({ store, dir: join(dataDir, 'images') }),
    vpc: new Vpc({ store }),
    quota: new Quota(store),
    inventory: new Inventory(store, { scheduler: new Scheduler() }),
  };
}

/** The API side of the reference cloud. */
export class ReferenceCloud {
  private constructor(
    /** The shared parts. */
    readonly parts: CloudParts,
    /** Identity and policy. */
    readonly auth: AuthService,
    /** The admin project's id: its admins are cloud admins. */
    readonly adminProjectId: string,
    /** The HTTP server. */
    readonly server: CloudServer,
    private readonly stopSweeper: () => Promise<void>,
  ) {}

  /** Opens the state, bootstraps the admin and builds the API (call {@link listen} to serve it). */
  static async open(options: ReferenceCloudOptions): Promise<ReferenceCloud> {
    const parts = openParts(options.store, options.dataDir);
    const { auth, adminProjectId } = await openAuth(options.store, options.admin);
    const common = { auth, adminProjectId };
    const server = new CloudServer({
      auth,
      ...(options.region ? { region: options.region } : {}),
      ...(options.onServerError ? { onServerError: options.onServerError } : {}),
      services: [
        new IdentityApi(auth),
        new ImageApi({ ...common, images: parts.images, quota: parts.quota }),
        new NetworkApi({ ...common, vpc: parts.vpc, quota: parts.quota, inventory: parts.inventory }),
        new ComputeApi({ ...common, ...parts, dataDir: options.dataDir }),
      ],
    });
    // Reservations of a crashed API process expire and give their quota back.
    const sweeper = parts.quota.startSweeper({ intervalMs: 10_000 });
    return new ReferenceCloud(parts, auth, adminProjectId, server, () => sweeper.stop());
  }

  /** Serves the API on `host:port` (port 0: any free one); resolves with the port. */
  listen(port: number, host = '127.0.0.1'): Promise<number> {
    return this.server.listen(port, host);
  }

  /** Stops serving and the background work. The Store stays open: the caller owns it. */
  async close(): Promise<void> {
    await this.server.close();
    await this.server.closeServices();
    await this.stopSweeper();
    this.auth.close();
  }
}
