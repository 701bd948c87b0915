// A real NetFlow pipeline on loopback, from Debian's packages: softflowd captures on lo and exports NetFlow v9
// to nfcapd (nfdump) on an ephemeral UDP port, which writes its capture file on SIGTERM. Needs root (pcap).
//
// softflowd opens pcap with no read timeout, and libpcap's TPACKET_V3 ring then hands packets over only a
// full block at a time: flush() pads with UDP datagrams to a port of ours (inside softflowd's filter) until
// softflowd has processed every packet it had received, then expires all flows and waits until nfcapd has
// printed each exported record (-E). Every wait is bounded; cleanup() kills what is left.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const TOOL_DIRS = ['/usr/sbin', '/usr/bin', '/sbin', '/bin'];
const TOOLS = ['softflowd', 'softflowctl', 'nfcapd', 'nfdump', 'stdbuf'] as const;
const pollMs = 50;

function findTool(name: string): string | undefined {
  const dirs = [...TOOL_DIRS, ...(process.env.PATH ?? '').split(':').filter(Boolean)];
  return dirs.map((dir) => join(dir, name)).find((candidate) => existsSync(candidate));
}

/** Why the pipeline cannot run here, or undefined when it can. For skip messages. */
export function netflowPipelineUnavailableReason(): string | undefined {
  if (process.platform !== 'linux') return 'the NetFlow pipeline runs on Linux only';
  const missing = TOOLS.filter((tool) => findTool(tool) === undefined);
  if (missing.length > 0) return `${missing.join(', ')} not installed (Debian: softflowd, nfdump; run .ci/install-deps.sh)`;
  if (process.getuid?.() !== 0) return 'softflowd must capture on lo as root';
  return undefined;
}

export interface NetflowPipeline {
  /** Makes softflowd process everything captured so far and export it, and nfcapd receive it. */
  flush(timeoutMs?: number): Promise<void>;
  /** Stops softflowd and nfcapd (which writes its file); returns the capture files, oldest first. */
  stop(timeoutMs?: number): Promise<string[]>;
  /** Kills whatever still runs and removes the directory; safe to call after a failure. */
  cleanup(): Promise<void>;
  log(): string;
}

async function until(condition: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

function watch(child: ChildProcess, name: string, sink: { text: string }): void {
  const append = (chunk: Buffer): void => {
    sink.text += chunk.toString();
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  child.on('exit', (code, signal) => {
    sink.text += `\n[${name} exited: ${signal ?? code}]\n`;
  });
}

async function stopChild(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  await exited;
  clearTimeout(timer);
}

async function freeUdpPort(): Promise<number> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

/** bpfFilter: the traffic to capture, e.g. "tcp port 2525"; the padding port is added to it. */
export async function startNetflowPipeline(bpfFilter: string, startTimeoutMs = 15_000): Promise<NetflowPipeline> {
  const dir = mkdtempSync(join(tmpdir(), 'pushback-netflow-'));
  const flowDir = join(dir, 'flows');
  const control = join(dir, 'softflowd.ctl');
  const nfcapdOut = { text: '' };
  const softflowdOut = { text: '' };
  const children: ChildProcess[] = [];
  const pad = dgram.createSocket('udp4');
  pad.on('message', () => undefined);
  await new Promise<void>((resolve) => pad.bind(0, '127.0.0.1', resolve));
  const padPort = pad.address().port;

  const softflowctl = async (command: string): Promise<string> =>
    (await run(findTool('softflowctl')!, ['-c', control, command], { timeout: 5_000 })).stdout;
  const statistic = (text: string, label: string): number => Number(new RegExp(`${label}: (\\d+)`).exec(text)?.[1] ?? NaN);

  const pipeline: NetflowPipeline = {
    async flush(timeoutMs = 20_000) {
      const received = statistic(await softflowctl('statistics'), 'Packets received by libpcap');
      const sender = dgram.createSocket('udp4');
      try {
        await until(async () => {
          if (statistic(await softflowctl('statistics'), 'Packets processed') >= received) return true;
          for (let index = 0; index < 500; index += 1) sender.send('pad', padPort, '127.0.0.1');
          return false;
        }, timeoutMs, `softflowd to process the ${received} packets it received\n${pipeline.log()}`);
      } finally {
        sender.close();
      }
      await softflowctl('expire-all');
      const exportedRecords = Number(/Flows exported: \d+ \((\d+) records\)/.exec(await softflowctl('statistics'))?.[1] ?? NaN);
      const printed = (): number => (nfcapdOut.text.match(/^Flow Record:/gm) ?? []).length;
      await until(() => printed() >= exportedRecords, timeoutMs, `nfcapd to receive ${exportedRecords} records`).catch((error: Error) => {
        throw new Error(`${error.message}: it printed ${printed()}\n${pipeline.log()}`);
      });
    },
    async stop(timeoutMs = 10_000) {
      // softflowd first: it exports what it still holds as it goes, and nfcapd then writes the file.
      for (const child of [...children].reverse()) await stopChild(child, timeoutMs);
      return readdirSync(flowDir).filter((name) => /^nfcapd\.\d{12}$/.test(name)).sort().map((name) => join(flowDir, name));
    },
    async cleanup() {
      for (const child of children) await stopChild(child, 2_000);
      pad.close();
      rmSync(dir, { recursive: true, force: true });
    },
    log: () => `--- nfcapd ---\n${nfcapdOut.text.slice(-2_000)}\n--- softflowd ---\n${softflowdOut.text.slice(-2_000)}`,
  };

  try {
    mkdirSync(flowDir);
    const nfcapdPort = await freeUdpPort();
    // -E prints every record it receives, line-buffered through stdbuf (coreutils) so flush() can count them
    // as they come. Files rotate hourly and are written on SIGTERM.
    const nfcapd = spawn(findTool('stdbuf')!, ['-oL', findTool('nfcapd')!, '-w', flowDir, '-b', '127.0.0.1', '-p', String(nfcapdPort), '-t', '3600', '-E'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(nfcapd);
    watch(nfcapd, 'nfcapd', nfcapdOut);
    await until(() => nfcapdOut.text.includes('Startup nfcapd.') || nfcapd.exitCode !== null, startTimeoutMs, 'nfcapd to start');
    if (nfcapd.exitCode !== null) throw new Error(`nfcapd did not start\n${pipeline.log()}`);

    const softflowd = spawn(findTool('softflowd')!, [
      '-i', 'lo', '-n', `127.0.0.1:${nfcapdPort}`, '-v', '9', '-T', 'full', '-d', '-c', control, '-p', join(dir, 'softflowd.pid'),
      `(${bpfFilter}) or (udp and dst port ${padPort})`,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(softflowd);
    watch(softflowd, 'softflowd', softflowdOut);
    await until(async () => {
      if (softflowd.exitCode !== null) return true;
      return softflowctl('statistics').then(() => true, () => false);
    }, startTimeoutMs, 'softflowd to answer on its control socket');
    if (softflowd.exitCode !== null) throw new Error(`softflowd did not start\n${pipeline.log()}`);
    return pipeline;
  } catch (error) {
    await pipeline.cleanup();
    throw error;
  }
}
