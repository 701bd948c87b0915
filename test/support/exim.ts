// Exim 4 from Debian as a sending MTA, without installing its package (it conflicts with Postfix's):
// the .debs are fetched once with "apt-get download" into a cache, unpacked with "dpkg -x", and the
// binary runs with -C a private configuration that routes everything to one host:port, with its
// spool and logs in a fresh /tmp directory. The Debian build resolves its "Debian-exim" user at start,
// so each run happens in a private mount namespace whose /etc/passwd and /etc/group carry that user.
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chmod, chown, copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const eximDebCache = process.env.PUSHBACK_EXIM_DEB_DIR ?? '/var/cache/smtp-pushback-test/exim';
const eximPackages = ['exim4-daemon-light', 'exim4-base'];
/** An unused id for Debian-exim inside the namespace; Exim refuses to run as uid 0. */
const eximUid = 64_990;
const runTimeoutMs = 60_000;

export interface EximOptions {
  /** Where every message goes: the proxy or Postfix. */
  host: string;
  port: number;
  /** Local address of Exim's outgoing connection (smtp transport "interface"). */
  interface?: string;
  /** off: never STARTTLS; may: when offered (no certificate check); 1.2 or 1.3: required, pinned to that version. */
  tls?: 'off' | 'may' | '1.2' | '1.3';
  /** Exim's own HELO name. Default exim.sender.test. */
  heloName?: string;
}

export interface EximResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface EximInstance {
  dir: string;
  /** Submits one message on the command line (-odi: delivered before exim returns). */
  send(from: string, recipients: string[], message: Buffer): Promise<EximResult>;
  /** Runs an SMTP session on stdin (-bs -odi), for ESMTP parameters the command line cannot set. */
  sendSmtp(script: string): Promise<EximResult>;
  mainlog(): Promise<string>;
  stop(): Promise<void>;
}

/** Why Exim cannot run here, or undefined. */
export function eximUnavailableReason(): string | undefined {
  if (process.platform !== 'linux') return 'Exim runs on Linux only';
  if (process.getuid?.() !== 0) return 'running Exim needs root (mount namespace, setuid binary)';
  if (!existsSync('/usr/bin/unshare')) return 'unshare (util-linux) is missing';
  return undefined;
}

/** The unpacked packages' root, downloading the .debs first when the cache has none. */
export async function unpackExim(targetDir: string): Promise<string> {
  await mkdir(eximDebCache, { recursive: true });
  const debs = (): string[] => readdirSync(eximDebCache).filter((name) => name.endsWith('.deb'));
  const missing = eximPackages.filter((pkg) => !debs().some((name) => name.startsWith(`${pkg}_`)));
  if (missing.length > 0) {
    execFileSync('apt-get', ['download', ...missing], { cwd: eximDebCache, stdio: 'ignore', timeout: 120_000 });
  }
  for (const deb of debs().filter((name) => eximPackages.some((pkg) => name.startsWith(`${pkg}_`)))) {
    execFileSync('dpkg', ['-x', join(eximDebCache, deb), targetDir], { stdio: 'ignore', timeout: 60_000 });
  }
  const binary = join(targetDir, 'usr/sbin/exim4');
  if (!existsSync(binary)) throw new Error(`no exim4 binary after unpacking ${eximDebCache}`);
  return binary;
}

