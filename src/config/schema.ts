// The policy schema: every key an operator can set, its type, its default and its bounds.
// The parsed policy is one frozen snapshot (see load.ts); nothing else reads the YAML.
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { z } from 'zod';
import { parseCidr } from '../policy/cidr-list.js';
import { parseHostPort } from '../util/host-port.js';

const hostPort = z.string().transform((text, ctx) => {
  try {
    return parseHostPort(text);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
});

/** A CIDR or a bare address; the reason is the parser's (e.g. host bits set in 192.0.2.1/24). */
const cidr = z.string().superRefine((text, ctx) => {
  try {
    parseCidr(text);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
  }
});

const ipAddress = z.string().refine((text) => net.isIP(text) !== 0, { message: 'expected an IP address' });
const positiveInt = z.number().int().positive();
/** Node's timers fire at once beyond this (2^31 - 1 ms, about 24.8 days). */
const MAX_TIMER_MS = 2_147_483_647;
const nonNegativeInt = z.number().int().nonnegative();
/** Status, metrics, health checks and a few dashboards at once. */
export const DEFAULT_ADMIN_MAX_CONNECTIONS = 32;

const serverSchema = z.strictObject({
  /** Where clients connect: the MX address. PUSHBACK_LISTEN overrides it. */
  listen: hostPort.prefault('127.0.0.1:2525'),
  /** Name in our greeting and EHLO reply. */
  hostname: z.string().min(1).default(os.hostname()),
  /** Extra greeting text after "ESMTP". */
  banner: z.string().default(''),
  /**
   * Concurrent client sessions. Unset: 20,000, or fewer when the descriptor limit (raised to its hard
   * limit at start) cannot hold that many; set: refused at start when it cannot be held. An idle
   * client costs about 10 KB and Postfix nothing, so the cap is sized for floods, not for mail.
   */
  maxClients: positiveInt.optional(),
  /**
   * Above this share of maxClients, a newcomer makes room: the session that least looks like mail
   * (silent since the greeting, then idle after HELO, then a suspect, longest idle first; never one
   * in a transaction) is closed with 421. Only when none can go is the newcomer refused.
   */
  evictAbovePercent: z.number().int().min(1).max(100).default(90),
  /** Concurrent sessions of one client address (Postfix's smtpd_client_connection_count_limit); more get 421. */
  maxSessionsPerAddress: positiveInt.default(50),
  /** Concurrent sessions of one IPv4 /24 and of one IPv6 /64. Allow-listed and proven senders are exempt from all three. */
  maxSessionsPerPrefixV4: positiveInt.default(400),
  maxSessionsPerPrefixV6: positiveInt.default(400),
  /** Load balancers allowed to send a PROXY protocol v1 header; nobody else may. */
  proxyProtocolFrom: z.array(ipAddress).default([]),
  /**
   * Hide PIPELINING from EHLO (postscreen's pipelining test): a client that sends several commands
   * at once anyway is counted as misbehaving. Costs legitimate senders a round trip per command.
   */
  hidePipelining: z.boolean().default(false),
  /**
   * Forward-confirmed reverse DNS of clients (XCLIENT NAME only when confirmed, REVERSE_NAME the PTR name),
   * through the dns resolver; off, as lookups per connection are an amplifier.
   */
  reverseDns: z.boolean().default(false),
  /**
   * SIGTERM drain: new connections and transactions get 421 at once, open sessions have this long
   * to finish, then the rest get 421 (a message already with Postfix hears its reply first).
   */
  shutdownDrainSeconds: nonNegativeInt.max(3_600).default(30),
  /** STARTTLS is offered only when both files are given. */
  tls: z
    .strictObject({ keyFile: z.string().min(1), certFile: z.string().min(1) })
    .optional(),
});

const limitsSchema = z.strictObject({
  /** Announced in EHLO (SIZE) and enforced during DATA. Keep it at or below Postfix's message_size_limit. */
  maxMessageBytes: positiveInt.default(10_240_000),
  /** Recipients per message; more get 452 (Postfix: smtpd_recipient_limit). */
  maxRecipients: positiveInt.default(1000),
  /** Longest command line accepted (Postfix: line_length_limit). */
  maxLineBytes: z.number().int().min(512).default(2048),
  /** A client silent this long while we wait for it gets 421 (Postfix: smtpd_timeout). */
  idleTimeoutSeconds: positiveInt.default(300),
  /** Whole-session deadline: a client dripping a byte at a time must not hold a slot forever. */
  sessionDeadlineSeconds: positiveInt.default(900),
});

const upstreamSchema = z.strictObject({
  /** Postfix's smtpd for the proxy. PUSHBACK_UPSTREAM overrides it. */
  address: hostPort.prefault('127.0.0.1:10025'),
  /** Our EHLO name towards Postfix; defaults to server.hostname. */
  heloName: z.string().min(1).optional(),
  /**
   * required (the default): refuse to relay (451) when Postfix does not offer XCLIENT, because
   * relaying as the proxy, a loopback client inside Debian's default mynetworks, is an open relay;
   * auto: send it when Postfix offers it (and warn when it does not);
   * off: never send it (Postfix then sees the proxy as the client: mind your relay restrictions).
   */
  xclient: z.enum(['auto', 'required', 'off']).default('required'),
  connectTimeoutMs: positiveInt.default(5_000),
  /** Greeting, EHLO, XCLIENT, MAIL, RCPT, DATA, RSET replies. */
  replyTimeoutMs: positiveInt.default(60_000),
  /** Longest wait for Postfix to take more message bytes while streaming DATA. */
  dataStallTimeoutMs: positiveInt.default(120_000),
  /** Reply to the final dot; shorter than a client's 10 minutes so it hears our 451 first. */
  dataDoneTimeoutMs: positiveInt.default(300_000),
  /**
   * Upstream connections held at once: set it to Postfix's smtpd process limit (default_process_limit, 100).
   * At 80 % of it the proxy treats Postfix as under stress (short idle time-out).
   */
  maxConnections: positiveInt.default(100),
  /** Of those, held for one client address at once (Postfix's anvil no longer counts clients behind XCLIENT). */
  maxConnectionsPerAddress: positiveInt.default(10),
  /**
   * Share (percent) of maxConnections that clients neither allow-listed nor proven may hold together. Beyond
   * it, the transaction silent the longest (100 ms or more since our last reply) among them is cut to make room,
   * else (after one 100 ms wait) MAIL gets 451.
   */
  untrustedSharePercent: z.number().int().min(1).max(100).default(80),
});

const adminSchema = z.strictObject({
  /** Admin HTTP listener; loopback by default. PUSHBACK_ADMIN overrides it. */
  listen: hostPort.prefault('127.0.0.1:8025'),
  /**
   * Host names the admin listener answers to besides IP addresses and localhost (the name you reach it by
   * through a tunnel or a reverse proxy). Other Host headers get 421: a web page cannot rebind its own
   * name to the admin port and read it from your browser.
   */
  allowedHosts: z.array(z.string().min(1).regex(/^[A-Za-z0-9.-]+$/, 'a host name, without port')).default([]),
  /**
   * Admin connections at once; more are closed as they arrive. Each holds a file descriptor, so the cap
   * keeps idle admin clients from using up the ones SMTP clients need.
   */
  maxConnections: positiveInt.max(1_000).default(DEFAULT_ADMIN_MAX_CONNECTIONS),
});

const stateSchema = z.strictObject({
  /** Absent: in-memory state on this node. PUSHBACK_REDIS_URL overrides it. */
  redisUrl: z.string().min(1).nullable().default(null),
  /** Prefix of every Redis key; braces are reserved for our Cluster hash tags. */
  keyPrefix: z.string().min(1).regex(/^[^{}]*$/, 'must not contain { or }').default('pushback:'),
  /** A Redis call slower than this counts as failed; sessions never wait on Redis. */
  commandTimeoutMs: positiveInt.default(250),
  connectTimeoutMs: positiveInt.default(1_000),
  /** How often this node's pair counts go to Redis, in one round trip. */
  flushIntervalMs: z.number().int().min(10).default(250),
  /**
   * Redis unreachable: "open" keeps relaying on this node's own view (the default);
   * "closed" defers new sessions with 421 until Redis is back.
   */
  whenUnavailable: z.enum(['open', 'closed']).default('open'),
});

const entropySchema = z
  .strictObject({
    /** Length of the rolling window of pairs (the entropy paper's Tw). */
    windowSeconds: positiveInt.default(10),
    /** The window slides by buckets of this length. */
    bucketSeconds: positiveInt.default(1),
    /** delta: |D| <= delta is critical (0), D > delta safe (1), D < -delta danger (-1). */
    deltaBits: z.number().nonnegative().default(0.5),
    /**
     * A reply the client has not answered for this long counts as an abnormal pair at once (the
     * paper's time-out), even while the session waits on until the idle timeout.
     */
    pairTimeoutSeconds: positiveInt.default(10),
    /** Below this many pairs in the window the server is quiet, and quiet is safe. */
    minPairs: nonNegativeInt.default(20),
    /** How often the status is recomputed (one Redis read each time). */
    statusIntervalMs: z.number().int().min(100).default(1_000),
    /** Sources listed by abnormal pairs in /status. */
    topSources: nonNegativeInt.max(1_000).default(10),
    /** Distinct sources tracked per bucket; more still count in the totals (bounds memory under spoofing). */
    maxSourcesPerBucket: positiveInt.default(2_000),
  })
  .refine((entropy) => entropy.windowSeconds % entropy.bucketSeconds === 0, {
    message: 'windowSeconds must be a multiple of bucketSeconds',
    path: ['windowSeconds'],
  });

const clockTime = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$|^24:00$/, 'expected HH:MM (00:00 to 24:00)');
const dayName = z.enum(['*', 'sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat']);

