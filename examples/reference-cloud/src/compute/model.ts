/**
 * The contract between the compute API and the compute agents: the server records both read and write in the
 * Store. The API creates a record, schedules it (sets `host`) and asks for work by setting `task`; the agent of
 * that host does the work, then clears `task` and sets `status`/`powerState` (or `status: 'ERROR'` with a
 * `fault`). Every write is a compare-and-put on the record's revision, so an API and an agent never overwrite
 * each other's change.
 */

/** Store key prefix of server records: `compute/servers/<id>`. */
export const SERVERS_PREFIX = 'compute/servers/';

/** The Store key of a server. */
export function serverKey(id: string): string {
  return `${SERVERS_PREFIX}${id}`;
}

/** Nova's server statuses that this cloud uses. */
export type ServerStatus =
  | 'BUILD'
  | 'ACTIVE'
  | 'SHUTOFF'
  | 'REBOOT'
  | 'HARD_REBOOT'
  | 'MIGRATING'
  | 'ERROR'
  | 'DELETED';

/**
 * Work the API asks of the agent (Nova's task states). `null`: nothing to do.
 * - `spawning`: prepare the disk, wire the ports, boot the guest, then `ACTIVE`.
 * - `powering-off` / `powering-on` / `rebooting`: stop, start or reboot the guest.
 * - `migrating`: live-migrate the guest to `migration.targetHost` (the source agent drives it).
 * - `deleting`: stop the guest, release the disk and the ports' devices; the agent then deletes the record.
 */
export type ServerTask =
  | 'spawning'
  | 'powering-off'
  | 'powering-on'
  | 'rebooting'
  | 'migrating'
  | 'deleting'
  | null;

/** Nova's power states: 0 NOSTATE, 1 RUNNING, 4 SHUTDOWN. */
export type PowerState = 0 | 1 | 4;

// Type aliases rather than interfaces: the Store takes JSON values, and only aliases are assignable to them.

/** One network attachment of a server: a Neutron port bound to the server's host as a tap device. */
export type ServerPort = {
  portId: string;
  networkId: string;
  mac: string;
  /** The port's fixed IPv4 address, its prefix length and the subnet's gateway (for the guest's config). */
  ip: string;
  prefixLength: number;
  gateway?: string;
  /** The tap device's name on the host. */
  tap: string;
};

/** A server as stored under {@link serverKey}. */
export type ServerRecord = {
  id: string;
  name: string;
  projectId: string;
  userId: string;
  flavorId: string;
  /** The flavor's resources, copied at create time (a flavor may change or go away later). */
  flavor: { name: string; vcpus: number; ramMiB: number; diskGiB: number };
  imageId: string;
  status: ServerStatus;
  task: ServerTask;
  powerState: PowerState;
  /** The compute host it is scheduled to; unset until placed. */
  host?: string;
  availabilityZone: string;
  ports: ServerPort[];
  serverGroupId?: string;
  metadata: Record<string, string>;
  keyName?: string;
  /** The quota reservation held while it builds; committed when it becomes ACTIVE, rolled back on failure. */
  reservationId?: string;
  /** Set when `status` is `ERROR`, as Nova's fault: code, message, created. */
  fault?: { code: number; message: string; created: string };
  /** Set while `task` is `migrating`. */
  migration?: { sourceHost: string; targetHost: string; startedAt: string };
  created: string;
  updated: string;
  launchedAt?: string;
};

/**
 * Quota amounts of one server, as the compute API reserves them and the agent gives them back. The names
 * are `@nubes/quota`'s standard resources. The API reserves them at create; the agent commits the reservation
 * (and removes `reservationId` from the record) when the server is ACTIVE, rolls it back on a failed build,
 * and releases them when the server is deleted.
 */
export function serverQuotaDeltas(server: Pick<ServerRecord, 'flavor'>): Record<string, number> {
  return { instances: 1, vcpus: server.flavor.vcpus, memoryMiB: server.flavor.ramMiB };
}
