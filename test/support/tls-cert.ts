// A throwaway self-signed certificate for STARTTLS tests, made by Debian's openssl in a fresh
// directory: the proxy offers STARTTLS with it; clients are told not to check it.
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestCertificate {
  keyFile: string;
  certFile: string;
  remove(): Promise<void>;
}

export async function makeTestCertificate(commonName: string): Promise<TestCertificate> {
  const dir = await mkdtemp(join(tmpdir(), 'pushback-cert-'));
  const keyFile = join(dir, 'key.pem');
  const certFile = join(dir, 'cert.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', `/CN=${commonName}`, '-addext', `subjectAltName=DNS:${commonName}`,
    '-keyout', keyFile, '-out', certFile,
  ], { stdio: 'ignore', timeout: 30_000 });
  return { keyFile, certFile, remove: () => rm(dir, { recursive: true, force: true }) };
}
