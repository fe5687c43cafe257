import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    exclude: ['test/bench/**', 'node_modules/**'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: files run two at a time; each starts its own databases and servers.
    maxWorkers: 2,
    reporters: ['default', ['json', { outputFile: '.test-results/vitest.json' }]],
  },
});
