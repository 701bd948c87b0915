// What `smtp-pushback check-upstream` asks Postfix, on the same client the relay uses: the greeting, the
// EHLO extensions, whether XCLIENT is accepted from this host, whether the operator's recipients are taken
// for a client outside mynetworks, and the open-relay check (an outside recipient must be refused, with
// XCLIENT naming an outside client and without XCLIENT, as this host). Every step has the connection's
// time-outs; a step that fails is reported with its reason and the connection's remaining steps are skipped.
// No mail is sent: each transaction stops at RCPT and is reset.
import { UpstreamConnection, UpstreamError, type UpstreamOptions } from './connection.js';
import { isPositive, replyText, type SmtpReply } from './reply.js';
import { xclientCommand, type ClientIdentity } from './xclient.js';

export type FindingLevel = 'ok' | 'FAIL' | 'warn' | 'info';

/** One line of the report: a FAIL is something the policy needs that does not hold. */
export interface Finding {
  level: FindingLevel;
  text: string;
}

export interface ProbeOptions {
  upstream: UpstreamOptions;
  /** limits.maxMessageBytes, compared with Postfix's SIZE. */
  maxMessageBytes: number;
  /** Recipients that must be accepted for a client outside mynetworks. */
  recipients: readonly string[];
}

/** TEST-NET-1 (RFC 5737): never a real client, never in anyone's mynetworks. */
export const OUTSIDE_CLIENT: ClientIdentity = { address: '192.0.2.1', port: 40025, protocol: 'ESMTP' };
/** In a domain reserved by RFC 2606, which no Postfix delivers locally: relaying to it must be refused. */
export const RELAY_TEST_RECIPIENT = 'relay-test@example.net';
/** The null sender: no sender domain for Postfix to look up, and nothing could ever bounce to it. */
const PROBE_SENDER = '<>';

const EXTENSIONS = ['PIPELINING', 'SIZE', '8BITMIME', 'SMTPUTF8'] as const;

export async function probeUpstream(options: ProbeOptions): Promise<Finding[]> {
  const findings: Finding[] = [];
  const report = (level: FindingLevel, text: string): void => {
    findings.push({ level, text });
  };
  const target = `${options.upstream.host}:${options.upstream.port}`;
  const policyXclient = options.upstream.xclient;

  // First connection: banner, extensions, then XCLIENT and the checks as an outside client.
  const first = await openSession(options.upstream, target, report, true);
  if (!first) return findings;
  const { connection, self } = first;
  let xclientAccepted = false;
  try {
    reportExtensions(connection.capabilities, options.maxMessageBytes, policyXclient, report);
    const offered = connection.capabilities.get('XCLIENT');
    // Sent even when not offered, so that Postfix itself says why (it offers XCLIENT only to its authorized hosts).
    const command = xclientCommand(OUTSIDE_CLIENT, offered ?? 'ADDR');
    const reply = await connection.command(command, 'xclient');
    xclientAccepted = reply.code === 220;
    if (xclientAccepted) {
      report('ok', `XCLIENT accepted from ${self} (${command}): ${line(reply)}`);
    } else {
      const needed = policyXclient === 'required' || (policyXclient === 'auto' && offered !== undefined);
      const level: FindingLevel = needed ? 'FAIL' : policyXclient === 'auto' ? 'warn' : 'info';
      report(level, `XCLIENT refused from ${self} (${command}): ${line(reply)}; list ${self} in smtpd_authorized_xclient_hosts` +
        (needed ? '' : `, or the proxy relays as ${self} (policy upstream.xclient is ${policyXclient})`));
    }
    if (xclientAccepted) {
      // XCLIENT resets the session: the EHLO comes again, as the proxy sends it.
      const ehlo = await connection.hello();
      if (ehlo.code !== 250) {
        report('FAIL', `EHLO after XCLIENT: ${line(ehlo)}`);
      } else {
        await recipientChecks(connection, `an outside client (${OUTSIDE_CLIENT.address}, by XCLIENT)`, options.recipients, report);
      }
    }
  } catch (error) {
    report('FAIL', failureText(error, target));
  } finally {
    connection.quit();
  }

  // Second connection, without XCLIENT: what Postfix does when the proxy speaks as itself.
  const second = await openSession(options.upstream, target, report, false);
  if (!second) return findings;
  try {
    if (!xclientAccepted && policyXclient === 'required') {
      for (const recipient of options.recipients) {
        report('FAIL', `RCPT ${recipient}: not checked, XCLIENT is refused (policy upstream.xclient is required)`);
      }
    }
    const recipients = xclientAccepted || policyXclient === 'required' ? [] : options.recipients;
    await recipientChecks(second.connection, `this host (${second.self}, without XCLIENT)`, recipients, report);
  } catch (error) {
    report('FAIL', failureText(error, target));
  } finally {
    second.connection.quit();
  }
  return findings;
}

type Report = (level: FindingLevel, text: string) => void;

