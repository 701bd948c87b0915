// Real SMTP senders from Debian run as child processes against one host:port (swaks, msmtp, curl,
// Python's smtplib), plus a raw socket client that pipelines the final dot with QUIT and half-closes.
// Each returns everything the client printed, so a test can look for the server's own reply text.
import { execFile } from 'node:child_process';
import net from 'node:net';

export interface ClientRun {
  exitCode: number;
  /** stdout and stderr together: the client's transcript or debug output. */
  output: string;
}

const clientTimeoutMs = 60_000;

/** Runs a command with input on stdin, bounded; never rejects (a non-zero exit is a result). */
export function runClient(command: string, args: string[], input?: Buffer | string, timeoutMs = clientTimeoutMs): Promise<ClientRun> {
  return new Promise((resolve) => {
    const child = execFile(command, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' }, (error, stdout, stderr) => {
      const exitCode = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
      resolve({ exitCode, output: `${stdout}\n${stderr}${error !== null && exitCode === -1 ? `\n${error.message}` : ''}` });
    });
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input ?? '');
  });
}

/**
 * Python's smtplib with a script that receives host, port, source address and a JSON job as
 * arguments, and prints every reply it got as "CODE TEXT" lines.
 */
export function runSmtplib(script: string, host: string, port: number, sourceAddress: string, job: unknown, input?: Buffer): Promise<ClientRun> {
  const prelude = [
    'import json, smtplib, ssl, sys',
    'host, port, source, job = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])',
    'def say(code, text):',
    '    print(code, text.decode("utf-8", "replace") if isinstance(text, bytes) else text, flush=True)',
    'def tls_context(version):',
    '    context = ssl.create_default_context()',
    '    context.check_hostname = False',
    '    context.verify_mode = ssl.CERT_NONE',
    '    if version:',
    '        pinned = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3',
    '        context.minimum_version = pinned',
    '        context.maximum_version = pinned',
    '    return context',
    '',
  ].join('\n');
  return runClient('python3', ['-c', `${prelude}\n${script}`, host, String(port), sourceAddress, JSON.stringify(job)], input);
}

export interface RawHalfCloseResult {
  /** Everything the server wrote, until it closed or the time ran out. */
  received: string;
  /** How the session ended: the server closed ("closed") or we gave up ("timeout"). */
  end: 'closed' | 'timeout' | 'error';
}

/**
 * A sender like Exim in plaintext: EHLO, MAIL, RCPT, DATA, then the message, the final dot and QUIT
 * in one write, followed at once by a FIN (socket.end()). Reads until the server closes.
 */
export function rawHalfCloseSend(options: {
  host: string;
  port: number;
  localAddress?: string;
  from: string;
  to: string;
  message: string;
  timeoutMs: number;
}): Promise<RawHalfCloseResult> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: options.host, port: options.port, localAddress: options.localAddress, allowHalfOpen: true });
    let received = '';
    let step = 0;
    const steps = ['EHLO raw.sender.test', `MAIL FROM:<${options.from}>`, `RCPT TO:<${options.to}>`, 'DATA'];
    const timer = setTimeout(() => finish('timeout'), options.timeoutMs);
    let finished = false;
    function finish(end: RawHalfCloseResult['end']): void {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ received, end });
    }
    const completeReplies = (): number => (received.match(/^\d{3} .*\r\n/gm) ?? []).length;
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      // One command per complete reply (greeting first), until DATA's 354.
      while (step < steps.length && completeReplies() > step) {
        socket.write(`${steps[step]}\r\n`);
        step++;
      }
      if (step === steps.length && completeReplies() === steps.length + 1 && /^354 /m.test(received)) {
        step++;
        // Dot-stuffed as RFC 5321 4.5.2 asks; the message ends in CRLF.
        socket.end(`${options.message.replace(/^\./gm, '..')}.\r\nQUIT\r\n`);
      }
    });
    socket.on('end', () => finish('closed'));
    socket.on('error', () => finish('error'));
  });
}
