// MAIL FROM and RCPT TO as the client sent them. A front proxy is neither stricter than the server
// it fronts nor an editor of envelopes: the path goes to Postfix byte for byte ("john doe"@x, a..b@x,
// a trailing dot, a source route), and ESMTP parameters keep the client's own xtext. The proxy checks
// only what it must to stay safe and in step: no control bytes (CR, LF, NUL …), balanced quotes and
// angle brackets, bounded lengths, parameters shaped as RFC 5321 esmtp-params. Postfix judges the rest.
// Pure: strings in, a parsed command or Postfix's own syntax reply out.

/** One ESMTP parameter: the keyword upper-cased, the value exactly as sent (xtext left encoded). */
export interface EsmtpParameter {
  keyword: string;
  value?: string;
}

export interface EnvelopeCommand {
  /**
   * The path between the angle brackets, as sent: a latin1 string whose code units are the client's
   * bytes (so UTF-8 and even invalid UTF-8 reach Postfix unchanged). Empty for the null sender.
   */
  path: string;
  /** The path decoded as UTF-8, for logs, records and the quarantine. */
  address: string;
  parameters: EsmtpParameter[];
}

export interface CommandSyntaxError {
  code: number;
  text: string;
}

export type EnvelopeVerb = 'MAIL' | 'RCPT';

/** RFC 5321 allows a 256-octet path; Postfix has no such limit, so ours only bounds memory and logs. */
export const MAX_PATH_BYTES = 1000;
const MAX_PARAMETERS = 16;
const MAX_PARAMETER_BYTES = 500;

const SYNTAX: Record<EnvelopeVerb, CommandSyntaxError> = {
  MAIL: { code: 501, text: '5.5.4 Syntax: MAIL FROM:<address>' },
  RCPT: { code: 501, text: '5.5.4 Syntax: RCPT TO:<address>' },
};
const BAD_ADDRESS: Record<EnvelopeVerb, CommandSyntaxError> = {
  MAIL: { code: 501, text: '5.1.7 Bad sender address syntax' },
  RCPT: { code: 501, text: '5.1.3 Bad recipient address syntax' },
};
const BAD_PARAMETER: CommandSyntaxError = { code: 501, text: '5.5.4 Syntax error in parameters or arguments' };

const PREFIX: Record<EnvelopeVerb, RegExp> = { MAIL: /^MAIL FROM:/i, RCPT: /^RCPT TO:/i };
const KEYWORD = /^[A-Za-z0-9][A-Za-z0-9-]*$/;
/** Bytes no path or parameter may hold: C0 controls (CR, LF, NUL, TAB …) and DEL. */
const CONTROL = /[\x00-\x1f\x7f]/;

/**
 * Parses one MAIL or RCPT command line (latin1: one code unit per byte, no CRLF). Accepts what
 * Postfix accepts with its default strict_rfc821_envelopes = no: spaces after the colon and a path
 * without angle brackets.
 */
export function parseEnvelopeCommand(verb: EnvelopeVerb, line: string): EnvelopeCommand | CommandSyntaxError {
  const prefix = PREFIX[verb].exec(line);
  if (!prefix) return SYNTAX[verb];
  const rest = line.slice(prefix[0].length).replace(/^ +/, '');
  const scanned = rest.startsWith('<') ? scanBracketedPath(rest) : scanBarePath(rest);
  if (!scanned) return BAD_ADDRESS[verb];
  const { path, end } = scanned;
  if (path.length > MAX_PATH_BYTES || CONTROL.test(path)) return BAD_ADDRESS[verb];
  if (verb === 'RCPT' && path === '') return BAD_ADDRESS[verb];
  const tail = rest.slice(end);
  if (tail !== '' && !tail.startsWith(' ')) return BAD_ADDRESS[verb];
  const parameters = parseParameters(tail);
  if (!parameters) return BAD_PARAMETER;
  return { path, address: Buffer.from(path, 'latin1').toString('utf8'), parameters };
}

export function isSyntaxError(parsed: EnvelopeCommand | CommandSyntaxError): parsed is CommandSyntaxError {
  return 'code' in parsed;
}

