/**
 * STUB, being written: the reference cloud's network service (neutron).
 */
import type { AuthService } from '@nubes/auth';
import { NubesError } from '@nubes/core';
import type { ApiContext, ServiceApi } from './http.js';

/** Options of {@link NetworkApi}. */
export interface NetworkApiOptions {
  auth: AuthService;
  adminProjectId: string;
  [part: string]: unknown;
}

/** neutron (stub). */
export class NetworkApi implements ServiceApi {
  readonly type = 'network';
  readonly name = 'neutron';
  readonly prefix = '/network';
  constructor(readonly options: NetworkApiOptions) {}
  endpoint(base: string): string {
    return `${base}/network`;
  }
  async handle(_ctx: ApiContext): Promise<void> {
    throw new NubesError('NotImplemented', 'not yet');
  }
  errorBody(status: number, message: string): unknown {
    return { error: { code: status, message } };
  }
}