const quarantineSchema = z.strictObject({
  /**
   * One spool per node (PUSHBACK_SPOOL_DIR overrides it); each node releases its own. Unset: /var/spool/smtp-pushback,
   * or, for a user who cannot write there, a spool of their own (see spoolDirCandidates).
   */
  spoolDir: z.string().min(1).optional(),
  /** Spool limits: when either is reached the proxy defers (452) instead of accepting. */
  maxBytes: positiveInt.default(1_073_741_824),
  maxMessages: positiveInt.default(10_000),
  /** Bearer token for admin calls that change the quarantine (PUSHBACK_ADMIN_TOKEN overrides it). */
  adminToken: z.string().min(16, 'use at least 16 characters').nullable().default(null),
  release: z.strictObject({
    /** When release may run: the off-peak windows, in this time zone (IANA name). */
    timeZone: z.string().min(1).refine((zone) => {
      try {
        new Intl.DateTimeFormat('en-US', { timeZone: zone });
        return true;
      } catch {
        return false;
      }
    }, 'unknown time zone').default('UTC'),
    windows: z.array(z.strictObject({
      days: z.array(dayName).min(1).default(['*']),
      from: clockTime,
      to: clockTime,
    })).default([{ days: ['*'], from: '22:00', to: '06:00' }]),
    /** How often the scheduler looks for mail to release. */
    intervalSeconds: positiveInt.default(30),
    /** Release rate and concurrency, so release never becomes the next flood. */
    messagesPerSecond: z.number().positive().default(5),
    concurrency: positiveInt.default(2),
    /** Release only while Postfix's median reply time is below this. */
    maxUpstreamLatencyMs: positiveInt.default(1_000),
    /** Retry after a 4xx: exponential from base to max (Postfix: minimal/maximal_backoff_time). */
    backoffBaseSeconds: positiveInt.default(300),
    backoffMaxSeconds: positiveInt.default(4_000),
    /** Entries older than this are expired (Postfix: maximal_queue_lifetime = 5d). */
    maxAgeHours: z.number().positive().default(120),
    /** A source deny-listed or still under a verdict at release time: keep holding, or expire the entry. */
    whenStillSuspect: z.enum(['hold', 'expire']).default('hold'),
    /** Send a DSN to the sender when Postfix rejects released mail (5xx). Off: bouncing suspect mail is backscatter. */
    bounceRejected: z.boolean().default(false),
  }).prefault({}),
});

