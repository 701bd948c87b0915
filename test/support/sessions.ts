// Client sessions for load-shaped tests: complete ones (a legitimate sender) and abandoned ones (a
// client that connects, hears the greeting and goes away: one abnormal pair each). Bounded waits.
import { expect } from 'vitest';
import { SmtpDialog } from './smtp-dialog.js';

/**
 * One whole session; returns the code that ended the transaction: the reply to the final dot, or
 * the first refusal (a 4xx/5xx to MAIL or RCPT stops it there, and the client says QUIT).
 */
export async function completeSession(port: number, localAddress = '127.0.0.1', recipient = 'b@example.test', bodyBytes = 0): Promise<number> {
  const dialog = await SmtpDialog.connect(port, { localAddress });
  try {
    expect((await dialog.reply(30_000)).code).toBe(220);
    await dialog.command('EHLO legit.example', 30_000);
    for (const line of ['MAIL FROM:<a@legit.example>', `RCPT TO:<${recipient}>`, 'DATA']) {
      const reply = await dialog.command(line, 30_000);
      if (reply.code >= 400) {
        await dialog.command('QUIT');
        return reply.code;
      }
    }
    dialog.write(`Subject: hello\r\n\r\nlegitimate mail\r\n${'x'.repeat(bodyBytes)}\r\n.\r\n`);
    const final = await dialog.reply(30_000);
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
