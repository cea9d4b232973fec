import { parseInput } from '@nubes/core';
import { type Clock, systemClock } from '../internal/clock.js';
import { safeEqual } from '../internal/encoding.js';
import { unauthorized } from '../internal/errors.js';
import {
  canonicalRequest,
  computeSignature,
  credentialScope,
  deriveSigningKey,
  normalizeHeaders,
  parseAmzDate,
  sha256,
  splitTarget,
  stringToSign,
} from './canonical.js';
import { memoryReplayGuard, type ReplayGuard } from './replay-guard.js';
import { type SigV4Request, sigv4RequestSchema } from './sign.js';

/** Options of {@link SigV4Verifier}. */
export interface SigV4VerifierOptions {
  /** Accept only this region (default: any). */
  region?: string;
  /** Accept only this service (default: any). */
  service?: string;
  /** Largest accepted difference between `x-amz-date` and the server clock, in ms (default 5 minutes). */
  maxSkewMs?: number;
  clock?: Clock;
  /** Where accepted signatures are remembered (default: this process's memory; see {@link storeReplayGuard}). */
  replayGuard?: ReplayGuard;
}

/** A verified signature: who signed, for which region and service. */
export interface SigV4Result<T> {
  accessKeyId: string;
  region: string;
  service: string;
  /** What the lookup returned for the access key. */
  owner: T;
}

const AUTHORIZATION =
  /^AWS4-HMAC-SHA256 Credential=([^/\s,]+)\/(\d{8})\/([^/\s,]+)\/([^/\s,]+)\/aws4_request, ?SignedHeaders=([a-z0-9;._-]+), ?Signature=([0-9a-f]{64})$/;

/**
 * The server side of AWS Signature Version 4: parses the `Authorization` header, looks the access key up,
 * recomputes the signature with the secret and compares in constant time. The timestamp must be within
 * `maxSkewMs` of the server clock, and a signature already accepted is refused while it is inside that window,
 * so a captured request cannot be replayed.
 */
export class SigV4Verifier<T> {
  private readonly replayGuard: ReplayGuard;
  private readonly maxSkewMs: number;
  private readonly clock: Clock;

  constructor(
    /** Finds the secret of an access key and what it belongs to; `undefined` when unknown or disabled. */
    private readonly lookup: (
      accessKeyId: string,
    ) => Promise<{ secretAccessKey: string; owner: T } | undefined>,
    private readonly options: SigV4VerifierOptions = {},
  ) {
    this.maxSkewMs = options.maxSkewMs ?? 300_000;
    this.clock = options.clock ?? systemClock;
    this.replayGuard = options.replayGuard ?? memoryReplayGuard();
  }

  /** Verifies a signed request; throws `Unauthorized` with a precise `details.reason` otherwise. */
  async verify(request: SigV4Request): Promise<SigV4Result<T>> {
    const r = parseInput(sigv4RequestSchema, request, 'request');
    const headers = normalizeHeaders(r.headers);
    const m = AUTHORIZATION.exec(headers.get('authorization') ?? '');
    if (!m)
      throw unauthorized(
        'bad_signature_format',
        'the Authorization header is not an AWS4-HMAC-SHA256 signature',
      );
    const [, accessKeyId, date, region, service, signedList, signature] = m as unknown as string[] as [
      string,
      string,
      string,
      string,
      string,
      string,
      string,
    ];
    const signedHeaders = signedList.split(';');
    const sorted = [...signedHeaders].sort();
    if (!signedHeaders.includes('host') || sorted.join(';') !== signedList)
      throw unauthorized('bad_signature_format', 'SignedHeaders must be sorted and include host');
    const amzDate = headers.get('x-amz-date') ?? '';
    if (!signedHeaders.includes('x-amz-date'))
      throw unauthorized('bad_signature_format', 'SignedHeaders must include x-amz-date');
    const signedAt = parseAmzDate(amzDate);
    if (Number.isNaN(signedAt) || amzDate.slice(0, 8) !== date)
      throw unauthorized(
        'bad_signature_format',
        'x-amz-date is missing or does not match the credential date',
      );
    const now = this.clock();
    if (Math.abs(now - signedAt) > this.maxSkewMs)
      throw unauthorized('clock_skew', 'the request time is too far from the server time', {
        maxSkewMs: this.maxSkewMs,
      });
    if (
      (this.options.region && region !== this.options.region) ||
      (this.options.service && service !== this.options.service)
    )
      throw unauthorized('bad_signature_format', 'the credential scope names another region or service');
    let payloadHash = headers.get('x-amz-content-sha256');
    if (payloadHash === undefined) payloadHash = sha256(r.body ?? '');
    else if (payloadHash !== 'UNSIGNED-PAYLOAD' && r.body !== undefined && payloadHash !== sha256(r.body))
      throw unauthorized('signature_mismatch', 'the body does not match x-amz-content-sha256');

    const found = await this.lookup(accessKeyId);
    if (!found) throw unauthorized('unknown_access_key', 'the access key is unknown or disabled');
    const { path, query } = splitTarget(r.url);
    const canonical = canonicalRequest({
      method: r.method,
      path,
      query,
      headers,
      signedHeaders,
      payloadHash,
      service,
    });
    const expected = computeSignature(
      deriveSigningKey(found.secretAccessKey, date, region, service),
      stringToSign(amzDate, credentialScope(date, region, service), canonical),
    );
    if (!safeEqual(expected, signature))
      throw unauthorized('signature_mismatch', 'the request signature does not match');

    if (!(await this.replayGuard.claim(signature, signedAt + this.maxSkewMs, now)))
      throw unauthorized('replayed', 'this signed request was already used');
    return { accessKeyId, region, service, owner: found.owner };
  }
}