/** The value of a parameter (undefined: absent; true: present without a value). */
export function parameterValue(parameters: readonly EsmtpParameter[], keyword: string): string | true | undefined {
  const found = parameters.find((parameter) => parameter.keyword === keyword);
  if (!found) return undefined;
  return found.value ?? true;
}

/** The extensions we advertise (EHLO), which decide the parameters a client may use. */
export interface OfferedExtensions {
  dsn: boolean;
  smtputf8: boolean;
  maxMessageBytes: number;
}

/**
 * Postfix's refusal of a parameter the proxy does not offer or cannot carry, or undefined. Values of
 * DSN parameters are Postfix's to judge: they are passed on as sent.
 */
export function refuseParameters(verb: EnvelopeVerb, parameters: readonly EsmtpParameter[], offered: OfferedExtensions): CommandSyntaxError | undefined {
  for (const parameter of parameters) {
    const { keyword, value } = parameter;
    if (verb === 'MAIL' && keyword === 'SIZE') {
      if (value === undefined || !/^\d{1,20}$/.test(value)) return { code: 501, text: '5.5.4 Bad message size syntax' };
      if (offered.maxMessageBytes > 0 && Number(value) > offered.maxMessageBytes) return { code: 552, text: '5.3.4 Message size exceeds fixed limit' };
      continue;
    }
    if (verb === 'MAIL' && keyword === 'BODY' && value !== undefined && /^(7BIT|8BITMIME)$/i.test(value)) continue;
    if (verb === 'MAIL' && keyword === 'SMTPUTF8' && value === undefined && offered.smtputf8) continue;
    if (offered.dsn && value !== undefined && (verb === 'MAIL' ? DSN_MAIL : DSN_RCPT).has(keyword)) continue;
    return { code: 555, text: `5.5.4 Unsupported option: ${value === undefined ? keyword : `${keyword}=${value}`}` };
  }
  return undefined;
}

const DSN_MAIL: ReadonlySet<string> = new Set(['RET', 'ENVID']);
const DSN_RCPT: ReadonlySet<string> = new Set(['NOTIFY', 'ORCPT']);

/** " KEY=value KEY2" as the parameters were sent (keywords upper-cased), for the upstream command. */
export function formatParameters(parameters: readonly EsmtpParameter[]): string {
  return parameters.map((parameter) => (parameter.value === undefined ? ` ${parameter.keyword}` : ` ${parameter.keyword}=${parameter.value}`)).join('');
}

/**
 * "<…>" with quoted strings (and their backslash escapes) able to hold "<", ">" and spaces.
 * Returns the text between the brackets and the index just after the closing one.
 */
function scanBracketedPath(text: string): { path: string; end: number } | undefined {
  let quoted = false;
  for (let index = 1; index < text.length; index += 1) {
    const char = text[index];
    if (quoted) {
      if (char === '\\') index += 1;
      else if (char === '"') quoted = false;
      continue;
    }
    if (char === '"') quoted = true;
    else if (char === '<') return undefined;
    else if (char === '>') return { path: text.slice(1, index), end: index + 1 };
  }
  return undefined;
}

/** A path sent without brackets ("MAIL FROM:user@example.org"): up to the first space. */
function scanBarePath(text: string): { path: string; end: number } | undefined {
  const space = text.indexOf(' ');
  const path = space === -1 ? text : text.slice(0, space);
  if (path === '' || /[<>"]/.test(path)) return undefined;
  return { path, end: path.length };
}

function parseParameters(tail: string): EsmtpParameter[] | undefined {
  const parameters: EsmtpParameter[] = [];
  for (const token of tail.split(' ')) {
    if (token === '') continue;
    if (token.length > MAX_PARAMETER_BYTES || CONTROL.test(token) || parameters.length >= MAX_PARAMETERS) return undefined;
    const equals = token.indexOf('=');
    const keyword = (equals === -1 ? token : token.slice(0, equals)).toUpperCase();
    if (!KEYWORD.test(keyword)) return undefined;
    if (equals === -1) {
      parameters.push({ keyword });
      continue;
    }
    const value = token.slice(equals + 1);
    // RFC 5321's esmtp-value excludes "=", but Postfix takes everything after the first one: so do we.
    if (value === '') return undefined;
    parameters.push({ keyword, value });
  }
  return parameters;
}
