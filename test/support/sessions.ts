// Client sessions for load-shaped tests: complete ones (a legitimate sender) and abandoned ones (a
// client that connects, hears the greeting and goes away: one abnormal pair each). Bounded waits.
import { expect } from 'vitest';
import { SmtpDialog } from './smtp-dialog.js';

export async function completeSession(port: number, localAddress = '127.0.0.1', recipient = 'b@example.test'): Promise<number> {
  const dialog = await SmtpDialog.connect(port, { localAddress });
  try {
    expect((await dialog.reply()).code).toBe(220);
    await dialog.command('EHLO legit.example');
    await dialog.command('MAIL FROM:<a@legit.example>');
    await dialog.command(`RCPT TO:<${recipient}>`);
    await dialog.command('DATA');
    dialog.write('Subject: hello\r\n\r\nlegitimate mail\r\n.\r\n');
    const final = await dialog.reply();
    await dialog.command('QUIT');
    return final.code;
  } finally {
    dialog.destroy();
  }
}

export async function abandonedSession(port: number, localAddress = '127.0.0.1'): Promise<void> {
  const dialog = await SmtpDialog.connect(port, { localAddress });
  await dialog.reply();
  dialog.destroy();
}

/** Runs `count` tasks with at most `concurrency` in flight. */
export async function inParallel<T>(count: number, concurrency: number, task: (index: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array(count);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const index = next;
      next += 1;
      results[index] = await task(index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return results;
}
