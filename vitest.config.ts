import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));
const packages = ['core', 'auth', 'quota', 'scheduler', 'images', 'kvm', 'netns'];

export default defineConfig({
  resolve: {
    // Tests exercise the sources, so `npm test` needs no build in between edits.
    alias: [
      { find: '@nubes/testing', replacement: here('./testing/src/index.ts') },
      ...packages.map((name) => ({
        find: `@nubes/${name}`,
        replacement: here(`./packages/${name}/src/index.ts`),
      })),
    ],
  },
  test: {
    include: [
      'packages/*/test/**/*.test.ts',
      'testing/test/**/*.test.ts',
      'examples/test/**/*.test.ts',
      'examples/*/test/**/*.test.ts',
    ],
    globalSetup: ['./testing/src/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
