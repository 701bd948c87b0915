// A second throwaway Postfix as the sending MTA: everything it accepts goes to one relayhost (the
// proxy, or the receiving Postfix for the direct comparison) over its smtp client, with
// smtp_tls_security_level as a real MX would have it. Mail is submitted with its own sendmail(1);
// the relay result is its qmgr/smtp log line (status=sent or deferred).
import { execFile } from 'node:child_process';
import { findPostfixTool, startPostfix, type PostfixInstance } from './postfix.js';

export interface SendingPostfixOptions {
  relayHost: string;
  relayPort: number;
  /** smtp_tls_security_level. Default may. */
  tlsLevel?: 'none' | 'may' | 'encrypt';
  /** smtp_tls_protocols, e.g. ">=TLSv1.2, <=TLSv1.2" to pin a version. */
  tlsProtocols?: string;
  /** smtp_bind_address: the client address the receiving side should log. */
  bindAddress?: string;
  /** Its own name (HELO and loop detection); must differ from the receiving Postfix's postfix.test. */
  hostname?: string;
}

export interface SendingPostfix {
  instance: PostfixInstance;
  /** sendmail -C <config> -f from [-N notify] [-V envid] -- recipients, message on stdin. */
  submit(from: string, recipients: string[], message: Buffer, dsn?: { notify?: string; envid?: string; ret?: 'full' | 'hdrs' }): Promise<void>;
  /** Waits for the relay result of count recipients of a message with this Message-ID; returns their log lines. */
  waitForRelay(messageId: string, count: number, timeoutMs: number): Promise<string[]>;
  stop(): Promise<void>;
}

export async function startSendingPostfix(options: SendingPostfixOptions): Promise<SendingPostfix> {
  const instance = await startPostfix({
    domain: 'sender.test',
    users: ['sender'],
    mainCf: {
      myhostname: options.hostname ?? 'postfix-sender.test',
      relayhost: `[${options.relayHost}]:${options.relayPort}`,
      default_transport: 'smtp',
      relay_transport: 'smtp',
      smtp_tls_security_level: options.tlsLevel ?? 'may',
      ...(options.tlsProtocols !== undefined ? { smtp_tls_protocols: options.tlsProtocols, smtp_tls_mandatory_protocols: options.tlsProtocols } : {}),
      ...(options.bindAddress !== undefined ? { smtp_bind_address: options.bindAddress } : {}),
      smtp_tls_loglevel: '1',
      // One attempt is what the tests judge; a deferred message is retried only if we ask.
      queue_run_delay: '300s',
      minimal_backoff_time: '300s',
      smtputf8_enable: 'yes',
    },
    masterCf: [
      'smtp                  unix        -       -      n      -      -       smtp',
      // Without tlsmgr the smtp client has no TLS engine ("TLS is required, but our TLS engine is unavailable").
      'tlsmgr                unix        -       -      n      1000?  1       tlsmgr',
    ],
  });
  const sendmail = findPostfixTool('sendmail') ?? '/usr/sbin/sendmail';
  return {
    instance,
    submit(from, recipients, message, dsn) {
      const args = ['-C', instance.configDir, '-f', from];
      if (dsn?.notify !== undefined) args.push('-N', dsn.notify);
      if (dsn?.envid !== undefined) args.push('-V', dsn.envid);
      if (dsn?.ret !== undefined) args.push('-R', dsn.ret);
      args.push('--', ...recipients);
      return new Promise((resolve, reject) => {
        const child = execFile(sendmail, args, { timeout: 30_000, env: { ...process.env, MAIL_CONFIG: instance.configDir } }, (error, _stdout, stderr) => {
          if (error !== null) reject(new Error(`sendmail failed: ${error.message}\n${stderr}`));
          else resolve();
        });
        child.stdin?.end(message);
      });
    },
    async waitForRelay(messageId, count, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const log = await instance.readLog();
        const queueId = new RegExp(`([0-9A-F]+): message-id=<${escapeRe(messageId)}>`).exec(log)?.[1];
        if (queueId !== undefined) {
          const lines = log.split('\n').filter((line) => line.includes(`${queueId}: to=<`) && /status=(sent|deferred|bounced)/.test(line));
          if (lines.length >= count) return lines;
        }
        if (Date.now() > deadline) throw new Error(`no relay result for <${messageId}> in ${timeoutMs} ms\n${log.slice(-3_000)}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    stop: () => instance.stop(),
  };
}

function escapeRe(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
