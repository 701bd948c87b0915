// The blocked set that firewall pushback exports: which stored verdicts (and deny-list entries) become
// firewall elements, how overlapping prefixes collapse into a set nftables accepts, and the three
// renderings (JSON rows, one prefix per line, an nftables script), and which verdicts on prefixes have
// the evidence to be widened to at the firewall (firewall-widening.ts). Pure: entries and times in, text out.
import type { Action } from '../policy/actions.js';
import { parseCidr, type CidrList } from '../policy/cidr-list.js';
import { firewallMayWiden, shareBlockBits, SOURCE_BITS, widerThanSource, type FirewallWideningPolicy } from '../detect/firewall-widening.js';
import { addressBits, parseAddress, type AddressFamily } from '../detect/prefix.js';

export interface BlockedPrefix {
  /** Canonical "network/length" (an address on its own is a /32 or /128). */
  prefix: string;
  family: AddressFamily;
  lengthBits: number;
  /** The verdict's action, or "deny-list" for a permanent entry of the policy. */
  action: Action | 'deny-list';
  detector: string;
  reasons: string[];
  /** When the block ends; null for a permanent deny-list entry. */
  expiresAtMs: number | null;
}

/** A stored verdict as the shared store lists it: key "v:<scope>", the verdict JSON, its remaining life. */
export interface VerdictEntry {
  key: string;
  value: string;
  ttlMs: number;
}

interface StoredVerdictFields {
  action?: unknown;
  detector?: unknown;
  reasons?: unknown;
}

export const VERDICT_KEY_PREFIX = 'v:';

/**
 * The verdicts whose action is exported. The expiry is the store's remaining life (the Redis clock every
 * node shares), not the expiresAtMs written inside, so nodes with skewed clocks export the same timeouts.
 * Entries that do not parse are skipped: they are some other writer's, or from a version that wrote
 * differently, and a firewall must never block on a guess.
 */
export function blockedFromVerdicts(entries: readonly VerdictEntry[], exportedActions: ReadonlySet<string>, nowMs: number): BlockedPrefix[] {
  const blocked: BlockedPrefix[] = [];
  for (const entry of entries) {
    if (!entry.key.startsWith(VERDICT_KEY_PREFIX) || entry.ttlMs <= 0) continue;
    let fields: StoredVerdictFields | null;
    try {
      fields = JSON.parse(entry.value) as StoredVerdictFields | null;
    } catch {
      continue;
    }
    if (typeof fields !== 'object' || fields === null || typeof fields.action !== 'string' || !exportedActions.has(fields.action)) continue;
    const range = tryParseCidr(entry.key.slice(VERDICT_KEY_PREFIX.length));
    if (!range) continue;
    blocked.push({
      ...range,
      action: fields.action as Action,
      detector: typeof fields.detector === 'string' ? fields.detector : 'unknown',
      reasons: Array.isArray(fields.reasons) ? fields.reasons.filter((reason): reason is string => typeof reason === 'string') : [],
      // Infinity: an entry an operator listed by hand with no end (a +inf score in Redis's index) is permanent.
      expiresAtMs: Number.isFinite(entry.ttlMs) ? nowMs + entry.ttlMs : null,
    });
  }
  return blocked;
}

/** The policy's deny list as permanent elements. */
export function blockedFromDenyList(deny: readonly string[]): BlockedPrefix[] {
  return deny.flatMap((entry) => {
    const range = tryParseCidr(entry);
    return range ? [{ ...range, action: 'deny-list' as const, detector: 'deny-list', reasons: [`deny list ${range.prefix}`], expiresAtMs: null }] : [];
  });
}

/**
 * One element per address range, none inside another: an nftables interval set refuses overlapping
 * elements ("conflicting intervals"), and a router ACL gains nothing from them. The same prefix twice
 * keeps the later expiry (permanent beats any). A prefix inside a wider one is dropped even if it outlives
 * it: the exporter refreshes when the wider one expires, and the narrower one comes back then.
 * Sorted by family, then address order, then length.
 */
export function collapseBlocked(blocked: readonly BlockedPrefix[], spared?: CidrList): BlockedPrefix[] {
  const steps = collapseSteps(blocked, spared);
  for (let step = steps.next(); ; step = steps.next()) if (step.done) return step.value;
}

