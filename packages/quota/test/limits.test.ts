import { isNubesError } from '@nubes/core';
import { describe, expect, it } from 'vitest';
import { STANDARD_DEFAULTS } from '../src/index.js';
import { applyOverrides, assertRegistered, defaultConfig, effectiveLimit } from '../src/limits.js';
import { emptyProject } from '../src/records.js';

describe('limits', () => {
  it('registers the standard resources of the issue', () => {
    expect(Object.keys(STANDARD_DEFAULTS).sort()).toEqual(
      [
        'instances',
        'vcpus',
        'memoryMiB',
        'volumes',
        'diskGiB',
        'snapshots',
        'networks',
        'subnets',
        'ports',
        'routers',
        'floatingIps',
        'securityGroups',
        'securityGroupRules',
        'images',
      ].sort(),
    );
  });

  it('resolves an override first, then the registered default', () => {
    const config = defaultConfig();
    const project = { ...emptyProject(), limits: { vcpus: -1 } };
    expect(effectiveLimit(config, project, 'vcpus')).toBe(-1);
    expect(effectiveLimit(config, project, 'instances')).toBe(10);
  });

  it('applies overrides, null removing one', () => {
    expect(applyOverrides({ vcpus: 4, instances: 2 }, { vcpus: null, ports: 9 })).toEqual({
      instances: 2,
      ports: 9,
    });
  });

  it('an unregistered resource is InvalidInput naming it, never a silent limit of 0', () => {
    let error: unknown;
    try {
      assertRegistered(defaultConfig(), { vcpus: 1, gpus: 1 }, 'deltas');
    } catch (e) {
      error = e;
    }
    expect(isNubesError(error, 'InvalidInput') && error.details.field).toBe('deltas.gpus');
  });
});
