// What a private Postfix instance looks like on disk: its directory layout under /tmp and the
// main.cf, master.cf and mailbox map that make it a loopback-only virtual-maildir server that
// accepts XCLIENT from the proxy. No processes here; postfix-process.ts runs what this writes.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface PostfixOptions {
  /** Loopback port for smtpd; a free one is picked when omitted. */
  port?: number;
  /** Virtual mailbox domain; users without "@" live here. Default example.test. */
  domain?: string;
  /** Mailboxes: local parts ("alice") or full addresses. Default alice, bob, carol. */
  users?: string[];
  /** message_size_limit in bytes. Default 30 MiB. */
  messageSizeLimit?: number;
  /** default_process_limit (caps concurrent smtpd processes). Default 100, as stock Postfix. */
  processLimit?: number;
  /** smtpd_authorized_xclient_hosts. Default loopback. */
  xclientHosts?: string[];
  /** mynetworks: clients that may relay and that anvil's rate limits exempt. Default loopback. */
  mynetworks?: string[];
  /** Extra or overriding main.cf settings, e.g. { in_flow_delay: '0s' } for benchmarks. */
  mainCf?: Record<string, string>;
  /** Extra master.cf lines, e.g. an smtp client for a sending instance or a second smtpd on [::1]. */
  masterCf?: string[];
  /** Bound on the whole start, including the readiness probe. Default 20 s. */
  startTimeoutMs?: number;
}

export interface Layout {
  /** Root of everything the instance owns. */
  dir: string;
  configDir: string;
  queueDir: string;
  dataDir: string;
  mailboxDir: string;
  logFile: string;
}

export interface PostfixIds {
  uid: number;
  gid: number;
}

export const defaultDomain = 'example.test';
const defaultUsers = ['alice', 'bob', 'carol'];
const defaultMessageSizeLimit = 30 * 1024 * 1024;
const defaultProcessLimit = 100;
export const toolDirs = ['/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin', '/sbin', '/bin'];

