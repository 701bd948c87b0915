// The proxy as a separate process (the real CLI through tsx), for tests where several nodes share
// one Redis. Ports are ephemeral; they are read from the "listening" log line.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const CLI = join(import.meta.dirname, '../../src/cli/main.ts');

export interface ProxyProcess {
  smtpPort: number;
  adminPort: number;
  child: ChildProcess;
  /** Every line the process wrote to stdout (its JSON log), in order. */
  logLines: string[];
  /** The policy file it was started with (tests rewrite it to reload). */
  policyFile: string;
  status(): Promise<Record<string, unknown> & { status: number; degraded: boolean; store: string }>;
  stop(): Promise<void>;
}

export async function startProxyProcess(policyYaml: string, env: NodeJS.ProcessEnv = {}, startTimeoutMs = 20_000): Promise<ProxyProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'pushback-node-'));
  const policyFile = join(dir, 'policy.yaml');
  writeFileSync(policyFile, policyYaml);
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'serve', '--config', policyFile], {
    env: { ...process.env, PUSHBACK_LISTEN: '127.0.0.1:0', PUSHBACK_ADMIN: '127.0.0.1:0', PUSHBACK_SPOOL_DIR: join(dir, 'spool'), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const lines = createInterface({ input: child.stdout! });
  const logLines: string[] = [];
  lines.on('line', (line) => logLines.push(line));
  const ready = new Promise<{ smtpPort: number; adminPort: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`proxy did not start within ${startTimeoutMs} ms: ${stderr}`)), startTimeoutMs);
    child.once('exit', (code) => reject(new Error(`proxy exited with ${code}: ${stderr}`)));
    lines.on('line', (line) => {
      if (!line.includes('smtp-pushback listening')) return;
      const record = JSON.parse(line) as { listen: string; admin: string };
      clearTimeout(timer);
      resolve({ smtpPort: Number(record.listen.split(':').pop()), adminPort: Number(record.admin.split(':').pop()) });
    });
  });
  const { smtpPort, adminPort } = await ready;
  return {
    smtpPort,
    adminPort,
    child,
    logLines,
    policyFile,
    async status() {
      const response = await fetch(`http://127.0.0.1:${adminPort}/status`, { signal: AbortSignal.timeout(3_000) });
      return (await response.json()) as never;
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
