import { errorCode, NubesError } from '@nubes/core';
import { InvalidImage } from '../errors.js';
import { checkExitCode, checkImage, checkResultJson } from '../operations/check.js';
import { type CreateImageOptions, createImage } from '../operations/create.js';
import { imageInfo } from '../operations/info.js';
import { mapImage } from '../operations/map.js';
import { measureImage } from '../operations/measure.js';
import { snapshotApply, snapshotCreate, snapshotDelete, snapshotList } from '../operations/snapshot.js';
import {
  commitImage,
  compareImages,
  convertImage,
  rebaseImage,
  resizeImage,
} from '../operations/transfer.js';
import type { ProgressListener } from '../types.js';

/** Where the CLI writes; tests pass buffers, the binary passes the process streams. */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
}

const processIo: CliIo = {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
};

/** Flags that take a value, per command (everything else is a boolean switch). */
const VALUE_FLAGS = new Set(['-f', '-O', '-o', '-b', '-F', '-r', '-t', '--output', '--size']);

/**
 * Whether convert's `-t CACHE` asks for the output to be flushed: qemu-img's default for convert
 * is `unsafe` (never flushed); every other mode flushes before qemu-img exits.
 */
function cacheSync(mode: string | true | undefined): boolean {
  if (mode === undefined || mode === 'unsafe') return false;
  if (mode === 'writeback' || mode === 'none' || mode === 'writethrough' || mode === 'directsync')
    return true;
  throw usage(
    `invalid cache mode ${JSON.stringify(mode)} (unsafe, writeback, none, writethrough, directsync)`,
  );
}
const SNAPSHOT_VALUE_FLAGS = new Set(['-f', '-c', '-a', '-d']);

interface Parsed {
  flags: Map<string, string | true>;
  opts: Map<string, string>;
  args: string[];
}

function parseArgs(argv: string[], valueFlags: Set<string>): Parsed {
  const flags = new Map<string, string | true>();
  const opts = new Map<string, string>();
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a.startsWith('--') && a.includes('=')) {
      const [k, v] = [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)];
      flags.set(k, v);
    } else if (a.startsWith('-') && a.length > 1 && !/^-\d/.test(a)) {
      if (valueFlags.has(a)) {
        const v = argv[++i];
        if (v === undefined) throw usage(`option ${a} needs a value`);
        if (a === '-o')
          for (const kv of v.split(','))
            opts.set(kv.split('=')[0] as string, kv.split('=').slice(1).join('='));
        else flags.set(a, v);
      } else flags.set(a, true);
    } else args.push(a);
  }
  return { flags, opts, args };
}

function usage(message: string): NubesError {
  return new NubesError('InvalidInput', message, { details: { field: 'argv' } });
}

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 2 ** 10,
  m: 2 ** 20,
  g: 2 ** 30,
  t: 2 ** 40,
  p: 2 ** 50,
  e: 2 ** 60,
};

/** Parses a qemu-img size ("10G", "512M", "65536", "1.5G"). */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([bkmgtpe]?)$/i.exec(text.trim());
  if (!m) throw usage(`invalid size ${JSON.stringify(text)}`);
  const n = Number(m[1]) * (UNITS[(m[2] as string).toLowerCase()] as number);
  if (!Number.isSafeInteger(Math.round(n))) throw usage(`size ${text} is too large`);
  return Math.round(n);
}

function format(v: string | true | undefined): 'qcow2' | 'raw' | undefined {
  if (v === undefined || v === true) return undefined;
  if (v !== 'qcow2' && v !== 'raw')
    throw new NubesError('Unsupported', `format ${v} is not supported (qcow2, raw)`);
  return v;
}

function createOptions(opts: Map<string, string>): Partial<CreateImageOptions> {
  const out: Partial<CreateImageOptions> = {};
  for (const [k, v] of opts) {
    switch (k) {
      case 'cluster_size':
        out.clusterSize = parseSize(v);
        break;
      case 'compat':
        out.version = v === '0.10' || v === 'v2' ? 2 : 3;
        break;
      case 'refcount_bits':
        out.refcountBits = Number(v);
        break;
      case 'extended_l2':
        out.extendedL2 = v === 'on' || v === 'true';
        break;
      case 'lazy_refcounts':
        out.lazyRefcounts = v === 'on' || v === 'true';
        break;
      case 'preallocation':
        if (v !== 'off' && v !== 'metadata')
          throw new NubesError('Unsupported', `preallocation=${v} is not supported`);
        out.preallocation = v;
        break;
      case 'backing_file':
        out.backingFile = v;
        break;
      case 'backing_fmt':
        out.backingFormat = format(v);
        break;
      case 'compression_type':
        if (v !== 'zlib') throw new NubesError('Unsupported', `compression_type=${v} is not supported`);
        break;
      default:
        throw usage(`unknown option ${k}`);
    }
  }
  return out;
}

