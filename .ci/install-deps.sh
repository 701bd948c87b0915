#!/usr/bin/env bash
# Installs what the test suite needs beyond npm packages, from Debian, when missing:
# Postfix (end-to-end tests and benchmarks: postfix, smtp-source, smtp-sink), swaks, msmtp, curl and
# Python's smtplib (real clients), Exim's .debs (downloaded, never installed: its package conflicts
# with Postfix's; the interop test unpacks them), Redis (contract tests), softflowd with nfdump (the NetFlow pipeline of the
# offline SFDS e2e test), nftables (the firewall script and the deployment checks), systemd
# (systemd-analyze on the units), dnsmasq (reverse DNS tests), Prometheus (promtool on a scrape of /metrics
# and on the alert rules; the server itself scraping a test proxy) and Chromium (the dashboard's browser test);
# then makes sure a Redis answers on 127.0.0.1:6379. Idempotent; run as root (CI is).
set -euo pipefail

missing=()
[ -x /usr/sbin/postfix ] || missing+=(postfix)
command -v swaks >/dev/null || missing+=(swaks)
command -v msmtp >/dev/null || missing+=(msmtp)
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
command -v python3 >/dev/null || missing+=(python3)
command -v redis-server >/dev/null || missing+=(redis-server)
# The dashboard's browser test drives Debian's Chromium through playwright-core (no downloaded browser).
command -v chromium >/dev/null || missing+=(chromium)
[ -x /usr/sbin/softflowd ] || missing+=(softflowd)
command -v nfcapd >/dev/null || missing+=(nfdump)
# nft -c on the firewall script and the deployment files; loading in a network namespace; systemd-analyze verify.
command -v nft >/dev/null || missing+=(nftables)
command -v systemd-analyze >/dev/null || missing+=(systemd)
# A real DNS server on a loopback port for the reverse DNS tests (dnsmasq-base starts no service).
[ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
# Debian's prometheus: promtool lints a scrape of /metrics and checks deploy/prometheus/alerts.yml, and the
# prometheus server itself scrapes a test proxy (test/integration/prometheus-scrape.test.ts).
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || missing+=(prometheus)

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing from Debian: ${missing[*]}"
  # "No configuration": the tests run private Postfix instances; the system one stays unconfigured.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Exim 4 as a sending MTA in the interop suite: only the .debs, in the cache test/support/exim.ts reads.
exim_cache=/var/cache/smtp-pushback-test/exim
if ! ls "$exim_cache"/exim4-daemon-light_*.deb "$exim_cache"/exim4-base_*.deb >/dev/null 2>&1; then
  mkdir -p "$exim_cache"
  [ ${#missing[@]} -gt 0 ] || apt-get update -qq
  (cd "$exim_cache" && apt-get download -qq exim4-daemon-light exim4-base >/dev/null 2>&1) \
    || echo "could not download Exim's .debs; the interop test will try again" >&2
fi

redis_answers() {
  (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null
}
if ! redis_answers; then
  echo "starting redis-server on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 50); do redis_answers && break; sleep 0.1; done
  redis_answers || { echo "redis-server did not start" >&2; exit 1; }
fi