/** Entries handled between two pauses of collapseSteps. */
export const COLLAPSE_PAUSE_EVERY = 5_000;

/**
 * collapseBlocked as a generator that pauses every COLLAPSE_PAUSE_EVERY entries: the exporter lets the
 * event loop run at each pause, so tens of thousands of verdicts never hold sessions up for long.
 * `spared` (the allow list) is never blocked: an entry overlapping any of its ranges, inside or around
 * it, is left out whole, as the proxy lets those clients in before any verdict (a firewall cannot
 * carve a hole into an interval element).
 */
export function* collapseSteps(blocked: readonly BlockedPrefix[], spared?: CidrList): Generator<void, BlockedPrefix[]> {
  const byPrefix = new Map<string, BlockedPrefix>();
  for (const entry of blocked) {
    const known = byPrefix.get(entry.prefix);
    if (!known || outlives(entry, known)) byPrefix.set(entry.prefix, entry);
  }
  const lengthsByFamily: Record<AddressFamily, number[]> = { ipv4: [], ipv6: [] };
  for (const entry of byPrefix.values()) lengthsByFamily[entry.family].push(entry.lengthBits);
  for (const family of ['ipv4', 'ipv6'] as const) lengthsByFamily[family] = [...new Set(lengthsByFamily[family])].sort((a, b) => a - b);
  // Each network is read once into a number: containment is a shift and a set lookup per length.
  const sparedKeys = new Set<string>();
  for (const range of spared?.ranges ?? []) {
    const value = networkValue(range.family, range.network.toString());
    for (const length of lengthsByFamily[range.family]) if (length <= range.lengthBits) sparedKeys.add(containerKey(range.family, value, length));
  }
  const networks: Array<[BlockedPrefix, number | bigint]> = [];
  const held = new Set<string>();
  for (const entry of byPrefix.values()) {
    const address = entry.prefix.slice(0, entry.prefix.lastIndexOf('/'));
    const network = networkValue(entry.family, address);
    // Around an allowed range, or inside one (an allowed range holds its first address).
    if (sparedKeys.has(containerKey(entry.family, network, entry.lengthBits)) || spared?.matches(address)) continue;
    networks.push([entry, network]);
    held.add(containerKey(entry.family, network, entry.lengthBits));
    if (networks.length % COLLAPSE_PAUSE_EVERY === 0) yield;
  }
  const kept: Array<[BlockedPrefix, number | bigint]> = [];
  for (let index = 0; index < networks.length; index += 1) {
    const [entry, network] = networks[index]!;
    if (!lengthsByFamily[entry.family].some((length) => length < entry.lengthBits && held.has(containerKey(entry.family, network, length)))) kept.push(networks[index]!);
    if ((index + 1) % COLLAPSE_PAUSE_EVERY === 0) yield;
  }
  return kept
    .sort(([left, leftNetwork], [right, rightNetwork]) => {
      if (left.family !== right.family) return left.family === 'ipv4' ? -1 : 1;
      if (leftNetwork !== rightNetwork) return leftNetwork < rightNetwork ? -1 : 1;
      return left.lengthBits - right.lengthBits;
    })
    .map(([entry]) => entry);
}

/** The verdicts the firewall may drop, and the verdicts on prefixes it may not for want of evidence. */
export interface WideningSplit {
  allowed: BlockedPrefix[];
  withheld: BlockedPrefix[];
}

/** withWideningEvidence in one go (wideningSteps without the pauses). */
export function withWideningEvidence(blocked: readonly BlockedPrefix[], policy: Readonly<FirewallWideningPolicy>): WideningSplit {
  const steps = wideningSteps(blocked, policy);
  for (let step = steps.next(); ; step = steps.next()) if (step.done) return step.value;
}

/**
 * Splits the blocked set: a verdict on a prefix wider than one source stays only when the verdicts on single
 * sources in the same set give it the evidence firewall-widening.ts asks for (distinct sources, and the share of
 * the prefix's blocks they fall in). Verdicts on sources pass, and so do deny-list entries: the operator's own.
 * Pauses every COLLAPSE_PAUSE_EVERY entries, like collapseSteps.
 */