function progress(enabled: boolean, io: CliIo): ProgressListener | undefined {
  if (!enabled) return undefined;
  let last = -1;
  return (e) => {
    const pct = e.total === 0 ? 100 : Math.floor((e.done / e.total) * 100);
    if (pct !== last) io.stderr(`    (${pct.toFixed(2)}/100%)\r`);
    last = pct;
  };
}

const json = (v: unknown) => `${JSON.stringify(v, null, 4)}\n`;

function humanSize(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${Number(v.toFixed(2))} ${units[i]}`;
}

/**
 * Runs `nubes-img` with qemu-img's argument conventions and returns the exit code. Errors print
 * `nubes-img: message` on stderr and exit 1 (check keeps qemu-img's 0/2/3/1 codes).
 */
export async function runCli(argv: string[], io: CliIo = processIo): Promise<number> {
  const [command, ...rest] = argv;
  try {
    const p = parseArgs(rest, command === 'snapshot' ? SNAPSHOT_VALUE_FLAGS : VALUE_FLAGS);
    const out = p.flags.get('--output') === 'json';
    switch (command) {
      case 'create': {
        const [file, size] = p.args;
        if (!file) throw usage('create: missing filename');
        const o = createOptions(p.opts);
        const backing = (p.flags.get('-b') as string | undefined) ?? o.backingFile;
        const created = await createImage(file, {
          ...o,
          format: format(p.flags.get('-f')) ?? 'qcow2',
          ...(size ? { size: parseSize(size) } : {}),
          ...(backing ? { backingFile: backing } : {}),
          ...(format(p.flags.get('-F')) ? { backingFormat: format(p.flags.get('-F')) } : {}),
          overwrite: true,
        });
        io.stdout(
          `Formatting '${file}', fmt=${created.format} size=${created.virtualSize}${backing ? ` backing_file=${backing}` : ''}\n`,
        );
        return 0;
      }
      case 'info': {
        const [file] = p.args;
        if (!file) throw usage('info: missing filename');
        const chain = p.flags.has('--backing-chain');
        const infos = await imageInfo(file, { backingChain: chain, format: format(p.flags.get('-f')) });
        if (out) io.stdout(json(chain ? infos : infos[0]));
        else
          for (const i of infos) {
            io.stdout(
              `image: ${i.filename}\nfile format: ${i.format}\nvirtual size: ${humanSize(i['virtual-size'])} (${i['virtual-size']} bytes)\ndisk size: ${humanSize(i['actual-size'])}\n`,
            );
            if (i['cluster-size']) io.stdout(`cluster_size: ${i['cluster-size']}\n`);
            if (i['backing-filename']) io.stdout(`backing file: ${i['backing-filename']}\n`);
            if (i['backing-filename-format'])
              io.stdout(`backing file format: ${i['backing-filename-format']}\n`);
            for (const s of i.snapshots ?? []) io.stdout(`snapshot: ${s.id} ${s.name}\n`);
          }
        return 0;
      }
      case 'check': {
        const [file] = p.args;
        if (!file) throw usage('check: missing filename');
        const repair = p.flags.get('-r');
        if (repair !== undefined && repair !== 'leaks' && repair !== 'all')
          throw usage('check: -r takes leaks or all');
        let result: Awaited<ReturnType<typeof checkImage>>;
        try {
          result = await checkImage(file, {
            repair: (repair as 'leaks' | 'all' | undefined) ?? 'none',
            format: format(p.flags.get('-f')),
          });
        } catch (error) {
          io.stderr(`nubes-img: ${(error as Error).message}\n`);
          return 1;
        }
        if (out) io.stdout(json(checkResultJson(result)));
        else {
          for (const m of result.messages) io.stderr(`${m}\n`);
          if (result.corruptions === 0 && result.leaks === 0)
            io.stdout('No errors were found on the image.\n');
          else
            io.stdout(
              `${result.corruptions} errors were found on the image.\n${result.leaks} leaked clusters were found on the image.\n`,
            );
          io.stdout(`Image end offset: ${result.imageEndOffset}\n`);
        }
        return checkExitCode(result);
      }
      case 'map': {
        const [file] = p.args;
        if (!file) throw usage('map: missing filename');
        const map = await mapImage(file, { format: format(p.flags.get('-f')) });
        if (out) io.stdout(`[${map.map((e) => JSON.stringify(e)).join(',\n')}]\n`);
        else
          for (const e of map.filter((x) => x.data))
            io.stdout(`0x${e.start.toString(16)} 0x${e.length.toString(16)} depth ${e.depth}\n`);
        return 0;
      }
      case 'convert': {
        const [src, dst] = p.args;
        if (!src || !dst) throw usage('convert: needs a source and a destination');
        const o = createOptions(p.opts);
        await convertImage(src, dst, {
          sourceFormat: format(p.flags.get('-f')),
          outputFormat: format(p.flags.get('-O')) ?? 'raw',
          compress: p.flags.has('-c'),
          ...(o.clusterSize ? { clusterSize: o.clusterSize } : {}),
          ...(o.version ? { version: o.version } : {}),
          overwrite: true,
          sync: cacheSync(p.flags.get('-t')),
          onProgress: progress(p.flags.has('-p'), io),
        });
        return 0;
      }
      case 'commit': {
        const [file] = p.args;
        if (!file) throw usage('commit: missing filename');
        await commitImage(file, { keep: p.flags.has('-d'), onProgress: progress(p.flags.has('-p'), io) });
        io.stdout('Image committed.\n');
        return 0;
      }
      case 'rebase': {
        const [file] = p.args;
        const b = p.flags.get('-b');
        if (!file || typeof b !== 'string') throw usage('rebase: needs -b backing and a filename');
        await rebaseImage(file, b, {
          backingFormat: format(p.flags.get('-F')),
          unsafe: p.flags.has('-u'),
          onProgress: progress(p.flags.has('-p'), io),
        });
        return 0;
      }
      case 'resize': {
        const [file, size] = p.args;
        if (!file || !size) throw usage('resize: needs a filename and a size');
        let bytes: number;
        if (/^[+-]/.test(size)) {
          const [current] = await imageInfo(file);
          bytes =
            (current?.['virtual-size'] ?? 0) + (size.startsWith('-') ? -1 : 1) * parseSize(size.slice(1));
        } else bytes = parseSize(size);
        await resizeImage(file, bytes, { shrink: p.flags.has('--shrink') });
        io.stdout('Image resized.\n');
        return 0;
      }
      case 'snapshot': {
        const [file] = p.args;
        if (!file) throw usage('snapshot: missing filename');
        const c = p.flags.get('-c');
        const a = p.flags.get('-a');
        const d = p.flags.get('-d');
        if (typeof c === 'string') await snapshotCreate(file, c);
        else if (typeof a === 'string') await snapshotApply(file, a);
        else if (typeof d === 'string') await snapshotDelete(file, d);
        else {
          const list = await snapshotList(file);
          io.stdout(
            'Snapshot list:\nID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n',
          );
          for (const s of list)
            io.stdout(
              `${s.id.padEnd(10)}${s.name.padEnd(18)}${String(s.vmStateSize).padStart(7)} B ${new Date(s.dateSec * 1000).toISOString()}\n`,
            );
        }
        return 0;
      }
      case 'compare': {
        const [a, b] = p.args;
        if (!a || !b) throw usage('compare: needs two filenames');
        let r: Awaited<ReturnType<typeof compareImages>>;
        try {
          r = await compareImages(a, b, {
            strict: p.flags.has('-s'),
            onProgress: progress(p.flags.has('-p'), io),
          });
        } catch (error) {
          io.stderr(`nubes-img: ${(error as Error).message}\n`);
          return 2;
        }
        if (r.identical) io.stdout('Images are identical.\n');
        else if (r.reason === 'size') io.stdout('Strict mode: Image size mismatch!\n');
        else io.stdout(`Content mismatch at offset ${r.offset}!\n`);
        return r.identical ? 0 : 1;
      }
      case 'measure': {
        const o = createOptions(p.opts);
        const size = p.flags.get('--size');
        const r = await measureImage({
          ...(typeof size === 'string' ? { size: parseSize(size) } : { source: p.args[0] }),
          outputFormat: format(p.flags.get('-O')) ?? 'raw',
          ...(o.clusterSize ? { clusterSize: o.clusterSize } : {}),
          ...(o.refcountBits ? { refcountBits: o.refcountBits } : {}),
          ...(o.extendedL2 ? { extendedL2: true } : {}),
        });
        if (out) io.stdout(json(r));
        else io.stdout(`required size: ${r.required}\nfully allocated size: ${r['fully-allocated']}\n`);
        return 0;
      }
      default:
        io.stderr(
          `usage: nubes-img <create|info|check|map|convert|commit|rebase|resize|snapshot|compare|measure> [options] file...\n`,
        );
        return command === undefined || command === '--help' || command === '-h' ? 0 : 1;
    }
  } catch (error) {
    const code = errorCode(error);
    const reason = error instanceof InvalidImage ? ` [${error.reason}]` : '';
    io.stderr(
      `nubes-img: ${(error as Error).message}${reason}${code ? '' : ` (${String((error as Error).stack)})`}\n`,
    );
    return 1;
  }
}
