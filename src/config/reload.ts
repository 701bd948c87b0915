// Policy reload: on SIGHUP and when the file changes, the file is loaded again; a policy that
// validates replaces the snapshot, one that does not is refused with file:line:reason and the
// old one stays in force. Listeners ask current() each time, so they see a whole snapshot.
import { watch, type FSWatcher } from 'node:fs';
import type { Logger } from 'pino';
import { formatProblem, loadPolicyFile } from './load.js';
import type { Policy } from './schema.js';

/**
 * The policy keys read only at start (whole sections, or single keys): a reload that changes one says
 * so by name and keeps running with the old value. Every other key is read where it is used, from the
 * policy in force, and takes effect at once: mode, pushback, notices, quarantine.release and
 * quarantine.adminToken, admin.allowedHosts (checked at each request).
 */
export const RESTART_ONLY_KEYS: readonly string[] = [
  'server', 'limits', 'upstream', 'state', 'entropy', 'log', 'dns',
  'admin.listen', 'admin.maxConnections',
  'quarantine.spoolDir', 'quarantine.maxBytes', 'quarantine.maxMessages',
];

/** The restart-only keys whose value differs between two policies. */
export function changedRestartOnlyKeys(before: Policy, after: Policy): string[] {
  const valueAt = (policy: Policy, key: string): string => JSON.stringify(key.split('.').reduce<unknown>((node, name) => (node as Record<string, unknown> | undefined)?.[name], policy)) ?? 'undefined';
  return RESTART_ONLY_KEYS.filter((key) => valueAt(before, key) !== valueAt(after, key));
}

export interface ReloadState {
  source: string;
  loadedAtMs: number;
  reloads: number;
  /** The problems of the last refused reload, until a later one succeeds. */
  lastError?: string[];
}

export class PolicyHolder {
  private policy: Policy;
  private readonly listeners: Array<(policy: Policy) => void> = [];
  private watcher: FSWatcher | undefined;
  private debounce: NodeJS.Timeout | undefined;
  readonly state: ReloadState;

  constructor(initial: Policy, source: string, private readonly logger: Logger, private readonly env: NodeJS.ProcessEnv = process.env) {
    this.policy = initial;
    this.state = { source, loadedAtMs: Date.now(), reloads: 0 };
  }

  current(): Policy {
    return this.policy;
  }

  onChange(listener: (policy: Policy) => void): void {
    this.listeners.push(listener);
  }

  /** Loads the file again. Resolves true when the new policy is in force. */
  async reload(reason: string): Promise<boolean> {
    const result = await loadPolicyFile(this.state.source, this.env);
    if (!result.ok) {
      this.state.lastError = result.problems.map(formatProblem);
      this.logger.error({ reason, problems: this.state.lastError }, 'policy refused; the previous policy stays in force');
      return false;
    }
    const changedRestartOnly = changedRestartOnlyKeys(this.policy, result.policy);
    this.policy = result.policy;
    this.state.loadedAtMs = Date.now();
    this.state.reloads += 1;
    delete this.state.lastError;
    this.logger.info({ reason, source: this.state.source, mode: result.policy.mode }, 'policy reloaded');
    if (changedRestartOnly.length > 0) {
      this.logger.warn({ keys: changedRestartOnly }, 'these policy keys changed but take effect only at the next start');
    }
    for (const listener of this.listeners) listener(this.policy);
    return true;
  }

  /** Reload on SIGHUP and on changes to the file (editors replace files, so the directory entry is watched). */
  watch(): void {
    process.on('SIGHUP', this.onSighup);
    try {
      this.watcher = watch(this.state.source, { persistent: false }, () => this.scheduleReload());
      this.watcher.on('error', () => this.rewatchLater());
    } catch (error) {
      this.logger.warn({ err: error, source: this.state.source }, 'cannot watch the policy file; reload with SIGHUP');
    }
  }

  stop(): void {
    process.off('SIGHUP', this.onSighup);
    this.watcher?.close();
    clearTimeout(this.debounce);
  }

  private readonly onSighup = (): void => {
    void this.reload('SIGHUP');
  };

  private scheduleReload(): void {
    // An editor's save is several events (truncate, write, rename); reload once they settle.
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      void this.reload('file changed');
      this.rewatchLater();
    }, 200);
    this.debounce.unref();
  }

  /** After a rename-into-place the old inode's watch is dead: watch the path again. */
  private rewatchLater(): void {
    this.watcher?.close();
    try {
      this.watcher = watch(this.state.source, { persistent: false }, () => this.scheduleReload());
      this.watcher.on('error', () => undefined);
    } catch {
      // The file is gone for the moment; the next SIGHUP or start will say so.
    }
  }
}
