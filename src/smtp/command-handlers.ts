// The SMTP commands whose meaning the proxy owns, installed on each smtp-server connection by the
// listener (these two files are the only ones that touch smtp-server). smtp-server keeps what it does
// well: the socket, TLS, the PROXY header, the line parser, DATA framing and time-outs. What it does
// differently from the Postfix behind us is replaced here, per connection:
// - MAIL and RCPT: the client's path and ESMTP parameters are kept as sent (envelope-command.ts);
//   smtp-server would reject "john doe"@x, rewrite "a.b"@x and decode xtext.
// - EHLO advertises what Postfix advertises and the proxy carries (ENHANCEDSTATUSCODES, DSN …).
// - Every reply is in Postfix's words (reply-words.ts): RSET "250 2.0.0 Ok", QUIT "221 2.0.0 Bye" …
// - A FIN from the client ends its input, not the session: Exim sends the final dot, pipelines QUIT
//   and half-closes. Everything received before the FIN is processed and answered in order, and only
//   then is the connection closed (the listener enables allowHalfOpen for that).
// - In observe mode a command that comes before the greeting is noted (the early-talker test) and
//   answered after the greeting, where smtp-server would answer "421 You talk too soon" and hang up.
import type { RelayReply } from '../relay/session-relay.js';
import { isSyntaxError, parseEnvelopeCommand, type EnvelopeCommand, type EnvelopeVerb } from './envelope-command.js';
import { postfixWords } from './reply-words.js';

type CommandCallback = () => void;
type Handler = (command: Buffer, callback: CommandCallback) => void;

/** smtp-server's connection internals that this module relies on (smtp-server 3.21). */
export interface ConnectionInternals {
  id: string;
  name: string;
  secure: boolean;
  hostNameAppearsAs: string | false;
  session: { envelope: { mailFrom: unknown; rcptTo: unknown[] } };
  /** smtp-server answers commands only once this is set, right before its greeting. */
  _ready: boolean;
  _closing: boolean;
  _parser: ParserHandle | false;
  _upgrading: boolean;
  _socket: { destroyed: boolean; writable: boolean; write(data: string): unknown };
  _server: { logger: { debug(entry: Record<string, unknown>, ...args: unknown[]): void } };
  _createParser(): ParserHandle;
  _resetSession(): void;
  _setListeners(ready: () => void): void;
  init(): void;
  connectionReady(): void;
  _onCommand(command: Buffer, callback: CommandCallback): void;
  _sendGreeting(): void;
  send(code: number, data: string | string[], context?: unknown): void;
  close(): void;
  handler_DATA: Handler;
  [handler: `handler_${string}`]: Handler;
}

interface ParserHandle {
  once(event: 'finish', listener: () => void): unknown;
}

/** What the listener does with the commands it owns. */
export interface CommandStage {
  /** MAIL or RCPT, parsed: the reply the client gets (Postfix's, or the proxy's own refusal). */
  envelope(verb: EnvelopeVerb, command: EnvelopeCommand): Promise<RelayReply>;
  /** EHLO keywords after the first line, e.g. ["PIPELINING", "SIZE 10240000", "DSN"]. */
  ehloKeywords(secure: boolean): string[];
  maxRecipients: number;
  /** The client's input ended (FIN) and everything it sent before was answered. */
  inputEnded(): void;
  /**
   * Asked when a command comes before the greeting. True (observe mode): the command is held and
   * answered after the greeting, and earlyTalk() notes it; false: smtp-server's 421 and a close.
   */
  holdEarlyCommands(): boolean;
  earlyTalk(): void;
}

const MAX_HELO_BYTES = 255;

/**
 * smtp-server holds every greeting a fixed 100 ms (SMTPConnection.init) to catch early talkers,
 * proven senders included: most of a proven sender's session time on loopback. This starts the
 * connection at once instead (the maxClients test it skips is off: the listener counts its own
 * slots); the listener's onConnect then holds the greeting, and smtp-server still answers anything
 * the client says before it with 421 "You talk too soon".
 */
export function startWithoutFixedGreetDelay(connection: ConnectionInternals): void {
  connection.init = () => connection._setListeners(() => connection.connectionReady());
}

