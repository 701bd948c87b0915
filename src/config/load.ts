// Loads the policy: YAML text -> environment overrides -> schema -> one frozen snapshot.
// Every problem is reported with the file, the line and the reason, so `check-config` and a
// refused reload say exactly where to look. Nothing here keeps state: reload calls it again.
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { LineCounter, isMap, isScalar, parseDocument, type Document, type Node } from 'yaml';
import type { z } from 'zod';
import { parseContactsText } from './contacts-file.js';
import { policySchema, type Policy } from './schema.js';

export interface PolicyProblem {
  /** The file, or the environment variable that supplied the bad value. */
  source: string;
  /** 1-based; 0 when the problem has no place in the file (e.g. an environment variable). */
  line: number;
  column: number;
  path: string;
  reason: string;
}

export type PolicyResult =
  | { ok: true; policy: Policy; source: string }
  | { ok: false; problems: PolicyProblem[]; source: string };

/** Environment variables that override policy keys, because deploy tools and tests set them. */
export const ENV_OVERRIDES: ReadonlyArray<{ variable: string; path: readonly string[] }> = [
  { variable: 'PUSHBACK_LISTEN', path: ['server', 'listen'] },
  { variable: 'PUSHBACK_UPSTREAM', path: ['upstream', 'address'] },
  { variable: 'PUSHBACK_ADMIN', path: ['admin', 'listen'] },
  { variable: 'PUSHBACK_REDIS_URL', path: ['state', 'redisUrl'] },
  { variable: 'PUSHBACK_SPOOL_DIR', path: ['quarantine', 'spoolDir'] },
  { variable: 'PUSHBACK_ADMIN_TOKEN', path: ['quarantine', 'adminToken'] },
  // The notice relay's password, kept out of the policy file (set notices.relay.auth.user there).
  { variable: 'PUSHBACK_NOTICES_RELAY_PASS', path: ['notices', 'relay', 'auth', 'pass'] },
];

export function formatProblem(problem: PolicyProblem): string {
  const where = problem.line > 0 ? `${problem.source}:${problem.line}:${problem.column}` : problem.source;
  return `${where}: ${problem.path ? `${problem.path}: ` : ''}${problem.reason}`;
}

export async function loadPolicyFile(file: string, env: NodeJS.ProcessEnv = process.env): Promise<PolicyResult> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    return { ok: false, source: file, problems: [{ source: file, line: 0, column: 0, path: '', reason: (error as Error).message }] };
  }
  const result = parsePolicyText(text, file, env);
  return result.ok ? withContactsFile(result.policy, file) : result;
}

/**
 * The policy with the contacts of notices.contactsFile (relative to the policy file) after its inline ones.
 * Read at every load, so a reload (SIGHUP) picks up an edited contacts file; its problems refuse the policy.
 */
async function withContactsFile(policy: Policy, file: string): Promise<PolicyResult> {
  const { contactsFile, contacts } = policy.notices;
  if (contactsFile === null) return { ok: true, source: file, policy };
  const path = resolve(dirname(file), contactsFile);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    return { ok: false, source: file, problems: [{ source: path, line: 0, column: 0, path: 'notices.contactsFile', reason: (error as Error).message }] };
  }
  const parsed = parseContactsText(text, path, contacts);
  if (!parsed.ok) return { ok: false, source: file, problems: parsed.problems };
  return { ok: true, source: file, policy: deepFreeze({ ...policy, notices: { ...policy.notices, contacts: [...contacts, ...parsed.contacts] } }) };
}

/** The embedded default: no file at all, only the schema's defaults and the environment. */
export function defaultPolicy(env: NodeJS.ProcessEnv = process.env): PolicyResult {
  return parsePolicyText('', '(built-in defaults)', env);
}

/** Text only: files the policy names (notices.contactsFile) are read by loadPolicyFile. */
export function parsePolicyText(text: string, source: string, env: NodeJS.ProcessEnv = process.env): PolicyResult {
  const lineCounter = new LineCounter();
  const document = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const problems: PolicyProblem[] = [];
  for (const error of [...document.errors, ...document.warnings]) {
    const position = lineCounter.linePos(error.pos[0]);
    problems.push({ source, line: position.line, column: position.col, path: '', reason: error.message.split('\n')[0] ?? error.message });
  }
  if (problems.length > 0) return { ok: false, source, problems };

  const raw: unknown = document.toJS() ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return { ok: false, source, problems: [{ source, line: 1, column: 1, path: '', reason: 'the policy must be a mapping of keys' }] };
  }
  const overridden = new Map<string, string>();
  for (const { variable, path } of ENV_OVERRIDES) {
    const value = env[variable];
    if (value === undefined || value === '') continue;
    setPath(raw as Record<string, unknown>, path, value);
    overridden.set(path.join('.'), variable);
  }

  const parsed = policySchema.safeParse(raw);
  if (parsed.success) return { ok: true, source, policy: deepFreeze(parsed.data) };
  for (const issue of parsed.error.issues) {
    problems.push(locateIssue(issue, document, lineCounter, source, overridden));
  }
  return { ok: false, source, problems };
}

export function locateIssue(
  issue: z.core.$ZodIssue,
  document: Document,
  lineCounter: LineCounter,
  source: string,
  overridden: Map<string, string>,
): PolicyProblem {
  const path = issue.path.map(String);
  const dotted = path.join('.');
  const variable = overridden.get(dotted);
  if (variable) return { source: `environment ${variable}`, line: 0, column: 0, path: dotted, reason: issue.message };

  let reason = issue.message;
  let node = nearestNode(document, path);
  if (issue.code === 'unrecognized_keys') {
    reason = `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((key) => `"${key}"`).join(', ')}`;
    const keyNode = keyNodeOf(document, path, issue.keys[0] ?? '');
    if (keyNode) node = keyNode;
  }
  const offset = node?.range?.[0] ?? 0;
  const position = node ? lineCounter.linePos(offset) : { line: 1, col: 1 };
  return { source, line: position.line, column: position.col, path: dotted, reason };
}

/** The node at path, or its closest ancestor that exists in the file (a missing key is reported at its parent). */
function nearestNode(document: Document, path: string[]): Node | undefined {
  for (let length = path.length; length >= 0; length -= 1) {
    const node = length === 0 ? document.contents : document.getIn(path.slice(0, length), true);
    if (node && typeof node === 'object' && 'range' in node) return node as Node;
  }
  return undefined;
}

function keyNodeOf(document: Document, parentPath: string[], key: string): Node | undefined {
  const parent = parentPath.length === 0 ? document.contents : document.getIn(parentPath, true);
  if (!isMap(parent)) return undefined;
  for (const pair of parent.items) {
    if (isScalar(pair.key) && String(pair.key.value) === key) return pair.key;
  }
  return undefined;
}

function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let cursor = target;
  for (const key of path.slice(0, -1)) {
    const next = cursor[key];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) cursor[key] = {};
    cursor = cursor[key] as Record<string, unknown>;
  }
  cursor[path[path.length - 1] as string] = value;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
