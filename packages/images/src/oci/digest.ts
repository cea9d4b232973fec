import { createHash } from 'node:crypto';
import { NubesError } from '@nubes/core';

const PATTERNS: Record<string, RegExp> = { sha256: /^[a-f0-9]{64}$/, sha512: /^[a-f0-9]{128}$/ };

/** A content digest split into its parts (`sha256:abc...` -> `sha256`, `abc...`). */
export interface ParsedDigest {
  algorithm: 'sha256' | 'sha512';
  hex: string;
}

/** Parses an OCI digest, refusing unknown algorithms and malformed hex (`InvalidInput` naming `field`). */
export function parseDigest(digest: string, field = 'digest'): ParsedDigest {
  const at = typeof digest === 'string' ? digest.indexOf(':') : -1;
  const algorithm = at > 0 ? digest.slice(0, at) : '';
  const hex = at > 0 ? digest.slice(at + 1) : '';
  const pattern = PATTERNS[algorithm];
  if (!pattern?.test(hex))
    throw new NubesError(
      'InvalidInput',
      `${field}: not a sha256 or sha512 digest: ${String(digest).slice(0, 80)}`,
      {
        details: { field, reason: 'bad-digest' },
      },
    );
  return { algorithm: algorithm as ParsedDigest['algorithm'], hex };
}

/**
 * The chain ID of a stack of layers (OCI image spec, config.md): the first layer's diff ID, then
 * `sha256(parentChainId + " " + diffId)` for each next one. It names a snapshot by everything under it,
 * so the same layer on two different bases never shares a directory.
 */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const diffId of diffIds) {
    parseDigest(diffId, 'diffId');
    const parent = out.at(-1);
    out.push(parent ? `sha256:${createHash('sha256').update(`${parent} ${diffId}`).digest('hex')}` : diffId);
  }
  return out;
}
