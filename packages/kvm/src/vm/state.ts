import { NubesError } from '@nubes/core';

/** Where a supervised VM is in its life. */
export type VmState = 'defined' | 'starting' | 'running' | 'paused' | 'stopping' | 'stopped' | 'crashed';

/** The transitions the supervisor allows (anything else is a bug or a race it refuses). */
export const VM_TRANSITIONS: Readonly<Record<VmState, readonly VmState[]>> = {
  defined: ['starting'],
  starting: ['running', 'paused', 'stopped', 'crashed'],
  running: ['paused', 'stopping', 'stopped', 'crashed'],
  paused: ['running', 'stopping', 'stopped', 'crashed'],
  stopping: ['stopped', 'crashed', 'running', 'paused'],
  stopped: ['starting'],
  crashed: ['starting'],
};

/** True when `from → to` is a legal transition. */
export function canTransition(from: VmState, to: VmState): boolean {
  return VM_TRANSITIONS[from].includes(to);
}

/** Throws `Conflict` unless the VM is in one of `allowed` (for operations that need a live VM). */
export function requireState(
  name: string,
  state: VmState,
  allowed: readonly VmState[],
  action: string,
): void {
  if (!allowed.includes(state))
    throw new NubesError('Conflict', `cannot ${action} VM "${name}" while it is ${state}`, {
      details: { vm: name, state, allowed },
    });
}
