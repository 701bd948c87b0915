// Capacity: how many file descriptors server.maxClients needs, and whether this process's limit holds
// them. A client session holds at most two: its own socket and one connection to Postfix (opened at
// MAIL FROM, reused by later transactions). Everything else the proxy holds is a reserve that does not
// grow with clients. Checked once at start, before anything opens: a limit found short under a flood
// would turn every accept() and every upstream connect into EMFILE, for legitimate senders too.
// The arithmetic is pure; the limit itself comes from descriptor-limit.ts.
import type { Logger } from 'pino';
import { DEFAULT_MAX_CLIENTS, type Policy } from './config/schema.js';
import { raiseSoftToHard, readNofileLimit, type NofileLimit } from './descriptor-limit.js';

/** The client's socket and its one upstream connection. */
export const DESCRIPTORS_PER_CLIENT = 2;

/** Node, libuv and V8 (event loop, thread pool, signal pipes), stdin/stdout/stderr and the log: 29 measured idle. */
const RUNTIME_DESCRIPTORS = 64;
/** The SMTP and the admin listening sockets. */
const LISTENER_DESCRIPTORS = 2;
/** The Redis connection, and a second while a reconnect replaces it. */
const REDIS_DESCRIPTORS = 2;
/** The spool's lock while it is written, and its msg and meta directory handles. */
const SPOOL_DESCRIPTORS = 3;
/** Quarantined messages being written at once; beyond this a write fails and its client hears 451. */
const QUARANTINE_WRITES = 32;
/** Per release in flight: its connection to Postfix and the message file it reads. */
const DESCRIPTORS_PER_RELEASE = 2;
/** The notice relay's SMTP connection, and a second while one closes. */
const NOTICE_DESCRIPTORS = 2;
/** Reverse DNS lookups, the firewall export file, the policy file at reload, and what we did not foresee. */
const SPARE_DESCRIPTORS = 32;

/** What the proxy holds besides its clients, by holder. */
export function reservedDescriptors(policy: Policy): Record<string, number> {
  return {
    runtime: RUNTIME_DESCRIPTORS,
    listeners: LISTENER_DESCRIPTORS,
    // The admin listener closes connections beyond this (admin.maxConnections).
    admin: policy.admin.maxConnections,
    redis: policy.state.redisUrl ? REDIS_DESCRIPTORS : 0,
    spool: SPOOL_DESCRIPTORS + QUARANTINE_WRITES + DESCRIPTORS_PER_RELEASE * policy.quarantine.release.concurrency,
    notices: policy.notices.enabled ? NOTICE_DESCRIPTORS : 0,
    spare: SPARE_DESCRIPTORS,
  };
}

export function reserveTotal(policy: Policy): number {
  return Object.values(reservedDescriptors(policy)).reduce((sum, count) => sum + count, 0);
}

/** Descriptors needed for `maxClients` sessions at once with `reserve` held besides. */
export function descriptorsNeeded(maxClients: number, reserve: number): number {
  return DESCRIPTORS_PER_CLIENT * maxClients + reserve;
}

/** The most sessions a soft limit holds with `reserve` held besides (0: none). */
export function maxClientsWithin(softLimit: number, reserve: number): number {
  if (softLimit === Infinity) return Infinity;
  return Math.max(0, Math.floor((softLimit - reserve) / DESCRIPTORS_PER_CLIENT));
}

export interface CapacityRequest {
  maxClients: number;
  /** The policy left maxClients out: the default may be lowered to what the limit holds. */
  fromDefault: boolean;
  reserve: number;
  limit: NofileLimit;
}

export type CapacityPlan =
  | { ok: true; maxClients: number; lowered: boolean; needed: number }
  | { ok: false; reason: string; needed: number };

