/**
 * STUB, being written: the reference cloud's image service (glance).
 */
import type { AuthService } from '@nubes/auth';
import { NubesError } from '@nubes/core';
import type { ApiContext, ServiceApi } from './http.js';

/** Options of {@link ImageApi}. */
export interface ImageApiOptions {
  auth: AuthService;
  adminProjectId: string;
  [part: string]: unknown;
}

/** glance (stub). */
export class ImageApi implements ServiceApi {
  readonly type = 'image';
  readonly name = 'glance';
  readonly prefix = '/image';
  constructor(readonly options: ImageApiOptions) {}
  endpoint(base: string): string {
    return `${base}/image`;
  }
  async handle(_ctx: ApiContext): Promise<void> {
    throw new NubesError('NotImplemented', 'not yet');
  }
  errorBody(status: number, message: string): unknown {
    return { error: { code: status, message } };
  }
}
