// Reads a V8 .cpuprofile (node --cpu-prof) and lists the functions with the most self time, so the
// benchmark can say where the proxy spends its CPU without opening DevTools.
import { readFile } from 'node:fs/promises';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  /** "function (file:line)", with the file relative to the repository or node_modules. */
  where: string;
  selfMs: number;
  /** Share of busy time: idle time is left out, as it says nothing about where work goes. */
  sharePercent: number;
}

export interface ProfileSummary {
  idleMs: number;
  busyMs: number;
  top: SelfTime[];
  /** Self time by area: our code (dist/), each package, node internals, native and V8. */
  byArea: SelfTime[];
}

export async function summariseProfile(file: string, repositoryRoot: string, count = 15): Promise<ProfileSummary> {
  const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
  const whereById = new Map<number, string>();
  for (const node of profile.nodes) whereById.set(node.id, describe(node, repositoryRoot));
  // A sample's time is the delta to the next one; summing deltas per node is its self time.
  const selfUsByWhere = new Map<string, number>();
  let totalUs = 0;
  profile.samples.forEach((nodeId, index) => {
    const deltaUs = Math.max(0, profile.timeDeltas[index + 1] ?? 0);
    const where = whereById.get(nodeId) ?? `node ${nodeId}`;
    selfUsByWhere.set(where, (selfUsByWhere.get(where) ?? 0) + deltaUs);
    totalUs += deltaUs;
  });
  const idleUs = selfUsByWhere.get('(idle)') ?? 0;
  selfUsByWhere.delete('(idle)');
  const busyUs = totalUs - idleUs;
  const byAreaUs = new Map<string, number>();
  for (const [where, selfUs] of selfUsByWhere) byAreaUs.set(area(where), (byAreaUs.get(area(where)) ?? 0) + selfUs);
  const ranked = (entries: Map<string, number>, limit: number): SelfTime[] => [...entries.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, limit)
    .map(([where, selfUs]) => ({ where, selfMs: selfUs / 1000, sharePercent: busyUs > 0 ? (100 * selfUs) / busyUs : 0 }));
  return { idleMs: idleUs / 1000, busyMs: busyUs / 1000, top: ranked(selfUsByWhere, count), byArea: ranked(byAreaUs, 8) };
}

function area(where: string): string {
  const file = /\(([^()]*):\d+\)$/.exec(where)?.[1];
  if (!file) return 'native, V8 and GC (no JS file)';
  if (file.startsWith('node:')) return 'node internals';
  if (file.startsWith('dist/')) return 'proxy (dist/)';
  const parts = file.split('/');
  return `package ${file.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]}`;
}

function describe(node: ProfileNode, repositoryRoot: string): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const name = functionName || '(anonymous)';
  if (!url) return name;
  let file = url.replace(/^file:\/\//, '');
  const modules = file.lastIndexOf('/node_modules/');
  if (modules >= 0) file = file.slice(modules + '/node_modules/'.length);
  else if (file.startsWith(`${repositoryRoot}/`)) file = file.slice(repositoryRoot.length + 1);
  return `${name} (${file}:${lineNumber + 1})`;
}