/** A DNS server: an address, or address:port ([IPv6]:port); port 53 when none is given. */
const dnsServer = z.string().transform((text, ctx) => {
  const trimmed = text.trim();
  if (net.isIP(trimmed) !== 0) return { host: trimmed, port: 53 };
  try {
    const server = parseHostPort(trimmed);
    if (net.isIP(server.host) !== 0 && server.port > 0) return server;
  } catch {
    // Reported below, in the words of this key.
  }
  ctx.addIssue({ code: 'custom', message: `expected an IP address or address:port ([IPv6]:port), got "${text}"` });
  return z.NEVER;
});

const dnsSchema = z.strictObject({
  /** The servers every lookup of the proxy asks (reverse DNS of clients); empty: the system's (/etc/resolv.conf). */
  servers: z.array(dnsServer).default([]),
  /** A query unanswered this long (its retry included) has failed; reverse DNS takes at most two in a row. */
  timeoutMs: positiveInt.max(30_000).default(1_000),
});

const logSchema = z.strictObject({
  level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

/** An nftables table or set name: what nft accepts without quoting. */
const nftName = z.string().regex(/^[A-Za-z][A-Za-z0-9_]{0,62}$/, 'must be a letter then letters, digits or _ (at most 63)');
const statusValue = z.union([z.literal(1), z.literal(0), z.literal(-1)]);
const actionName = z.enum(['pass', 'tarpit', 'defer', 'reject', 'quarantine']);

const sfdsThresholdSetSchema = z.strictObject({
  name: z.string().min(1),
  /** The aggregation period: 3600 s is the paper's hour. */
  periodSeconds: positiveInt,
  /** Mean packet size must be over this (the paper: 100 bytes). */
  minMeanPacketBytes: z.number().nonnegative(),
  /** Flows (sessions) per period must be over this (the paper: 180 per hour). */
  minFlowsPerPeriod: z.number().nonnegative(),
  /** Consecutive periods over the rate must be over this (the paper: 5 hours). */
  minDurationPeriods: nonNegativeInt,
});

const pushbackSchema = z.strictObject({
  /** Never screened (CIDR or address, IPv4 and IPv6). */
  allow: z.array(cidr).default([]),
  /** Always refused with 554 (CIDR or address). */
  deny: z.array(cidr).default([]),
  /** How long a verdict found by the detectors holds, on every node. */
  verdictTtlSeconds: positiveInt.default(600),
  /** A source that completed this many clean sessions passes untouched for ttlHours (postscreen's cache). */
  proven: z.strictObject({ sessions: positiveInt.default(3), ttlHours: z.number().positive().default(24) }).prefault({}),
  /**
   * Extra wait before the greeting (early talkers show up in it): `safe` for every client not proven or
   * allow-listed; while the status is 0 or -1, `critical` or `danger` for those with points against them.
   */
  greetWaitMs: z.strictObject({
    safe: nonNegativeInt.default(0),
    critical: nonNegativeInt.default(1_000),
    danger: nonNegativeInt.default(2_000),
  }).prefault({}),
  /** Idle timeout while the status is 0 or -1 (Postfix: smtpd_timeout = ${stress?10}s). */
  stressIdleTimeoutSeconds: positiveInt.default(10),
  /** Points a source gets from each detector; the action table below turns points into an action. */
  scores: z.strictObject({
    /** Abnormal pairs while the server status is 0 or -1 (entropy status). */
    entropy: z.number().nonnegative().default(5),
    /** Flooding under an SFDS threshold set. */
    sfds: z.number().nonnegative().default(15),
    earlyTalker: z.number().nonnegative().default(10),
    nonSmtp: z.number().nonnegative().default(30),
    pipelining: z.number().nonnegative().default(5),
    /** Per unknown command beyond the first two of a session. */
    unknownCommand: z.number().nonnegative().default(1),
    /** Inside a prefix that k suspects made suspect. */
    prefix: z.number().nonnegative().default(5),
  }).prefault({}),
  /** A source counts for the entropy detector with at least this many abnormal pairs in the window ... */
  entropyMinAbnormalPairs: positiveInt.default(1),
  /** ... making at least this share of its own pairs. */
  entropyMinAbnormalShare: z.number().min(0).max(1).default(0.5),
  /** How long protocol misbehaviour of a source is remembered. */
  misbehaviourTtlSeconds: positiveInt.default(3_600),
  /** First row whose status list holds the server status and whose minScore the source reaches wins; none: pass. */
  actions: z.array(z.strictObject({
    status: z.array(statusValue).min(1).default([1, 0, -1]),
    minScore: z.number().nonnegative(),
    action: actionName,
  })).default([
    // Only blatant abuse (non-SMTP on the port) is refused outright: a 5xx loses mail on a false positive.
    { status: [1, 0, -1], minScore: 30, action: 'reject' },
    // A flood that completes its sessions (SFDS) is held, not lost: quarantined for off-peak release.
    { status: [1, 0, -1], minScore: 15, action: 'quarantine' },
    { status: [0, -1], minScore: 10, action: 'defer' },
    { status: [1, 0, -1], minScore: 10, action: 'tarpit' },
    { status: [0, -1], minScore: 5, action: 'tarpit' },
  ]),
  tarpit: z.strictObject({
    /** Delay of each reply: base + perScore x score, at most max. */
    baseDelayMs: nonNegativeInt.default(1_000),
    perScoreDelayMs: nonNegativeInt.default(500),
    maxDelayMs: nonNegativeInt.default(15_000),
    /** Sessions tarpitted at once (OpenBSD spamd -B); beyond it new suspects get 421 and a close. */
    maxConcurrent: positiveInt.default(200),
  }).prefault({}),
  /** Where "defer" answers: 421 at connect (cheapest), or 450 at each RCPT. */
  deferAt: z.enum(['connect', 'rcpt']).default('connect'),
  prefix: z.strictObject({
    /** Suspects inside one prefix that make the prefix suspect. */
    suspectsPerPrefix: z.number().int().min(2).default(5),
    /** The widest prefix it may grow to: /16 for IPv4, /48 for IPv6. */
    widestV4: z.union([z.literal(32), z.literal(24), z.literal(16)]).default(16),
    widestV6: z.union([z.literal(128), z.literal(64), z.literal(48)]).default(48),
  }).prefault({}),
  sfds: z.strictObject({
    sets: z.array(sfdsThresholdSetSchema).min(1).refine((sets) => new Set(sets.map((set) => set.name)).size === sets.length, 'set names must be unique').default([
      { name: 'paper-hourly', periodSeconds: 3_600, minMeanPacketBytes: 100, minFlowsPerPeriod: 180, minDurationPeriods: 5 },
      // An operator's fast set: a source over 120 sessions a minute that carry data (over 60 bytes a packet,
      // where refused and abandoned sessions stay near 40) floods from its first such minute.
      { name: 'minute', periodSeconds: 60, minMeanPacketBytes: 60, minFlowsPerPeriod: 120, minDurationPeriods: 0 },
    ]),
    /** Sources tracked at once; beyond it the least active are forgotten (bounded memory). */
    maxSources: positiveInt.default(50_000),
    /** NetFlow records of TCP to these destination ports are SMTP flows (`smtp-pushback sfds`, offline). */
    smtpPorts: z.array(z.number().int().min(1).max(65_535)).min(1).default([25]),
  }).prefault({}),
  /**
   * Firewall pushback: the blocked prefixes (verdicts with these actions, and the deny list) exported for
   * routers and firewalls, so a flood is dropped before it reaches the proxy at all.
   */
  firewall: z.strictObject({
    /** Verdict actions that become firewall blocks. A block loses no mail only where the proxy refuses anyway. */
    actions: z.array(actionName.exclude(['pass'])).default(['reject']),
    /** The policy's deny list is exported too, as permanent elements. */
    includeDenyList: z.boolean().default(true),
    /** How often the shared verdicts are read again (other nodes' verdicts arrive this way). */
    refreshSeconds: positiveInt.max(86_400).default(5),
    /** Prefixes exported at most; beyond it the rest are left out and the log says so. */
    maxEntries: positiveInt.default(65_536),
    /**
     * More evidence than the screen's widening: a verdict on a prefix wider than one source (IPv4 /24 and /16,
     * IPv6 /48) is exported only when the prefix holds minSources distinct sources with exported verdicts of
     * their own, falling in at least this share of its blocks (the 256 addresses of a /24, the 256 /24s of a
     * /16, the 65,536 /64s of a /48), and no proven sender. The sources' own verdicts are exported regardless.
     */
    widening: z.strictObject({
      minSources: positiveInt.default(16),
      minSharePercentV4: z.number().min(0).max(100).default(10),
      minSharePercentV6: z.number().min(0).max(100).default(0.05),
    }).prefault({}),
    /** nftables script written atomically on every change; empty: none is written. */
    nftablesFile: z.string().refine((file) => file === '' || path.isAbsolute(file), 'must be an absolute path (the service runs from /)').default(''),
    table: nftName.default('smtp_pushback'),
    setV4: nftName.default('blocked_v4'),
    setV6: nftName.default('blocked_v6'),
    /** Run after each change, without a shell ({file} is the nftables file), e.g. [nft, -f, "{file}"]; empty: none. */
    command: z.array(z.string().min(1)).default([]),
    commandTimeoutMs: positiveInt.max(MAX_TIMER_MS).default(10_000),
  })
    .refine((firewall) => firewall.setV4 !== firewall.setV6, { message: 'setV4 and setV6 must differ', path: ['setV6'] })
    .refine((firewall) => firewall.nftablesFile !== '' || !firewall.command.some((arg) => arg.includes('{file}')), {
      message: 'the command names {file} but no nftablesFile is set',
      path: ['command'],
    })
    .prefault({}),
  /** Bencsáth's queue trigger: a slow or temp-failing Postfix makes the status at most 0. */
  upstreamPressure: z.strictObject({
    windowSeconds: positiveInt.default(30),
    latencyMs: positiveInt.default(2_000),
    tempFailRate: z.number().min(0).max(1).default(0.3),
    minReplies: positiveInt.default(20),
  }).prefault({}),
});

const emailAddress = z.email('expected an email address (user@domain.example)');

/** One network's contact (the SFDS paper's §3.1: organisation, administrator, email, sub-network). */
export const noticeContactSchema = z.strictObject({
  /** The network, CIDR or address; a source gets the contact of the longest prefix holding it. */
  cidr,
  organisation: z.string().min(1),
  email: emailAddress,
  /** The administrator's name, for the greeting. */
  name: z.string().min(1).optional(),
});

export type NoticeContact = z.output<typeof noticeContactSchema>;

/** Entries naming a network an earlier entry already names (one contact per network); unparsable ones are skipped. */
export function duplicateNetworks(cidrs: readonly string[]): Array<{ index: number; firstIndex: number; network: string }> {
  const seen = new Map<string, number>();
  const duplicates: Array<{ index: number; firstIndex: number; network: string }> = [];
  cidrs.forEach((text, index) => {
    let network: string;
    try {
      network = parseCidr(text).text;
    } catch {
      return;
    }
    const firstIndex = seen.get(network);
    if (firstIndex === undefined) seen.set(network, index);
    else duplicates.push({ index, firstIndex, network });
  });
  return duplicates;
}

const noticesSchema = z
  .strictObject({
    /** Email the network's contact when one of its sources floods (SFDS verdict). Off by default. */
    enabled: z.boolean().default(false),
    /** Envelope and header sender of notices; required when enabled. */
    from: emailAddress.nullable().default(null),
    cc: z.array(emailAddress).default([]),
    bcc: z.array(emailAddress).default([]),
    relay: z.strictObject({
      /** The SMTP relay notices go through; required when enabled without dryRunDir. */
      address: hostPort.nullable().default(null),
      /** TLS from the start (port 465); otherwise STARTTLS when the relay offers it. */
      secure: z.boolean().default(false),
      auth: z.strictObject({
        user: z.string({ error: 'required: the user to log in as (PUSHBACK_NOTICES_RELAY_PASS gives only the password)' }).min(1),
        pass: z.string(),
      }).nullable().default(null),
      /** Connect, greeting, each reply, and the whole send: a notice slower than this has failed. */
      timeoutMs: positiveInt.max(MAX_TIMER_MS).default(10_000),
    }).prefault({}),
    /** At most one notice per contact address per period, shared by every node through the state store. */
    periodHours: z.number().positive().max(8_760).default(24),
    /** Wait this long after the first flooding source of a network, so one notice lists its neighbours too. */
    batchDelayMs: nonNegativeInt.max(MAX_TIMER_MS).default(5_000),
    contacts: z.array(noticeContactSchema).default([]).superRefine((contacts, ctx) => {
      for (const { index, firstIndex, network } of duplicateNetworks(contacts.map((contact) => contact.cidr))) {
        ctx.addIssue({ code: 'custom', path: [index, 'cidr'], message: `${network} already has a contact (notices.contacts.${firstIndex})` });
      }
    }),
    /** More contacts from a file (relative to the policy file): YAML like contacts, or lines "CIDR EMAIL ORGANISATION". */
    contactsFile: z.string().min(1).nullable().default(null),
    /** Write each notice as an .eml file here instead of sending it (to try notices out). */
    dryRunDir: z.string().min(1).refine((dir) => path.isAbsolute(dir), 'must be an absolute path (the service runs from /)').nullable().default(null),
  })
  .superRefine((notices, ctx) => {
    if (!notices.enabled) return;
    if (notices.from === null) ctx.addIssue({ code: 'custom', path: ['from'], message: 'required when notices are enabled' });
    if (notices.relay.address === null && notices.dryRunDir === null) {
      ctx.addIssue({ code: 'custom', path: ['relay', 'address'], message: 'required when notices are enabled without dryRunDir' });
    }
  });

export const policySchema = z.strictObject({
  /** enforce: carry out verdicts; observe: compute and log them, enforce nothing (shadow mode). */
  mode: z.enum(['enforce', 'observe']).default('enforce'),
  pushback: pushbackSchema.prefault({}),
  server: serverSchema.prefault({}),
  limits: limitsSchema.prefault({}),
  upstream: upstreamSchema.prefault({}),
  admin: adminSchema.prefault({}),
  state: stateSchema.prefault({}),
  entropy: entropySchema.prefault({}),
  quarantine: quarantineSchema.prefault({}),
  log: logSchema.prefault({}),
  notices: noticesSchema.prefault({}),
  dns: dnsSchema.prefault({}),
});

export type Policy = z.output<typeof policySchema>;
export type PolicyInput = z.input<typeof policySchema>;