export function* wideningSteps(blocked: readonly BlockedPrefix[], policy: Readonly<FirewallWideningPolicy>): Generator<void, WideningSplit> {
  // A flood's verdicts are on addresses: no prefix to weigh, no address to parse.
  if (!blocked.some((entry) => entry.action !== 'deny-list' && widerThanSource(entry.family, entry.lengthBits))) return { allowed: [...blocked], withheld: [] };
  const allowed: BlockedPrefix[] = [];
  const widened: Array<[BlockedPrefix, number | bigint]> = [];
  const widenedLengths: Record<AddressFamily, Set<number>> = { ipv4: new Set(), ipv6: new Set() };
  /** One per source (an IPv6 address counts under its /64), however many verdicts name it. */
  const sources = new Map<string, [AddressFamily, number | bigint]>();
  for (let index = 0; index < blocked.length; index += 1) {
    const entry = blocked[index]!;
    if (entry.action === 'deny-list') {
      allowed.push(entry);
    } else {
      const network = networkValue(entry.family, entry.prefix.slice(0, entry.prefix.lastIndexOf('/')));
      if (widerThanSource(entry.family, entry.lengthBits)) {
        widened.push([entry, network]);
        widenedLengths[entry.family].add(entry.lengthBits);
      } else {
        allowed.push(entry);
        sources.set(containerKey(entry.family, network, SOURCE_BITS[entry.family]), [entry.family, network]);
      }
    }
    if ((index + 1) % COLLAPSE_PAUSE_EVERY === 0) yield;
  }
  if (widened.length === 0) return { allowed, withheld: [] };
  const evidence = new Map<string, { sources: number; blocks: Set<string> }>();
  for (const [entry, network] of widened) evidence.set(containerKey(entry.family, network, entry.lengthBits), { sources: 0, blocks: new Set() });
  let counted = 0;
  for (const [family, network] of sources.values()) {
    for (const length of widenedLengths[family]) {
      const found = evidence.get(containerKey(family, network, length));
      if (!found) continue;
      found.sources += 1;
      found.blocks.add(containerKey(family, network, shareBlockBits(family, length)));
    }
    counted += 1;
    if (counted % COLLAPSE_PAUSE_EVERY === 0) yield;
  }
  const withheld: BlockedPrefix[] = [];
  for (const [entry, network] of widened) {
    const found = evidence.get(containerKey(entry.family, network, entry.lengthBits))!;
    if (firewallMayWiden(entry.family, entry.lengthBits, { sources: found.sources, blocksCovered: found.blocks.size }, policy)) allowed.push(entry);
    else withheld.push(entry);
  }
  return { allowed, withheld };
}

/** The network's first `length` bits, as a key: IPv4 in plain numbers (the common case, and cheap), IPv6 in bigint. */
function containerKey(family: AddressFamily, network: number | bigint, length: number): string {
  const shift = addressBits(family) - length;
  const top = typeof network === 'number' ? (shift === 32 ? 0 : network >>> shift) : network >> BigInt(shift);
  return `${family === 'ipv4' ? 4 : 6}:${top}/${length}`;
}

export interface NftablesNames {
  table: string;
  setV4: string;
  setV6: string;
}

/** Elements per `add element` line: keeps lines readable and each statement well under nft's limits. */
const ELEMENTS_PER_STATEMENT = 500;

/**
 * An nftables script for `nft -f`: declares the table and both sets (a no-op when they exist with the same
 * definition), flushes them and adds the current elements with their remaining timeouts, all in the one
 * transaction nft -f runs, so a router never sees a half-loaded set. The table holds only the sets: the
 * rule that drops their members is the operator's (deploy/nftables), so loading this never changes a chain.
 */
