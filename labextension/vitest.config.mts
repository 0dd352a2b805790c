import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/__tests__/**/*.spec.{ts,tsx}'],
    environment: 'node',
    // the pure modules are time-zone aware: run them in a fixed zone so results do not
    // depend on the machine's
    env: { TZ: 'UTC' }
  }
});
