// A private dnsmasq (Debian's dnsmasq-base) on a free loopback port, serving records the test
// chooses (--ptr-record, --host-record, --server=/zone/…) and NXDOMAIN for every other name; plus a
// UDP "server" that reads queries and never answers, for time-outs. .ci/install-deps.sh installs it.
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { Resolver } from 'node:dns/promises';
import { userInfo } from 'node:os';

const DNSMASQ = process.env.PUSHBACK_TEST_DNSMASQ ?? ['/usr/sbin/dnsmasq', '/usr/bin/dnsmasq'].find((path) => existsSync(path));

export interface TestDns {
  /** "127.0.0.1:port", as dns.servers takes it. */
  server: string;
  port: number;
  stop(): Promise<void>;
}

/** A UDP port on loopback that takes every query and answers none. */
export interface SilentDns {
  server: string;
  port: number;
  /** Queries received so far. */
  queries(): number;
  stop(): Promise<void>;
}

/** Starts dnsmasq with these record options; resolves once it answers a query. */
export async function startDnsmasq(records: readonly string[]): Promise<TestDns> {
  if (!DNSMASQ) throw new Error('dnsmasq not found: run .ci/install-deps.sh (Debian package dnsmasq-base)');
  let lastOutput = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freeUdpPort();
    const child = spawn(DNSMASQ, [
      '--keep-in-foreground', '--conf-file=/dev/null', '--no-resolv', '--no-hosts', '--pid-file=',
      `--user=${userInfo().username}`, '--log-facility=-',
      `--port=${port}`, '--listen-address=127.0.0.1', '--bind-interfaces',
      // Every name it holds no record for is answered NXDOMAIN, as an authoritative server would.
      '--local=/#/',
      ...records,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    child.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    if (await answers(port, child)) {
      return { server: `127.0.0.1:${port}`, port, stop: () => stopChild(child) };
    }
    await stopChild(child);
    lastOutput = output;
  }
  throw new Error(`dnsmasq did not start:\n${lastOutput}`);
}

export async function startSilentDns(): Promise<SilentDns> {
  const socket: Socket = createSocket('udp4');
  let received = 0;
  socket.on('message', () => { received++; });
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  const { port } = socket.address();
  return {
    server: `127.0.0.1:${port}`,
    port,
    queries: () => received,
    stop: async () => {
      socket.close();
      await once(socket, 'close');
    },
  };
}

/** A UDP port nobody listens on now (queries to it are refused by the kernel: ECONNREFUSED). */
export async function freeUdpPort(): Promise<number> {
  const socket = createSocket('udp4');
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  const { port } = socket.address();
  socket.close();
  await once(socket, 'close');
  return port;
}

/** Polls with a PTR query (NXDOMAIN is an answer) until dnsmasq replies, at most 5 s. */
async function answers(port: number, child: ChildProcess): Promise<boolean> {
  const resolver = new Resolver({ timeout: 200, tries: 1 });
  resolver.setServers([`127.0.0.1:${port}`]);
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline && child.exitCode === null) {
    try {
      await resolver.resolvePtr('1.0.0.127.in-addr.arpa');
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOTFOUND') return true;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 2_000);
  await exited;
  clearTimeout(timer);
}
