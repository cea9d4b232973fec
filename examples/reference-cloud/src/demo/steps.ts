/**
 * How the demo reports: each step prints what it did and how long it took, so a reader sees both the
 * cloud's answers and where the time goes.
 */

/** One finished step. */
export interface StepResult {
  title: string;
  ms: number;
}

/** Runs and prints numbered steps. */
export class Steps {
  private n = 0;
  readonly done: StepResult[] = [];
  private readonly started = Date.now();

  constructor(private readonly out: (line: string) => void = (line) => console.log(line)) {}

  /** Runs `fn` as the next step; its returned lines are printed under the title. A failure is re-thrown. */
  async run<T>(title: string, fn: (say: (line: string) => void) => Promise<T>): Promise<T> {
    this.n += 1;
    const label = `[${String(this.n).padStart(2)}] ${title}`;
    this.out(`\n${label}`);
    const t0 = Date.now();
    try {
      const result = await fn((line) => this.out(`     ${line}`));
      const ms = Date.now() - t0;
      this.done.push({ title, ms });
      this.out(`     (${seconds(ms)})`);
      return result;
    } catch (error) {
      this.out(
        `     FAILED after ${seconds(Date.now() - t0)}: ${error instanceof Error ? error.message : String(error)}`,
      );
      throw error;
    }
  }

  /** Total time since the first step. */
  elapsed(): string {
    return seconds(Date.now() - this.started);
  }
}

/** `1.23 s` */
export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}
