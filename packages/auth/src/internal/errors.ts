import { NubesError } from '@nubes/core';

/**
 * Why a credential was refused, as a stable code a service can log and test against.
 * The message never contains the credential itself.
 */
export type UnauthorizedReason =
  | 'missing_token'
  | 'malformed'
  | 'alg_not_allowed'
  | 'unknown_kid'
  | 'bad_signature'
  | 'invalid_claims'
  | 'expired'
  | 'not_yet_valid'
  | 'wrong_audience'
  | 'wrong_issuer'
  | 'revoked'
  | 'invalid_credentials'
  | 'locked_out'
  | 'disabled'
  | 'not_authorized_for_scope'
  | 'rescope_refused'
  | 'bad_signature_format'
  | 'clock_skew'
  | 'replayed'
  | 'unknown_access_key'
  | 'signature_mismatch';

/** An `Unauthorized` error carrying a {@link UnauthorizedReason} in `details.reason`. */
export function unauthorized(
  reason: UnauthorizedReason,
  message: string,
  details: Record<string, unknown> = {},
): NubesError {
  return new NubesError('Unauthorized', message, { details: { reason, ...details } });
}

/** A `Forbidden` error carrying the reason in `details`. */
export function forbidden(message: string, details: Record<string, unknown> = {}): NubesError {
  return new NubesError('Forbidden', message, { details });
}

/** A `Conflict` error. */
export function conflict(message: string, details: Record<string, unknown> = {}): NubesError {
  return new NubesError('Conflict', message, { details });
}
