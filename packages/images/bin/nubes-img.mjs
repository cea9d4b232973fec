#!/usr/bin/env node
// The `nubes-img` command: qemu-img's interface over the pure TypeScript engine of @nubes/images.
import { runCli } from '../dist/index.js';

process.exitCode = await runCli(process.argv.slice(2));
