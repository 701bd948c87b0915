import { describe, expect, it } from 'vitest';
import { LearningQueue } from '../../src/policy/learning-queue.js';

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('LearningQueue', () => {
  it('learns from every item, in order, and idle() waits for the last store call', async () => {
    const learned: number[] = [];
    const queue = new LearningQueue<number>({
      learn: async (item) => { await turn(); learned.push(item); },
      maxQueued: 1_000, maxPerSlice: 10, sliceMs: 50, maxInFlight: 1_000,
    });
    for (let item = 0; item < 100; item += 1) queue.push(item);
    expect(learned).toEqual([]);
    await queue.idle();
    expect(learned).toEqual(Array.from({ length: 100 }, (_, item) => item));
    expect(queue.stats()).toEqual({ queued: 0, inFlight: 0, dropped: 0 });
  });

  it('starts at most maxPerSlice items per turn, so I/O callbacks run between slices', async () => {
    const started: number[] = [];
    const queue = new LearningQueue<number>({ learn: (item) => { started.push(item); }, maxQueued: 1_000, maxPerSlice: 16, sliceMs: 1_000, maxInFlight: 1_000 });
    for (let item = 0; item < 64; item += 1) queue.push(item);
    await turn();
    expect(started.length).toBe(16);
    await turn();
    expect(started.length).toBe(32);
    await queue.idle();
    expect(started.length).toBe(64);
  });

  it('keeps at most maxInFlight store calls pending', async () => {
    let pending = 0;
    let most = 0;
    const queue = new LearningQueue<number>({
      learn: async () => { pending += 1; most = Math.max(most, pending); await new Promise((resolve) => setTimeout(resolve, 2)); pending -= 1; },
      maxQueued: 1_000, maxPerSlice: 100, sliceMs: 1_000, maxInFlight: 8,
    });
    for (let item = 0; item < 50; item += 1) queue.push(item);
    await queue.idle();
    expect(most).toBe(8);
  });

  it('drops and counts what arrives beyond maxQueued, and survives a learner that throws', async () => {
    const dropped: number[] = [];
    const errors: string[] = [];
    const queue = new LearningQueue<number>({
      learn: (item) => { if (item === 1) throw new Error('sync'); if (item === 2) return Promise.reject(new Error('async')); },
      maxQueued: 3, maxPerSlice: 10, sliceMs: 10, maxInFlight: 10,
      onDropped: (item) => dropped.push(item),
      onError: (error) => errors.push(error.message),
    });
    for (let item = 0; item < 5; item += 1) queue.push(item);
    expect(dropped).toEqual([3, 4]);
    await queue.idle();
    expect(errors.sort()).toEqual(['async', 'sync']);
    expect(queue.stats().dropped).toBe(2);
  });
});
