// A PairStore that behaves like a shared store which can fail or hang on demand, backed by a MemoryPairStore.
// Lets unit tests drive outages of the recorder and the status monitor without a Redis.
import { MemoryPairStore } from '../../src/state/memory-pair-store.js';
import type { PairIncrement, PairStore, PairWindow } from '../../src/state/pair-store.js';

export type FlakyMode = 'ok' | 'fail' | 'hang';

export class FlakyPairStore implements PairStore {
  readonly kind = 'redis' as const;
  readonly windowSeconds: number;
  readonly bucketSeconds: number;
  addMode: FlakyMode = 'ok';
  windowMode: FlakyMode = 'ok';
  readonly batches: PairIncrement[][] = [];
  windowCalls = 0;

  constructor(readonly inner: MemoryPairStore = new MemoryPairStore()) {
    this.windowSeconds = inner.windowSeconds;
    this.bucketSeconds = inner.bucketSeconds;
  }

  add(increments: readonly PairIncrement[], nowMs: number): Promise<void> {
    this.batches.push([...increments]);
    return this.act(this.addMode, () => this.inner.add(increments, nowMs), 'add');
  }

  window(nowMs: number, topSources: number): Promise<PairWindow> {
    this.windowCalls += 1;
    return this.act(this.windowMode, () => this.inner.window(nowMs, topSources), 'window');
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private act<T>(mode: FlakyMode, call: () => Promise<T>, what: string): Promise<T> {
    if (mode === 'hang') return new Promise<T>(() => undefined);
    if (mode === 'fail') return Promise.reject(new Error(`simulated ${what} failure`));
    return call();
  }
}

export function recordingLogger() {
  const warnings: Array<{ obj: object; msg: string }> = [];
  const infos: Array<{ obj: object; msg: string }> = [];
  return {
    warnings,
    infos,
    logger: {
      warn: (obj: object, msg: string) => void warnings.push({ obj, msg }),
      info: (obj: object, msg: string) => void infos.push({ obj, msg }),
    },
  };
}
