/** One thing to measure. */
export interface BenchCase {
  /** Short name shown in the table. */
  name: string;
  /** One run of the operation. */
  fn: () => unknown;
  /** Operations one run of `fn` performs (for batched or concurrent runs); default 1. */
  opsPerRun?: number;
  /** The case the others in its group are compared with (qemu-img, raw node:crypto, a naive loop...). */
  reference?: boolean;
}

/** Cases measured side by side in one run and compared with the group's reference. */
export interface BenchGroup {
  name: string;
  cases: BenchCase[];
  /**
   * Minimum runs per case (default tinybench's 64) and time per case in ms (default `BENCH_TIME_MS`): set both
   * low for heavy cases such as converting a 1 GiB image, so the group measures a few real runs.
   */
  iterations?: number;
  timeMs?: number;
  /** Skip the warm-up runs (for cases that take seconds each). */
  noWarmup?: boolean;
}

/** What the runner hands every benchmark file. */
export interface BenchContext {
  /** Connection string of a PostgreSQL the runner started, if one could start. */
  postgresUrl?: string;
  /** A scratch directory removed after the run. */
  tmpDir: string;
}

/** A benchmark file's default export. */
export interface BenchFile {
  /** Title of the file's section. */
  name: string;
  /** Builds the groups (opening stores, creating files...) and returns them with a cleanup. */
  setup(context: BenchContext): Promise<{ groups: BenchGroup[]; teardown?: () => Promise<void> }>;
}

/** Declares a benchmark file: `export default defineBenchmarks({ name, setup })`. */
export function defineBenchmarks(file: BenchFile): BenchFile {
  return file;
}