export async function startExim(options: EximOptions): Promise<EximInstance> {
  const reason = eximUnavailableReason();
  if (reason !== undefined) throw new Error(`cannot run Exim: ${reason}`);
  const dir = await mkdtemp('/tmp/smtp-pushback-exim-');
  try {
    // mkdtemp makes 0700; Exim drops to Debian-exim and must reach its spool and log below.
    await chmod(dir, 0o755);
    const binary = await unpackExim(join(dir, 'root'));
    const spool = join(dir, 'spool');
    const logDir = join(dir, 'log');
    await mkdir(spool);
    await mkdir(logDir);
    await chown(spool, eximUid, eximUid);
    await chown(logDir, eximUid, eximUid);
    await copyFile('/etc/passwd', join(dir, 'passwd'));
    await copyFile('/etc/group', join(dir, 'group'));
    await writeFile(join(dir, 'passwd'), `${await readFile(join(dir, 'passwd'), 'utf8')}Debian-exim:x:${eximUid}:${eximUid}::/nonexistent:/usr/sbin/nologin\n`);
    await writeFile(join(dir, 'group'), `${await readFile(join(dir, 'group'), 'utf8')}Debian-exim:x:${eximUid}:\n`);
    const config = join(dir, 'exim.conf');
    await writeFile(config, eximConfig(options, binary, spool, logDir));

    const run = (args: string[], input: Buffer | string): Promise<EximResult> => {
      // The bind mounts live only in this namespace; the host's /etc stays as it is.
      const script = [
        `mount --bind ${join(dir, 'passwd')} /etc/passwd`,
        `mount --bind ${join(dir, 'group')} /etc/group`,
        `exec ${binary} -C ${config} "$@"`,
      ].join(' && ');
      return new Promise((resolve) => {
        const child = execFile('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'exim', ...args], {
          timeout: runTimeoutMs,
          maxBuffer: 16 * 1024 * 1024,
          encoding: 'utf8',
        }, (error, stdout, stderr) => {
          const exitCode = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
          resolve({ stdout, stderr, exitCode });
        });
        child.stdin?.on('error', () => undefined);
        child.stdin?.end(input);
      });
    };
    return {
      dir,
      send: (from, recipients, message) => run(['-odi', '-f', from, '--', ...recipients], message),
      sendSmtp: (script) => run(['-bs', '-odi'], script),
      mainlog: async () => {
        try {
          return await readFile(join(logDir, 'mainlog'), 'utf8');
        } catch {
          return '';
        }
      },
      stop: () => rm(dir, { recursive: true, force: true, maxRetries: 3 }),
    };
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

function eximConfig(options: EximOptions, binary: string, spool: string, logDir: string): string {
  const tls = options.tls ?? 'off';
  const hosts = options.host.includes(':') ? `<; ${options.host}` : options.host;
  const gnutlsPriority = tls === '1.2' ? 'NORMAL:-VERS-ALL:+VERS-TLS1.2' : tls === '1.3' ? 'NORMAL:-VERS-ALL:+VERS-TLS1.3' : '';
  const lines = [
    `exim_path = ${binary}`,
    `spool_directory = ${spool}`,
    `log_file_path = ${logDir}/%slog`,
    'keep_environment =',
    `primary_hostname = ${options.heloName ?? 'exim.sender.test'}`,
    'qualify_domain = sender.test',
    // Mail is only submitted (command line or -bs on stdin); nothing listens, nothing is advertised over TLS.
    'daemon_smtp_ports =',
    'tls_advertise_hosts =',
    // What a -bs session may use, so Exim passes it on: DSN, SMTPUTF8, 8BITMIME.
    'dsn_advertise_hosts = *',
    'smtputf8_advertise_hosts = *',
    'accept_8bitmime = true',
    'message_size_limit = 0',
    'log_selector = +smtp_confirmation +received_recipients +deliver_time',
    'acl_smtp_rcpt = accept_all',
    'acl_smtp_data = accept_all',
    'begin acl',
    'accept_all:',
    '  accept',
    'begin routers',
    'everything:',
    '  driver = accept',
    '  transport = to_target',
    '  no_more',
    'begin transports',
    'to_target:',
    '  driver = smtp',
    `  hosts = ${hosts}`,
    '  hosts_override',
    `  port = ${options.port}`,
    '  allow_localhost',
    ...(options.interface !== undefined ? [`  interface = ${options.interface}`] : []),
    `  helo_data = ${options.heloName ?? 'exim.sender.test'}`,
    ...(tls === 'off' ? ['  hosts_avoid_tls = *'] : []),
    ...(tls === '1.2' || tls === '1.3' ? ['  hosts_require_tls = *', '  tls_verify_certificates =', `  tls_require_ciphers = ${gnutlsPriority}`] : []),
    ...(tls === 'may' ? ['  tls_verify_certificates ='] : []),
    'begin retry',
    '* * F,1h,1m',
    '',
  ];
  return lines.join('\n');
}
