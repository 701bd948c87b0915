// The contacts file a policy may name (notices.contactsFile): network contacts for notices to source
// networks, kept apart from the policy because they come from elsewhere (the SFDS paper built them from the
// router's routes and Rwhois). Two forms, by file name: YAML (.yaml, .yml), a list of entries like
// notices.contacts; anything else, one network per line, "CIDR EMAIL ORGANISATION…", # starts a comment.
// Every problem has file:line:column, like the policy's own; the loader merges the entries into the snapshot.
import { LineCounter, parseDocument } from 'yaml';
import { z } from 'zod';
import { locateIssue, type PolicyProblem } from './load.js';
import { duplicateNetworks, noticeContactSchema, type NoticeContact } from './schema.js';

export type ContactsResult = { ok: true; contacts: NoticeContact[] } | { ok: false; problems: PolicyProblem[] };

interface LocatedContact {
  contact: NoticeContact;
  line: number;
}

type Parsed = { ok: true; entries: LocatedContact[] } | { ok: false; problems: PolicyProblem[] };

/**
 * The file's contacts, checked on their own and against the policy's inline ones (one contact per network:
 * an entry for a network the policy or an earlier line already names is an error, not a silent override).
 */
export function parseContactsText(text: string, source: string, inline: readonly NoticeContact[] = []): ContactsResult {
  const parsed = /\.ya?ml$/i.test(source) ? parseYaml(text, source) : parseLines(text, source);
  if (!parsed.ok) return parsed;
  const { entries } = parsed;
  const problems = duplicateNetworks([...inline, ...entries.map((entry) => entry.contact)].map((contact) => contact.cidr)).map(({ index, firstIndex, network }) => {
    const first = firstIndex < inline.length ? `notices.contacts.${firstIndex} in the policy` : `line ${entries[firstIndex - inline.length]!.line}`;
    return problem(source, entries[index - inline.length]!.line, 1, '', `${network} already has a contact (${first})`);
  });
  return problems.length > 0 ? { ok: false, problems } : { ok: true, contacts: entries.map((entry) => entry.contact) };
}

function parseLines(text: string, source: string): Parsed {
  const entries: LocatedContact[] = [];
  const problems: PolicyProblem[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = index + 1;
    const content = raw.replace(/#.*$/, '');
    const fields = [...content.matchAll(/\S+/g)];
    if (fields.length === 0) return;
    if (fields.length < 3) {
      problems.push(problem(source, line, 1, '', 'expected "CIDR EMAIL ORGANISATION"'));
      return;
    }
    const [cidr, email, organisation] = fields as [RegExpExecArray, RegExpExecArray, RegExpExecArray];
    const columns: Record<string, number> = { cidr: cidr.index + 1, email: email.index + 1, organisation: organisation.index + 1 };
    const result = noticeContactSchema.safeParse({ cidr: cidr[0], email: email[0], organisation: content.slice(organisation.index).trim() });
    if (result.success) entries.push({ contact: result.data, line });
    for (const issue of result.error?.issues ?? []) {
      const field = String(issue.path[0] ?? '');
      problems.push(problem(source, line, columns[field] ?? 1, field, issue.message));
    }
  });
  return problems.length > 0 ? { ok: false, problems } : { ok: true, entries };
}

function parseYaml(text: string, source: string): Parsed {
  const lineCounter = new LineCounter();
  const document = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const syntax = [...document.errors, ...document.warnings].map((error) => {
    const position = lineCounter.linePos(error.pos[0]);
    return problem(source, position.line, position.col, '', error.message.split('\n')[0] ?? error.message);
  });
  if (syntax.length > 0) return { ok: false, problems: syntax };
  const result = z.array(noticeContactSchema).safeParse(document.toJS() ?? []);
  if (!result.success) return { ok: false, problems: result.error.issues.map((issue) => locateIssue(issue, document, lineCounter, source, new Map())) };
  return {
    ok: true,
    entries: result.data.map((contact, index) => {
      const node = document.getIn([index], true) as { range?: [number, number, number] } | undefined;
      return { contact, line: lineCounter.linePos(node?.range?.[0] ?? 0).line };
    }),
  };
}

function problem(source: string, line: number, column: number, path: string, reason: string): PolicyProblem {
  return { source, line, column, path, reason };
}