/** Whether `limit.soft` holds the sessions asked for; a default that does not fit is lowered, a set value refused. */
export function planCapacity({ maxClients, fromDefault, reserve, limit }: CapacityRequest): CapacityPlan {
  const needed = descriptorsNeeded(maxClients, reserve);
  if (needed <= limit.soft) return { ok: true, maxClients, lowered: false, needed };
  const fitting = maxClientsWithin(limit.soft, reserve);
  if (fromDefault && fitting >= 1) return { ok: true, maxClients: fitting, lowered: true, needed: descriptorsNeeded(fitting, reserve) };
  const asked = `server.maxClients ${maxClients}${fromDefault ? ' (the default)' : ''} needs ${needed} file descriptors`
    + ` (${DESCRIPTORS_PER_CLIENT} per client, ${reserve} besides) but the limit is ${limit.soft}`
    + (limit.hard > limit.soft ? ` (hard ${limit.hard}, which could not be reached)` : '');
  const raise = 'raise it (systemd LimitNOFILE=, docker run --ulimit nofile=N:N, compose ulimits.nofile)';
  const reason = fitting >= 1
    ? `${asked}: ${raise} or set server.maxClients to at most ${fitting}`
    : `${asked}, which leaves no room for any client: ${raise} to at least ${descriptorsNeeded(1, reserve)}`;
  return { ok: false, reason, needed };
}

/** A maxClients the descriptor limit cannot hold: a refusal of the policy, not a fault in the code. */
export class CapacityError extends Error {
  constructor(message: string, readonly descriptorsNeeded: number, readonly nofileLimit: number) {
    super(message);
    this.name = 'CapacityError';
    // Logged as the reason alone: a stack would only point here, and the operator needs the sentence.
    this.stack = `${this.name}: ${message}`;
  }
}

/** How the process's limit is read and raised; the real ones by default, fakes in tests. */
export interface DescriptorLimits {
  read(): Promise<NofileLimit | undefined>;
  /** Why the soft limit could not be raised to `hard`, or undefined when it was. */
  raise(hard: number): Promise<string | undefined>;
}

export const processDescriptorLimits: DescriptorLimits = {
  read: () => readNofileLimit(),
  raise: (hard) => raiseSoftToHard(process.pid, hard),
};

/** Infinity does not survive JSON: the log says "unlimited". */
function limitText(value: number): number | 'unlimited' {
  return value === Infinity ? 'unlimited' : value;
}

/**
 * The policy with the maxClients this process can hold, after raising the soft limit to the hard one
 * where it is lower. Logs one line of what it found; throws CapacityError for a maxClients the policy
 * sets and the limit cannot hold. Where the limit cannot be read it says so and leaves maxClients be.
 */
export async function sizeToDescriptorLimit(policy: Policy, logger: Logger, limits: DescriptorLimits = processDescriptorLimits): Promise<Policy> {
  const { maxClients, maxClientsFromDefault } = policy.server;
  const reserve = reserveTotal(policy);
  const before = await limits.read();
  if (!before) {
    logger.info({ maxClients, descriptorsNeeded: descriptorsNeeded(maxClients, reserve) }, 'descriptor limit unknown (no /proc/self/limits): maxClients not checked against it');
    return policy;
  }
  let after = before;
  let raiseFailed: string | undefined;
  if (before.soft < before.hard) {
    raiseFailed = await limits.raise(before.hard);
    after = (await limits.read()) ?? before;
  }
  const plan = planCapacity({ maxClients, fromDefault: maxClientsFromDefault, reserve, limit: after });
  if (!plan.ok) throw new CapacityError(plan.reason, plan.needed, after.soft);
  const fields = {
    nofileBefore: limitText(before.soft),
    nofileAfter: limitText(after.soft),
    nofileHard: limitText(after.hard),
    maxClients: plan.maxClients,
    descriptorsNeeded: plan.needed,
    ...(raiseFailed ? { raiseFailed } : {}),
  };
  if (!plan.lowered) {
    logger.info(fields, 'descriptor limit holds server.maxClients');
    return policy;
  }
  logger.warn(fields, `descriptor limit holds ${plan.maxClients} clients, not the default ${DEFAULT_MAX_CLIENTS}: server.maxClients lowered (raise the limit for more)`);
  return Object.freeze({ ...policy, server: Object.freeze({ ...policy.server, maxClients: plan.maxClients }) });
}