export function installCommandHandlers(connection: ConnectionInternals, stage: CommandStage): void {
  const sendRaw = (code: number, data: string | string[]): void => writeReply(connection, code, data);
  // smtp-server's own replies (time-outs, command not recognized …) get Postfix's words.
  connection.send = (code, data) => {
    if (Array.isArray(data)) return sendRaw(code, data);
    const worded = postfixWords(code, data, connection.name);
    sendRaw(worded.code, worded.text);
  };
  // The proxy's own replies are Postfix's words already: they bypass the rewording.
  const reply = (result: { code: number; text: string }): void => sendRaw(result.code, result.text);
  const answer = (result: { code: number; text: string }, callback: CommandCallback): void => {
    reply(result);
    callback();
  };

  connection.handler_MAIL = (command, callback) => {
    const parsed = parseEnvelopeCommand('MAIL', command.toString('latin1'));
    if (isSyntaxError(parsed)) return answer(parsed, callback);
    if (connection.session.envelope.mailFrom) return answer({ code: 503, text: '5.5.1 Error: nested MAIL command' }, callback);
    envelope(stage, 'MAIL', parsed, (result) => {
      if (result.code < 400) connection.session.envelope.mailFrom = { address: parsed.address };
      reply(result);
      callback();
    });
  };

  connection.handler_RCPT = (command, callback) => {
    if (!connection.session.envelope.mailFrom) return answer({ code: 503, text: '5.5.1 Error: need MAIL command' }, callback);
    const parsed = parseEnvelopeCommand('RCPT', command.toString('latin1'));
    if (isSyntaxError(parsed)) return answer(parsed, callback);
    if (stage.maxRecipients > 0 && connection.session.envelope.rcptTo.length >= stage.maxRecipients) {
      return answer({ code: 452, text: '4.5.3 Error: too many recipients' }, callback);
    }
    envelope(stage, 'RCPT', parsed, (result) => {
      if (result.code < 400) connection.session.envelope.rcptTo.push({ address: parsed.address });
      reply(result);
      callback();
    });
  };

  const streamData = connection.handler_DATA;
  connection.handler_DATA = (command, callback) => {
    if (connection.session.envelope.rcptTo.length === 0) {
      // Postfix's two answers: recipients were tried and all refused, or none was given at all.
      const refusal = connection.session.envelope.mailFrom
        ? { code: 554, text: '5.5.1 Error: no valid recipients' }
        : { code: 503, text: '5.5.1 Error: need RCPT command' };
      return answer(refusal, callback);
    }
    streamData.call(connection, command, callback);
  };

  const hello = (command: Buffer, callback: CommandCallback, lines: () => string | string[]): void => {
    const name = heloName(command.toString('utf8'));
    if (name === undefined) return answer({ code: 501, text: `Syntax: ${command.toString('latin1', 0, 4).toUpperCase()} hostname` }, callback);
    connection.hostNameAppearsAs = name;
    connection._resetSession();
    sendRaw(250, lines());
    callback();
  };
  connection.handler_EHLO = (command, callback) => hello(command, callback, () => [connection.name, ...stage.ehloKeywords(connection.secure)]);
  connection.handler_HELO = (command, callback) => hello(command, callback, () => connection.name);
  connection.handler_RSET = (_command, callback) => {
    connection._resetSession();
    answer({ code: 250, text: '2.0.0 Ok' }, callback);
  };
  connection.handler_NOOP = (_command, callback) => answer({ code: 250, text: '2.0.0 Ok' }, callback);
  connection.handler_QUIT = (_command, callback) => {
    reply({ code: 221, text: '2.0.0 Bye' });
    connection.close();
    callback();
  };

  watchInputEnd(connection, stage);
  holdEarlyCommands(connection, stage);
}

/**
 * Observe mode lets an early talker on: its command waits for the greeting, then goes through as if
 * it had come after it. smtp-server's parser hands over the next command only once this one is done,
 * so at most one is held.
 */
function holdEarlyCommands(connection: ConnectionInternals, stage: CommandStage): void {
  const onCommand = connection._onCommand.bind(connection);
  let held: { command: Buffer; callback: CommandCallback } | undefined;
  connection._onCommand = (command, callback) => {
    if (connection._ready || connection._closing || !stage.holdEarlyCommands()) return onCommand(command, callback);
    stage.earlyTalk();
    held = { command, callback };
  };
  const sendGreeting = connection._sendGreeting.bind(connection);
  connection._sendGreeting = () => {
    sendGreeting();
    const early = held;
    held = undefined;
    if (early) onCommand(early.command, early.callback);
  };
}

function envelope(stage: CommandStage, verb: EnvelopeVerb, parsed: EnvelopeCommand, deliver: (reply: RelayReply) => void): void {
  stage.envelope(verb, parsed).then(deliver, () => deliver({ code: 451, text: '4.3.0 Error: internal error, try again later' }));
}

/**
 * Writes one reply, as smtp-server's send() does, with one difference: it writes whenever the socket
 * is writable, where smtp-server's wants it open both ways, so a half-closed client (a FIN after its
 * last command) would hear nothing more. Never during a TLS handshake (that would put cleartext
 * into the record stream); control bytes in a text become spaces (response splitting); a 421 closes.
 * The debug log entry is the one the listener observes every reply through.
 */
function writeReply(connection: ConnectionInternals, code: number, data: string | string[]): void {
  const lines = (Array.isArray(data) ? data : [data]).map((line) => line.replace(/[\x00-\x1f\x7f]/g, ' '));
  const payload = lines.map((line, index) => `${code}${index < lines.length - 1 ? '-' : ' '}${line}`).join('\r\n');
  const socket = connection._socket;
  if (!connection._upgrading && !socket.destroyed && socket.writable) {
    socket.write(`${payload}\r\n`);
    connection._server.logger.debug({ tnx: 'send', cid: connection.id }, 'S:', payload);
  }
  if (code === 421) connection.close();
}

/**
 * The name of a HELO/EHLO line as Postfix takes it: the rest of the line (several words are joined,
 * as Postfix's collapse_args does), case kept. Undefined: no name (Postfix's 501), or one the proxy
 * will not carry (control bytes, over 255 bytes).
 */
function heloName(line: string): string | undefined {
  const rest = line.slice(4);
  const name = rest.trim().replace(/ +/g, ' ');
  if (!rest.startsWith(' ') || name === '') return undefined;
  if (Buffer.byteLength(name) > MAX_HELO_BYTES || /[\x00-\x1f\x7f]/.test(name)) return undefined;
  return name;
}

/**
 * A FIN closes the client's input: smtp-server's parser then finishes once every command before it
 * has been handled (it waits for each handler, and for the final reply of a message). Only then is
 * the connection closed, so the replies to everything the client sent are written first. STARTTLS
 * replaces the parser, so each new one is watched as well.
 */
function watchInputEnd(connection: ConnectionInternals, stage: CommandStage): void {
  const watch = (parser: ParserHandle): ParserHandle => {
    parser.once('finish', () => {
      if (connection._parser === parser) stage.inputEnded();
    });
    return parser;
  };
  if (connection._parser) watch(connection._parser);
  const createParser = connection._createParser.bind(connection);
  connection._createParser = () => watch(createParser());
}