/** Connects, reads the banner and says EHLO; undefined (with the reason reported) when that fails. */
async function openSession(
  upstream: UpstreamOptions, target: string, report: Report, first: boolean,
): Promise<{ connection: UpstreamConnection; self: string } | undefined> {
  let connection: UpstreamConnection;
  let greeting: SmtpReply;
  try {
    ({ connection, greeting } = await UpstreamConnection.connect(upstream));
  } catch (error) {
    report('FAIL', `${first ? 'reachable' : 'second connection'}: ${failureText(error, target)}`);
    return undefined;
  }
  const self = connection.localAddress ?? 'this host';
  try {
    if (greeting.code !== 220) {
      report('FAIL', `reachable: ${target} answers from ${self} with ${line(greeting)}`);
      return close(connection);
    }
    if (first) report('ok', `reachable: ${target} from ${self}: ${line(greeting)}`);
    const ehlo = await connection.hello();
    if (ehlo.code !== 250) {
      report('FAIL', `EHLO ${upstream.heloName}: ${line(ehlo)}`);
      return close(connection);
    }
    if (first) report('ok', `EHLO ${upstream.heloName}: ${ehlo.code} ${ehlo.lines[0] ?? ''}`.trimEnd());
    return { connection, self };
  } catch (error) {
    report('FAIL', failureText(error, target));
    return close(connection);
  }
}

function close(connection: UpstreamConnection): undefined {
  connection.quit();
  return undefined;
}

function reportExtensions(capabilities: ReadonlyMap<string, string>, maxMessageBytes: number, policyXclient: string, report: Report): void {
  for (const keyword of EXTENSIONS) {
    const parameter = capabilities.get(keyword);
    if (parameter === undefined) {
      report('info', `${keyword}: not offered, so the proxy does not offer it either`);
    } else if (keyword === 'SIZE') {
      const limitBytes = Number(parameter);
      if (limitBytes > 0 && limitBytes < maxMessageBytes) {
        report('warn', `SIZE ${parameter}: below limits.maxMessageBytes (${maxMessageBytes}); a message between the two is taken from the client, then refused by Postfix`);
      } else {
        report('ok', `SIZE ${parameter}: offered, limits.maxMessageBytes (${maxMessageBytes}) is within it`);
      }
    } else {
      report('ok', `${keyword}: offered`);
    }
  }
  const xclient = capabilities.get('XCLIENT');
  if (xclient !== undefined) {
    report('ok', `XCLIENT: offered with ${xclient || '(no attributes)'}`);
  } else {
    const level: FindingLevel = policyXclient === 'required' ? 'FAIL' : policyXclient === 'auto' ? 'warn' : 'info';
    report(level, `XCLIENT: not offered to this host (Postfix offers it only to smtpd_authorized_xclient_hosts; policy upstream.xclient is ${policyXclient})`);
  }
}

/**
 * One transaction as `client`: each recipient must be accepted, and the relay test recipient refused.
 * A 4xx counts as refused for the relay test (Postfix's stock defer_unauth_destination answers 454 4.7.1).
 */
async function recipientChecks(connection: UpstreamConnection, client: string, recipients: readonly string[], report: Report): Promise<void> {
  const mail = await connection.command(`MAIL FROM:${PROBE_SENDER}`, 'mail');
  if (mail.code !== 250) {
    report('FAIL', `MAIL FROM:${PROBE_SENDER} as ${client}: ${line(mail)}; recipients and the open-relay check not checked`);
    return;
  }
  for (const recipient of recipients) {
    const reply = await connection.command(`RCPT TO:<${recipient}>`, 'rcpt');
    report(isPositive(reply) ? 'ok' : 'FAIL', `RCPT ${recipient} for ${client}: ${line(reply)}`);
  }
  const relay = await connection.command(`RCPT TO:<${RELAY_TEST_RECIPIENT}>`, 'rcpt');
  if (isPositive(relay)) {
    const hint = client.includes('without XCLIENT') ? '; take this host out of mynetworks (or whichever rule permits it)' : '';
    report('FAIL', `open relay: RCPT ${RELAY_TEST_RECIPIENT} for ${client} accepted: ${line(relay)}${hint}`);
  } else if (/^[45]\.7\.\d{1,3}\b/.test(replyText(relay))) {
    report('ok', `open relay: RCPT ${RELAY_TEST_RECIPIENT} for ${client} refused: ${line(relay)}`);
  } else {
    // Refused, but not by a policy (x.7.x) reply: the relay restrictions may have let it through and
    // something else (recipient validation, DNS) stopped this one recipient.
    report('warn', `open relay: RCPT ${RELAY_TEST_RECIPIENT} for ${client} refused, but not as relay access denied (x.7.x): ${line(relay)}`);
  }
  const reset = await connection.command('RSET', 'rset');
  if (reset.code !== 250) report('warn', `RSET: ${line(reset)}`);
}

function line(reply: SmtpReply): string {
  return `${reply.code} ${replyText(reply)}`;
}

function failureText(error: unknown, target: string): string {
  if (error instanceof UpstreamError) return `${target}: ${error.message}`;
  throw error;
}
