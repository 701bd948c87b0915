// Readers for the files under deploy/ and docker-compose.yml, for the tests that check them without a
// Docker engine or a running systemd: systemd units as sections of repeatable keys, Dockerfiles as
// stages of instructions, the compose file as parsed YAML, Postfix's main.cf as key = value.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';

export const REPO = join(import.meta.dirname, '../..');

export function repoPath(...parts: string[]): string {
  return join(REPO, ...parts);
}

export function readRepoFile(...parts: string[]): string {
  return readFileSync(repoPath(...parts), 'utf8');
}

/** A systemd unit: section -> key -> every value given (keys may repeat), comments dropped. */
export type Unit = Record<string, Record<string, string[]>>;

export function parseUnit(text: string): Unit {
  const unit: Unit = {};
  let section: Record<string, string[]> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = unit[header[1] as string] ??= {};
      continue;
    }
    const equals = line.indexOf('=');
    if (!section || equals < 0) throw new Error(`not a unit line: ${line}`);
    const key = line.slice(0, equals).trim();
    (section[key] ??= []).push(line.slice(equals + 1).trim());
  }
  return unit;
}

export interface DockerInstruction {
  keyword: string;
  args: string;
}

export interface DockerStage {
  from: string;
  name?: string;
  instructions: DockerInstruction[];
}

/** Stages of a Dockerfile, continuation lines joined, comments and the syntax directive dropped. */
export function parseDockerfile(text: string): DockerStage[] {
  const logical = text.replace(/\\\n/g, ' ').split('\n').map((line) => line.trim()).filter((line) => line !== '' && !line.startsWith('#'));
  const stages: DockerStage[] = [];
  for (const line of logical) {
    const [keyword = '', ...rest] = line.split(/\s+/);
    const args = rest.join(' ');
    if (keyword.toUpperCase() === 'FROM') {
      const [from = '', as, name] = args.split(/\s+/);
      stages.push({ from, ...(as?.toUpperCase() === 'AS' && name ? { name } : {}), instructions: [] });
      continue;
    }
    const stage = stages[stages.length - 1];
    if (!stage) throw new Error(`instruction before FROM: ${line}`);
    stage.instructions.push({ keyword: keyword.toUpperCase(), args });
  }
  return stages;
}

/** Sources of a COPY or ADD (not --from another stage): the paths before the destination. */
export function copySources(instruction: DockerInstruction): string[] | undefined {
  if (instruction.keyword !== 'COPY' && instruction.keyword !== 'ADD') return undefined;
  const words = instruction.args.split(/\s+/);
  if (words.some((word) => word.startsWith('--from='))) return undefined;
  const paths = words.filter((word) => !word.startsWith('--'));
  return paths.slice(0, -1);
}

/** main.cf text as name -> value (continuation lines joined), as Postfix reads it. */
export function parseMainCf(text: string): Record<string, string> {
  const settings: Record<string, string> = {};
  let last: string | undefined;
  for (const line of text.split('\n')) {
    if (/^\s*(#|$)/.test(line)) continue;
    if (/^\s/.test(line) && last) {
      settings[last] = `${settings[last]} ${line.trim()}`.trim();
      continue;
    }
    const match = /^([A-Za-z0-9_]+)\s*=\s*(.*)$/.exec(line);
    if (!match) throw new Error(`not a main.cf line: ${line}`);
    last = match[1] as string;
    settings[last] = (match[2] as string).trim();
  }
  return settings;
}

/** The -o name=value overrides of the master.cf service whose first field is `service`. */
export function masterCfOverrides(text: string, service: string): Record<string, string> | undefined {
  const lines = text.split('\n').filter((line) => !/^\s*(#|$)/.test(line));
  const start = lines.findIndex((line) => line.split(/\s+/)[0] === service);
  if (start < 0) return undefined;
  const overrides: Record<string, string> = {};
  for (const line of lines.slice(start + 1)) {
    if (!/^\s/.test(line)) break;
    const match = /^\s+-o\s+([A-Za-z0-9_]+)=(.*)$/.exec(line);
    if (match) overrides[match[1] as string] = (match[2] as string).trim();
  }
  return overrides;
}

export interface ComposeService {
  build?: { context: string; dockerfile?: string };
  image?: string;
  environment?: Record<string, string>;
  ports?: string[];
  volumes?: string[];
  env_file?: string | string[];
  networks?: string[] | Record<string, { ipv4_address?: string } | null>;
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  stop_grace_period?: string;
  command?: string[];
}

export interface ComposeFile {
  services: Record<string, ComposeService>;
  networks?: Record<string, { ipam?: { config?: Array<{ subnet?: string }> } }>;
  volumes?: Record<string, unknown>;
}

export function readCompose(): { text: string; compose: ComposeFile } {
  const text = readRepoFile('docker-compose.yml');
  return { text, compose: parse(text) as ComposeFile };
}

/** "60s", "1m30s", "2m" in seconds (compose durations). */
export function durationSeconds(text: string): number {
  let seconds = 0;
  for (const [, amount, unit] of text.matchAll(/(\d+(?:\.\d+)?)(h|m|s|ms|us)/g)) {
    seconds += Number(amount) * ({ h: 3600, m: 60, s: 1, ms: 0.001, us: 0.000001 }[unit as 'h' | 'm' | 's' | 'ms' | 'us']);
  }
  return seconds;
}

/** A port mapping "[host_ip:]host_port:container_port[/proto]". */
export function parsePortMapping(text: string): { hostIp?: string; hostPort: number; containerPort: number } {
  const match = /^(?:(.+):)?(\d+):(\d+)(?:\/(tcp|udp))?$/.exec(text);
  if (!match) throw new Error(`not a port mapping: ${text}`);
  return { ...(match[1] ? { hostIp: match[1] } : {}), hostPort: Number(match[2]), containerPort: Number(match[3]) };
}
