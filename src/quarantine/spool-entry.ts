// One quarantined message's record, as its metadata file holds it: the envelope, the client, the verdict
// that sent it here, and the release bookkeeping. Also entry ids (Postfix's shape, safe as file names)
// and the list filter. Pure: no file system, no clock; times and randomness are passed in.
import ipaddr from 'ipaddr.js';
import { z } from 'zod';

export const ENTRY_STATES = ['held', 'releasing', 'released', 'rejected'] as const;
/**
 * held: waiting for release; releasing: a release attempt is under way (found at open = the process died
 * mid-attempt); released: Postfix took it; rejected: Postfix refused it for good (or it expired).
 */
export type EntryState = (typeof ENTRY_STATES)[number];

export interface ClientInfo {
  address: string;
  port: number;
  /** Reverse DNS name when the listener looked it up. */
  hostname?: string;
  helo: string;
}

export interface MailFrom {
  address: string;
  /** MAIL FROM parameters as smtp-server parsed them (SIZE, BODY, SMTPUTF8 …); a flag without value is true. */
  params: Record<string, string | true>;
}

export interface Verdict {
  reasons: string[];
  score: number;
}

/** What the caller knows when it quarantines a message; the spool adds id, size and bookkeeping. */
export interface NewEntry {
  client: ClientInfo;
  mailFrom: MailFrom;
  /** Accepted recipients only. */
  recipients: string[];
  /** DSN parameters of a recipient (" NOTIFY=SUCCESS ORCPT=rfc822;a+2Bb@x"), the client's xtext kept. */
  recipientParams?: Record<string, string>;
  verdict: Verdict;
  /** Defaults to the spool clock at the start of write(). */
  receivedAtMs?: number;
  /** First release attempt; defaults to receivedAtMs (eligible at the next off-peak window). */
  nextAttemptAtMs?: number;
  /** "with" clause of our Received header: ESMTP, ESMTPS, ESMTPA, ESMTPSA or SMTP. Default ESMTP. */
  protocol?: string;
}

export interface EntryMeta {
  /** Format of this record; bumped when a field changes meaning. */
  version: 1;
  id: string;
  receivedAtMs: number;
  client: ClientInfo;
  mailFrom: MailFrom;
  recipients: string[];
  recipientParams?: Record<string, string>;
  /** Bytes of the message file: our Received header plus the message as received (unstuffed). */
  sizeBytes: number;
  verdict: Verdict;
  /** Release attempts made so far. */
  attempts: number;
  nextAttemptAtMs: number;
  state: EntryState;
  lastError?: string;
}

/** The fields a release may change. recipients narrows the list after a partial delivery. */
export type EntryPatch = Partial<Pick<EntryMeta, 'state' | 'attempts' | 'nextAttemptAtMs' | 'lastError' | 'recipients'>>;

export interface EntryFilter {
  /** Client address inside this prefix ("192.0.2.0/24", "2001:db8::/32"; a bare address means that address). */
  sourceCidr?: string;
  /** Received at or after this instant. */
  sinceMs?: number;
  state?: EntryState;
}

// An id has the shape of a Postfix queue id (short form: 5 hex digits of the microsecond, then more
// hex), because the sender hears it in "250 2.0.0 Ok: queued as <id>": an id of another shape would
// tell it the message was quarantined rather than relayed. Ids of the earlier time-stamped shape
// ("20250131T235959123Z-0a1b2c3d4e") are still read from an existing spool.
const CURRENT_ID = /^[0-9A-F]{11}$/;
const LEGACY_ID = /^\d{8}T\d{9}Z-[0-9a-f]{10}$/;
const ID_PATTERN = new RegExp(`${CURRENT_ID.source}|${LEGACY_ID.source}`);
/** Random bytes drawn per id; only the last 6 hex digits go into it (the time fills the other 5). */
export const ID_RANDOM_BYTES = 3;

/**
 * "A1F3C0B7E42": like Postfix's short queue ids, the microsecond within the second (of receivedAtMs,
 * the sub-millisecond part from the random digits) in 5 hex digits, then 6 random hex digits. Not
 * sortable by time: order by receivedAtMs. The spool re-draws on a clash with a live entry.
 */
