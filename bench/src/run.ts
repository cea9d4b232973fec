import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { startPostgres, type TestPostgres } from '@nubes/testing';
import { Bench } from 'tinybench';
import type { BenchContext, BenchFile } from './harness.js';

interface Row {
  file: string;
  group: string;
  case: string;
  opsPerSec: number;
  rmePercent: number;
  samples: number;
  vsReference: number | null;
  reference: boolean;
}

const here = dirname(fileURLToPath(import.meta.url));
const timeMs = Number(process.env.BENCH_TIME_MS ?? 1000);
const filters = process.argv.slice(2);

function format(n: number): string {
  return n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toPrecision(3);
}

function printTable(rows: Row[]): void {
  const header = ['group', 'case', 'ops/s', '± %', 'vs reference'];
  const lines = rows.map((r) => [
    r.group,
    r.reference ? `${r.case} (reference)` : r.case,
    format(r.opsPerSec),
    r.rmePercent.toFixed(1),
    r.vsReference === null ? '' : `${r.vsReference.toFixed(2)}x`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] as string).length)));
  const fmt = (cells: string[]) =>
    cells
      .map((c, i) => (i >= 2 ? c.padStart(widths[i] as number) : c.padEnd(widths[i] as number)))
      .join('  ');
  console.log(fmt(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const l of lines) console.log(fmt(l));
}

async function main(): Promise<void> {
  const files = readdirSync(here)
    .filter((f) => f.endsWith('.bench.ts'))
    .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
    .sort();
  const tmp = mkdtempSync(join(tmpdir(), 'nubes-bench-'));
  let pg: TestPostgres | undefined;
  try {
    pg = await startPostgres();
  } catch (error) {
    console.warn(`[bench] no PostgreSQL: ${(error as Error).message}`);
  }
  const context: BenchContext = { tmpDir: tmp, ...(pg ? { postgresUrl: pg.url } : {}) };
  const rows: Row[] = [];
  const out = join(here, '..', 'results');
  try {
    for (const file of files) {
      const mod = (await import(pathToFileURL(join(here, file)).href)) as { default: BenchFile };
      const { groups, teardown } = await mod.default.setup(context);
      console.log(`\n# ${mod.default.name} (${file})\n`);
      const fileRows: Row[] = [];
      try {
        for (const group of groups) {
          const time = group.timeMs ?? timeMs;
          const bench = new Bench({
            time,
            warmupTime: Math.min(200, time / 4),
            throws: true,
            ...(group.iterations === undefined ? {} : { iterations: group.iterations }),
            ...(group.noWarmup ? { warmup: false } : {}),
          });
          for (const c of group.cases) bench.add(c.name, c.fn);
          // Progress on stderr, so a slow or stuck group shows where it is.
          process.stderr.write(`[bench] ${group.name}...\n`);
          await bench.run();
          const measured = group.cases.map((c, i) => {
            const result = bench.tasks[i]?.result;
            const hz = result && 'throughput' in result ? result.throughput.mean : 0;
            const rme = result && 'latency' in result ? result.latency.rme : 0;
            const samples = result && 'latency' in result ? result.latency.samples.length : 0;
            return { c, opsPerSec: hz * (c.opsPerRun ?? 1), rme, samples };
          });
          const ref = measured.find((m) => m.c.reference);
          for (const m of measured) {
            fileRows.push({
              file,
              group: group.name,
              case: m.c.name,
              opsPerSec: m.opsPerSec,
              rmePercent: m.rme,
              samples: m.samples,
              vsReference: ref && ref.opsPerSec > 0 ? m.opsPerSec / ref.opsPerSec : null,
              reference: Boolean(m.c.reference),
            });
          }
        }
      } finally {
        await teardown?.();
      }
      printTable(fileRows);
      rows.push(...fileRows);
      // One JSON per benchmark file, so running a subset never overwrites the others' figures.
      const report = { date: new Date().toISOString(), node: process.version, timeMs, file, rows: fileRows };
      mkdirSync(out, { recursive: true });
      writeFileSync(join(out, file.replace(/\.bench\.ts$/, '.json')), `${JSON.stringify(report, null, 2)}\n`);
    }
  } finally {
    await pg?.stop();
    rmSync(tmp, { recursive: true, force: true });
  }
  console.log(`\nresults written to bench/results/<file>.json (${rows.length} rows)`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
