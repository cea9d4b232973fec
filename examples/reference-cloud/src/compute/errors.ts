/**
 * Nova's error bodies and the errors the compute API raises with Nova's wording, so novaclient and
 * openstacksdk print what they print against a real Nova.
 */
import { NubesError } from '@nubes/core';

/** The fault name Nova wraps an error body in, per HTTP status (Nova's `Fault._fault_names`). */
const FAULT_NAMES: Record<number, string> = {
  400: 'badRequest',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'itemNotFound',
  405: 'badMethod',
  406: 'HTTPNotAcceptable',
  409: 'conflictingRequest',
  413: 'overLimit',
  415: 'badMediaType',
  429: 'overLimit',
  501: 'notImplemented',
  503: 'serviceUnavailable',
};

/** Nova's error body: `{ "itemNotFound": { "code": 404, "message": "..." } }` (`computeFault` for the rest). */
export function novaError(status: number, message: string): Record<string, unknown> {
  return { [FAULT_NAMES[status] ?? 'computeFault']: { code: status, message } };
}

/** `NotFound` with Nova's wording: `Instance abc could not be found.` */
export function novaNotFound(kind: string, id: string): NubesError {
  return new NubesError('NotFound', `${kind} ${id} could not be found.`, { details: { kind, id } });
}

/**
 * `Conflict` for an action the server's state does not allow, as Nova words it:
 * `Cannot 'os-start' instance abc while it is in vm_state active`.
 */
export function stateConflict(action: string, serverId: string, what: string, state: string): NubesError {
  return new NubesError(
    'Conflict',
    `Cannot '${action}' instance ${serverId} while it is in ${what} ${state}`,
    {
      details: { action, serverId, [what]: state },
    },
  );
}

/** `NotImplemented` for a Nova call this cloud does not serve. */
export function notServed(what: string): NubesError {
  return new NubesError('NotImplemented', `${what} is not implemented by this cloud.`, { details: { what } });
}