/** Absolute path of a tool (postfix, postconf, smtp-source, smtp-sink, ...), or undefined. */
export function findPostfixTool(name: string): string | undefined {
  const pathDirs = (process.env.PATH ?? '').split(':').filter(Boolean);
  for (const dir of [...toolDirs, ...pathDirs]) {
    const candidate = join(dir, name);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** uid and gid of the postfix account the package creates; throws when it is missing. */
export function postfixIds(): PostfixIds {
  const id = (flag: string): number =>
    Number(execFileSync('id', [flag, 'postfix'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
  return { uid: id('-u'), gid: id('-g') };
}

export function layoutFor(dir: string): Layout {
  return {
    dir,
    configDir: join(dir, 'etc'),
    queueDir: join(dir, 'queue'),
    dataDir: join(dir, 'data'),
    mailboxDir: join(dir, 'mail'),
    logFile: join(dir, 'maillog'),
  };
}

/** "alice" becomes "alice@<domain>"; full addresses pass through. */
export function mailboxAddress(user: string, domain: string): string {
  return user.includes('@') ? user : `${user}@${domain}`;
}

export async function prepareDirectories(layout: Layout, ids: PostfixIds): Promise<void> {
  // mkdtemp makes 0700; the virtual delivery agent runs as postfix and must traverse to mail/.
  await chmod(layout.dir, 0o755);
  await mkdir(layout.configDir);
  // postfix-script creates the queue subdirectories, with their owners and modes, on start.
  await mkdir(layout.queueDir);
  // data_directory must belong to mail_owner, or master cannot take its lock there.
  await mkdir(layout.dataDir, { mode: 0o700 });
  await chown(layout.dataDir, ids.uid, ids.gid);
  await mkdir(layout.mailboxDir, { mode: 0o755 });
  await chown(layout.mailboxDir, ids.uid, ids.gid);
}

export async function writeConfig(layout: Layout, port: number, options: PostfixOptions, ids: PostfixIds): Promise<void> {
  const domain = options.domain ?? defaultDomain;
  const ipv6 = existsSync('/proc/net/if_inet6');
  const loopback = ipv6 ? ['127.0.0.0/8', '[::1]/128'] : ['127.0.0.0/8'];
  const addresses = (options.users ?? defaultUsers).map((user) => mailboxAddress(user, domain));
  const domains = [...new Set([domain, ...addresses.map((address) => address.split('@')[1] as string)])];

  const main: Record<string, string> = {
    compatibility_level: compatibilityLevel(),
    config_directory: layout.configDir,
    queue_directory: layout.queueDir,
    data_directory: layout.dataDir,
    // No syslog in CI containers: postlogd writes the log, and the file must sit under an allowed prefix.
    maillog_file: layout.logFile,
    maillog_file_prefixes: layout.dir,
    inet_interfaces: '127.0.0.1',
    // IPv6 support is what lets XCLIENT carry ADDR=IPV6:..., even though we only listen on IPv4.
    inet_protocols: ipv6 ? 'all' : 'ipv4',
    myhostname: 'postfix.test',
    mydestination: '',
    mynetworks: (options.mynetworks ?? loopback).join(' '),
    smtpd_authorized_xclient_hosts: (options.xclientHosts ?? loopback).join(' '),
    // Stated rather than inherited: the stock default defers (454) where we want a hard 554.
    smtpd_relay_restrictions: 'permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination',
    // Nothing may leave the box or wait on DNS: no reverse lookups, no outbound SMTP.
    smtpd_peername_lookup: 'no',
    smtp_dns_support_level: 'disabled',
    default_transport: 'error:outbound mail disabled in the test instance',
    relay_transport: 'error:outbound mail disabled in the test instance',
    local_transport: 'error:local delivery disabled in the test instance',
    local_recipient_maps: '',
    // Stock defaults point at /etc/aliases and NIS, which log errors on a bare install.
    alias_maps: '',
    alias_database: '',
    biff: 'no',
    virtual_mailbox_domains: domains.join(' '),
    virtual_mailbox_base: layout.mailboxDir,
    virtual_mailbox_maps: `texthash:${join(layout.configDir, 'vmailbox')}`,
    virtual_uid_maps: `static:${ids.uid}`,
    virtual_gid_maps: `static:${ids.gid}`,
    message_size_limit: String(options.messageSizeLimit ?? defaultMessageSizeLimit),
    // virtual(8) refuses to run when its limit is below message_size_limit; 0 means no limit.
    virtual_mailbox_limit: '0',
    default_process_limit: String(options.processLimit ?? defaultProcessLimit),
    ...options.mainCf,
  };
  const mainCf = Object.entries(main).map(([name, value]) => `${name} = ${value}`.trimEnd());
  // Maildir (trailing slash): one file per message, so tests can count and read deliveries.
  const vmailbox = addresses.map((address) => {
    const [local, addressDomain] = address.split('@') as [string, string];
    return `${address} ${addressDomain}/${local}/`;
  });

  const files: [string, string][] = [
    ['main.cf', `${mainCf.join('\n')}\n`],
    ['master.cf', masterCf(port, options.masterCf ?? [])],
    ['vmailbox', `${vmailbox.join('\n')}\n`],
  ];
  // Postfix distrusts a config file modified within the current second (it may be mid-edit) and
  // re-reads it every 300 ms until it is older: about 2 s per start. Backdating skips that wait.
  const settledSeconds = Date.now() / 1000 - 60;
  for (const [name, content] of files) {
    const path = join(layout.configDir, name);
    await writeFile(path, content);
    await utimes(path, settledSeconds, settledSeconds);
  }
}

/** This release's own level: its newest defaults, and no "using backwards-compatible default" chatter. */
function compatibilityLevel(): string {
  const postconf = findPostfixTool('postconf') as string;
  // -d reads only built-in defaults, so this works before any main.cf exists.
  const version = execFileSync(postconf, ['-dh', 'mail_version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const [major = 0, minor = 0] = version.trim().split('.').map(Number);
  return major > 3 || (major === 3 && minor >= 6) ? `${major}.${minor}` : '2';
}

/**
 * Only the services that mail to virtual mailboxes needs. No chroot (Debian's stock master.cf chroots
 * most daemons into the queue directory, which would then need copies of /etc files). Unix sockets
 * live under each queue directory, so instances never share pickup, qmgr or postlog.
 */
function masterCf(port: number, extra: string[]): string {
  const services = [
    // service             type        private unpriv chroot wakeup maxproc command
    `127.0.0.1:${port}     inet        n       -      n      -      -       smtpd`,
    'pickup                unix        n       -      n      60     1       pickup',
    'cleanup               unix        n       -      n      -      0       cleanup',
    'qmgr                  unix        n       -      n      300    1       qmgr',
    'rewrite               unix        -       -      n      -      -       trivial-rewrite',
    'bounce                unix        -       -      n      -      0       bounce',
    'defer                 unix        -       -      n      -      0       bounce',
    'trace                 unix        -       -      n      -      0       bounce',
    'verify                unix        -       -      n      -      1       verify',
    'flush                 unix        n       -      n      1000?  0       flush',
    'proxymap              unix        -       -      n      -      -       proxymap',
    'showq                 unix        n       -      n      -      -       showq',
    'error                 unix        -       -      n      -      -       error',
    'retry                 unix        -       -      n      -      -       error',
    'discard               unix        -       -      n      -      -       discard',
    'virtual               unix        -       n      n      -      -       virtual',
    'anvil                 unix        -       -      n      -      1       anvil',
    'scache                unix        -       -      n      -      1       scache',
    // maillog_file needs postlogd; without it Postfix refuses to start.
    'postlog               unix-dgram  n       -      n      -      1       postlogd',
    ...extra,
  ];
  return `${services.join('\n')}\n`;
}
