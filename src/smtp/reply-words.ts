// The replies the proxy makes itself, in Postfix's words. Clients and their operators compare what
// they hear through the proxy with what Postfix says; a reply that is smtp-server's ("250 Flushed",
// "500 Error: command not recognized") or that lacks the enhanced status code Postfix would give
// tells them something is in between and breaks scripts that match Postfix's text. Every reply
// smtp-server makes passes through postfixWords() (see command-handlers.ts). Pure.

export interface WordedReply {
  code: number;
  text: string;
}

/** smtp-server's texts that Postfix words differently: exact text → Postfix's code and text. */
const REWORDED: ReadonlyMap<string, WordedReply> = new Map([
  ['Error: command not recognized', { code: 502, text: '5.5.2 Error: command not recognized' }],
  ['Error: send HELO/EHLO first', { code: 503, text: '5.5.1 Error: send HELO/EHLO first' }],
  ['Error: need MAIL command', { code: 503, text: '5.5.1 Error: need MAIL command' }],
  ['Error: need RCPT command', { code: 503, text: '5.5.1 Error: need RCPT command' }],
  ['Error: nested MAIL command', { code: 503, text: '5.5.1 Error: nested MAIL command' }],
  ['Error: too many recipients', { code: 452, text: '4.5.3 Error: too many recipients' }],
  ['Error: too many unrecognized commands', { code: 421, text: '4.7.0 Error: too many errors' }],
  ['Error: internal server error', { code: 451, text: '4.3.0 Error: internal server error' }],
  ['Error: TLS already active', { code: 554, text: '5.5.1 Error: TLS already active' }],
  ['Error: syntax: STARTTLS', { code: 501, text: '5.5.4 Syntax: STARTTLS' }],
  ['Error: Mail transaction in progress', { code: 503, text: '5.5.1 Error: MAIL transaction in progress' }],
  ['Ready to start TLS', { code: 220, text: '2.0.0 Ready to start TLS' }],
  ['Bye', { code: 221, text: '2.0.0 Bye' }],
  ['OK', { code: 250, text: '2.0.0 Ok' }],
  ['Flushed', { code: 250, text: '2.0.0 Ok' }],
  ['Server shutting down', { code: 421, text: '4.3.2 Service shutting down, closing connection' }],
  ['HTTP requests not allowed', { code: 421, text: '4.7.0 HTTP requests not allowed' }],
]);

/** Enhanced status code for a reply that has none, by reply code (RFC 3463, as Postfix uses them). */
const DEFAULT_DETAIL: Readonly<Record<number, string>> = {
  221: '2.0.0',
  250: '2.0.0',
  421: '4.4.2',
  450: '4.2.0',
  451: '4.3.0',
  452: '4.3.1',
  500: '5.5.2',
  501: '5.5.4',
  502: '5.5.2',
  503: '5.5.1',
  504: '5.5.4',
  550: '5.7.1',
  552: '5.3.4',
  554: '5.5.0',
};

const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3}(?: |$)/;

/**
 * The reply to send for one smtp-server produced: reworded where Postfix says it otherwise, and
 * with an enhanced status code where it has none. `name` is our hostname (for the time-out text).
 * Greetings (220), 354 and other 3xx, and the EHLO lines carry no enhanced code (RFC 2034 §3).
 */
export function postfixWords(code: number, text: string, name: string): WordedReply {
  if (code === 421 && text === 'Timeout - closing connection') return { code, text: `4.4.2 ${name} Error: timeout exceeded` };
  // Not 4.4.2 (a timeout or a bad connection, the default for 421): a command the proxy cannot parse (X.5.2),
  // and a client that broke the protocol by talking first (X.5.0, where postscreen says "Protocol error").
  if (code === 421 && text === 'Error: Command line too long') return { code, text: `4.5.2 ${name} Error: command line too long` };
  if (code === 421 && text === `${name} You talk too soon`) return { code, text: `4.5.0 ${name} Error: you talk too soon` };
  if (code === 552 && text.startsWith('Error: message exceeds fixed maximum message size')) return { code, text: '5.3.4 Error: message file too big' };
  const reworded = REWORDED.get(text);
  if (reworded && Math.floor(reworded.code / 100) === Math.floor(code / 100)) return reworded;
  if (code < 400 && code !== 221 && code !== 250) return { code, text };
  if (ENHANCED.test(text)) return { code, text };
  const detail = DEFAULT_DETAIL[code] ?? `${Math.floor(code / 100)}.0.0`;
  return { code, text: text === '' ? detail : `${detail} ${text}` };
}