export function formatEntryId(receivedAtMs: number, randomHex: string): string {
  if (!/^[0-9a-f]{6,}$/i.test(randomHex)) throw new RangeError(`entry id needs at least 6 hex digits, got "${randomHex}"`);
  const random = randomHex.slice(-6).toUpperCase();
  const microsecond = (Math.trunc(receivedAtMs) % 1000) * 1000 + (Number.parseInt(random, 16) % 1000);
  return `${microsecond.toString(16).toUpperCase().padStart(5, '0')}${random}`;
}

/** Ids come back from the admin API and become file names: anything else could walk out of the spool. */
export function isEntryId(text: string): boolean {
  return ID_PATTERN.test(text);
}

const nonNegativeInt = z.number().int().nonnegative();
const metaSchema = z.object({
  version: z.literal(1),
  id: z.string().regex(ID_PATTERN),
  receivedAtMs: nonNegativeInt,
  client: z.object({
    address: z.string(),
    port: nonNegativeInt,
    hostname: z.string().optional(),
    helo: z.string(),
  }),
  mailFrom: z.object({
    address: z.string(),
    params: z.record(z.string(), z.union([z.string(), z.literal(true)])),
  }),
  recipients: z.array(z.string()),
  recipientParams: z.record(z.string(), z.string()).optional(),
  sizeBytes: nonNegativeInt,
  verdict: z.object({ reasons: z.array(z.string()), score: z.number() }),
  attempts: nonNegativeInt,
  nextAttemptAtMs: nonNegativeInt,
  state: z.enum(ENTRY_STATES),
  lastError: z.string().optional(),
});

/** Parses a metadata file's text; throws on anything that is not a whole, valid record. */
export function parseEntryMeta(text: string): EntryMeta {
  return freezeMeta(metaSchema.parse(JSON.parse(text)));
}

/** Records in the spool's index are shared with every caller of list() and get(): nobody may change them in place. */
export function freezeMeta(meta: EntryMeta): EntryMeta {
  Object.freeze(meta.client);
  Object.freeze(meta.mailFrom.params);
  Object.freeze(meta.mailFrom);
  Object.freeze(meta.recipients);
  if (meta.recipientParams) Object.freeze(meta.recipientParams);
  Object.freeze(meta.verdict.reasons);
  Object.freeze(meta.verdict);
  return Object.freeze(meta);
}

export function serializeEntryMeta(meta: EntryMeta): Buffer {
  return Buffer.from(`${JSON.stringify(meta)}\n`);
}

export function applyPatch(meta: EntryMeta, patch: EntryPatch): EntryMeta {
  const next: EntryMeta = { ...meta, ...patch };
  if ('lastError' in patch && patch.lastError === undefined) delete next.lastError;
  return freezeMeta(metaSchema.parse(next));
}

/** Builds the filter once (the CIDR is parsed here: a bad one throws RangeError before any entry is looked at). */
export function compileEntryFilter(filter: EntryFilter = {}): (meta: EntryMeta) => boolean {
  const range = filter.sourceCidr === undefined ? undefined : parseRange(filter.sourceCidr);
  return (meta) => {
    if (filter.state !== undefined && meta.state !== filter.state) return false;
    if (filter.sinceMs !== undefined && meta.receivedAtMs < filter.sinceMs) return false;
    if (range !== undefined && !addressInRange(meta.client.address, range)) return false;
    return true;
  };
}

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

function parseRange(cidr: string): Range {
  const text = cidr.trim();
  try {
    if (text.includes('/')) return ipaddr.parseCIDR(text);
    const address = ipaddr.parse(text);
    return [address, address.kind() === 'ipv4' ? 32 : 128];
  } catch {
    throw new RangeError(`expected an address or CIDR prefix, got "${cidr}"`);
  }
}

function addressInRange(address: string, [network, bits]: Range): boolean {
  if (!ipaddr.isValid(address)) return false;
  // ::ffff:192.0.2.1 is how a dual-stack listener reports an IPv4 client.
  const parsed = ipaddr.process(address);
  return parsed.kind() === network.kind() && parsed.match(network, bits);
}
