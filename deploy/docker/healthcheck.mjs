// The image's HEALTHCHECK: exits 0 when the proxy's admin listener answers the path (default
// /healthz) with 2xx within 3 s, 1 otherwise. It reads the admin address where the proxy does, in
// PUSHBACK_ADMIN; 0.0.0.0 and [::] mean "this container".
const admin = process.env.PUSHBACK_ADMIN || '127.0.0.1:8025';
const address = admin.replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^\[::\]:/, '[::1]:');
const path = process.argv[2] || '/healthz';

try {
  const response = await fetch(`http://${address}${path}`, { signal: AbortSignal.timeout(3_000) });
  if (!response.ok) console.error(`${path}: HTTP ${response.status}`);
  process.exit(response.ok ? 0 : 1);
} catch (error) {
  console.error(`${path} at ${address}: ${error.cause?.code ?? error.message}`);
  process.exit(1);
}
