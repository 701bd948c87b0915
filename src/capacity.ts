// Client capacity sized to the machine. Each client session holds one descriptor; connections to
// Postfix are capped apart (upstream.maxConnections, plus the quarantine release's), so an idle
// flood of sessions needs no descriptor on Postfix's side. The admin listener, the spool, Redis and
// the process itself need a few besides. At start the soft descriptor limit is raised to the hard
// one (prlimit(1) on our own pid: Node has no setrlimit), and server.maxClients is checked against
// it: unset, it is the default or what the limit can hold; set, a value the limit cannot hold is
// refused with the reason, so the operator learns it at start and not from EMFILE under a flood.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

export const DEFAULT_MAX_CLIENTS = 20_000;
/** Descriptors outside client sessions: the listening sockets, spool, Redis, logs, DNS, Node's own. */
export const RESERVED_DESCRIPTORS = 128;
/**
 * Descriptors per client session: its socket, plus a tenth for what sessions open besides (a spool
 * file while a quarantined message is written, a socket accepted past the cap before its 421).
 */
const DESCRIPTORS_PER_SESSION = 1.1;

/** Connections besides the clients': the admin port's, and Postfix's (relaying and release together). */
export interface OtherConnections {
  admin: number;
  upstream: number;
}

export interface DescriptorLimit {
  soft: number;
  hard: number;
}

export interface CapacityPlan {
  maxClients: number;
  /** Descriptors that maxClients sessions, the admin connections and the reserve can use. */
  descriptorsNeeded: number;
  /** Set when server.maxClients was given and the limit cannot hold it. */
  refusal?: string;
  /** Set when the default was lowered to what the limit holds. */
  lowered?: boolean;
}

/** Pure: what maxClients the descriptor limit allows for this request. */
export function planCapacity(requested: number | undefined, limit: DescriptorLimit, others: OtherConnections): CapacityPlan {
  const fixed = others.admin + others.upstream + RESERVED_DESCRIPTORS;
  // clients + a tenth, in integers (1.1 * 50_000 is not 55_000 in floating point).
  const need = (clients: number): number => clients + Math.ceil(clients / 10) + fixed;
  let fits = Math.max(0, Math.floor((limit.soft - fixed) / DESCRIPTORS_PER_SESSION));
  while (fits > 0 && need(fits) > limit.soft) fits -= 1;
  if (requested !== undefined) {
    if (need(requested) <= limit.soft) return { maxClients: requested, descriptorsNeeded: need(requested) };
    return {
      maxClients: requested,
      descriptorsNeeded: need(requested),
      refusal: `server.maxClients ${requested} needs ${need(requested)} file descriptors (${DESCRIPTORS_PER_SESSION} per session, ${others.upstream} to Postfix, ${others.admin} admin, ${RESERVED_DESCRIPTORS} reserved) but the limit is ${limit.soft} (hard ${limit.hard}): raise LimitNOFILE / ulimit -n, or lower server.maxClients to at most ${fits}`,
    };
  }
  if (need(DEFAULT_MAX_CLIENTS) <= limit.soft) return { maxClients: DEFAULT_MAX_CLIENTS, descriptorsNeeded: need(DEFAULT_MAX_CLIENTS) };
  const maxClients = Math.max(1, fits);
  return { maxClients, descriptorsNeeded: need(maxClients), lowered: true };
}

/** The open-files limit of this process, from /proc/self/limits; undefined where there is none (not Linux). */
export function readDescriptorLimit(): DescriptorLimit | undefined {
  let text: string;
  try {
    text = readFileSync('/proc/self/limits', 'utf8');
  } catch {
    return undefined;
  }
  const match = /^Max open files\s+(\S+)\s+(\S+)/m.exec(text);
  if (!match) return undefined;
  const value = (field: string): number => (field === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(field));
  return { soft: value(match[1]!), hard: value(match[2]!) };
}

/**
 * Raises the soft limit towards the hard one (never above what is wanted: a huge soft limit slows
 * some children that close every descriptor). Returns the limit afterwards; unchanged when prlimit
 * is missing or refuses.
 */
export function raiseDescriptorLimit(limit: DescriptorLimit, wanted: number): DescriptorLimit {
  const target = Math.min(limit.hard, Math.max(wanted, limit.soft));
  if (target <= limit.soft) return limit;
  try {
    execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${target}:${limit.hard}`], { stdio: 'ignore', timeout: 2_000 });
  } catch {
    return limit;
  }
  return readDescriptorLimit() ?? limit;
}

/** The capacity this process can honour: the limit raised as far as useful, then planned. */
export function sizeCapacity(requested: number | undefined, others: OtherConnections): CapacityPlan & { limit?: DescriptorLimit } {
  const before = readDescriptorLimit();
  if (!before) return { maxClients: requested ?? DEFAULT_MAX_CLIENTS, descriptorsNeeded: 0 };
  const wanted = planCapacity(requested ?? DEFAULT_MAX_CLIENTS, { soft: Number.MAX_SAFE_INTEGER, hard: Number.MAX_SAFE_INTEGER }, others).descriptorsNeeded;
  const limit = raiseDescriptorLimit(before, wanted);
  return { ...planCapacity(requested, limit, others), limit };
}
