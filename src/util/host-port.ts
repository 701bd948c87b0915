// Parses the "host:port" strings of the policy and the PUSHBACK_* environment variables.
// IPv6 hosts are written in brackets ("[::1]:2525"), as in URLs, so the last colon is unambiguous.

export interface HostPort {
  host: string;
  port: number;
}

export function parseHostPort(text: string): HostPort {
  const trimmed = text.trim();
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(trimmed);
  const plain = /^([^:[\]]+):(\d+)$/.exec(trimmed);
  const match = bracketed ?? plain;
  if (!match) {
    throw new Error(`expected host:port (IPv6 as [addr]:port), got "${text}"`);
  }
  const port = Number(match[2]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`port out of range in "${text}"`);
  }
  return { host: match[1] as string, port };
}

export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