export function renderNftables(blocked: readonly BlockedPrefix[], names: NftablesNames, nowMs: number): string {
  const v4 = blocked.filter((entry) => entry.family === 'ipv4');
  const v6 = blocked.filter((entry) => entry.family === 'ipv6');
  const table = `inet ${names.table}`;
  const lines = [
    '#!/usr/sbin/nft -f',
    `# smtp-pushback firewall sets, written ${new Date(nowMs).toISOString()}: ${v4.length} IPv4 and ${v6.length} IPv6 prefixes.`,
    '# Generated: every refresh replaces this file atomically. Load it with `nft -f` and drop the sets\' members',
    `# in a chain of your own, e.g. ip saddr @${names.setV4} tcp dport 25 drop (see deploy/nftables).`,
    `table ${table} {`,
    `\tset ${names.setV4} {`,
    '\t\ttype ipv4_addr',
    '\t\tflags interval, timeout',
    '\t}',
    `\tset ${names.setV6} {`,
    '\t\ttype ipv6_addr',
    '\t\tflags interval, timeout',
    '\t}',
    '}',
    `flush set ${table} ${names.setV4}`,
    `flush set ${table} ${names.setV6}`,
  ];
  for (const [set, entries] of [[names.setV4, v4], [names.setV6, v6]] as const) {
    for (let start = 0; start < entries.length; start += ELEMENTS_PER_STATEMENT) {
      const elements = entries.slice(start, start + ELEMENTS_PER_STATEMENT).map((entry) => nftElement(entry, nowMs));
      lines.push(`add element ${table} ${set} { ${elements.join(', ')} }`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/** One prefix per line, for routers and firewalls that pull (GET /pushback?format=text). */
export function renderPrefixList(blocked: readonly BlockedPrefix[]): string {
  return blocked.map((entry) => `${entry.prefix}\n`).join('');
}

/** Whole seconds left, at least 1: nft refuses a zero timeout, and a block must not outlast its verdict by more than a second. */
export function timeoutSeconds(entry: BlockedPrefix, nowMs: number): number | null {
  return entry.expiresAtMs === null ? null : Math.max(1, Math.ceil((entry.expiresAtMs - nowMs) / 1000));
}

function nftElement(entry: BlockedPrefix, nowMs: number): string {
  // Hosts are written bare (a /32 element is the same thing, but reads as a range to an operator).
  const host = entry.lengthBits === (entry.family === 'ipv4' ? 32 : 128);
  const element = host ? entry.prefix.slice(0, entry.prefix.lastIndexOf('/')) : entry.prefix;
  const seconds = timeoutSeconds(entry, nowMs);
  return seconds === null ? element : `${element} timeout ${seconds}s`;
}

function outlives(candidate: BlockedPrefix, known: BlockedPrefix): boolean {
  if (known.expiresAtMs === null) return false;
  return candidate.expiresAtMs === null || candidate.expiresAtMs > known.expiresAtMs;
}

const IPV4_CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/;

/**
 * Verdict scopes are written canonical by the screen (an address, or "network/length"): dotted IPv4,
 * by far the common case under a flood, is read by hand here, as parseCidr costs tens of microseconds
 * and the export reads every verdict each refresh. Anything else, or anything odd, goes to parseCidr.
 */
function tryParseCidr(text: string): Pick<BlockedPrefix, 'prefix' | 'family' | 'lengthBits'> | undefined {
  const match = IPV4_CIDR.exec(text);
  if (match) {
    const octets = match.slice(1, 5).map(Number);
    const lengthBits = match[5] === undefined ? 32 : Number(match[5]);
    const canonical = octets.every((octet, index) => octet <= 255 && String(octet) === match[index + 1]);
    if (canonical && lengthBits <= 32 && (ipv4Value(octets) & ~ipv4Mask(lengthBits)) === 0) {
      return { prefix: `${octets.join('.')}/${lengthBits}`, family: 'ipv4', lengthBits };
    }
  }
  try {
    const range = parseCidr(text);
    return { prefix: range.text, family: range.family, lengthBits: range.lengthBits };
  } catch {
    return undefined;
  }
}

function ipv4Value(octets: readonly number[]): number {
  return ((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) | 0;
}

function ipv4Mask(lengthBits: number): number {
  return lengthBits === 0 ? 0 : (-1 << (32 - lengthBits)) | 0;
}

/** A network address as an unsigned number (IPv4) or a bigint (IPv6, 128 bits). */
function networkValue(family: AddressFamily, address: string): number | bigint {
  if (family === 'ipv4') return ipv4Value(address.split('.').map(Number)) >>> 0;
  return parseAddress(address).toByteArray().reduce((value, byte) => (value << 8n) | BigInt(byte), 0n);
}

