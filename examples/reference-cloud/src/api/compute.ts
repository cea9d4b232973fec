/**
 * STUB, being written: the reference cloud's compute service (nova).
 */
import type { AuthService } from '@nubes/auth';
import { NubesError } from '@nubes/core';
import type { ApiContext, ServiceApi } from './http.js';

/** Options of {@link ComputeApi}. */
export interface ComputeApiOptions {
  auth: AuthService;
  adminProjectId: string;
  [part: string]: unknown;
}

/** nova (stub). */
export class ComputeApi implements ServiceApi {
  readonly type = 'compute';
  readonly name = 'nova';
  readonly prefix = '/compute';
  constructor(readonly options: ComputeApiOptions) {}
  endpoint(base: string): string {
    return `${base}/compute`;
  }
  async handle(_ctx: ApiContext): Promise<void> {
    throw new NubesError('NotImplemented', 'not yet');
  }
  errorBody(status: number, message: string): unknown {
    return { error: { code: status, message } };
  }
}
