// Test layers: unit (pure maths), contract (stores, memory and Redis), integration (real listener
// on ephemeral ports, real clients), e2e (a throwaway Postfix). One run covers them all.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: ['default'],
  },
});
