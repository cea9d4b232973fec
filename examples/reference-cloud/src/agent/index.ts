/**
 * The compute side of the reference cloud: the agent that boots servers on a host, and the paths of a
 * server's files that the compute API reads (console output).
 */
export {
  ComputeAgent,
  type ComputeAgentOptions,
  type ComputeHostInfo,
  guestCommandLine,
  READY_MARKER_PROPERTY,
  RESTARTED_DURING_BUILD,
} from './agent.js';
export { consoleLogPath, instanceDir, runDir } from './paths.js';
