#!/bin/sh
# Loads the proxy's nftables export (pushback.firewall.nftablesFile) into the kernel, after checking
# that it only declares, flushes and fills the sets blocked_v4 and blocked_v6 of table inet
# smtp_pushback. The file is written by the unprivileged proxy and loaded with CAP_NET_ADMIN, so
# anything else (flush ruleset, include, other tables, chains, rules, variables, strings) is refused
# and nothing is loaded: a compromised proxy can at worst change which clients port 25 drops.
# Usage: load-blocked-sets.sh [FILE] (default /var/lib/smtp-pushback/pushback.nft); NFT=path of nft.
# --check: only the check, no loading (exit 0 when the file would be loaded).
set -eu

check_only=no
if [ "${1:-}" = "--check" ]; then
  check_only=yes
  shift
fi
file=${1:-/var/lib/smtp-pushback/pushback.nft}
nft=${NFT:-nft}

if [ -L "$file" ] || [ ! -f "$file" ]; then
  echo "load-blocked-sets: $file is not a regular file; nothing loaded" >&2
  exit 1
fi

# Checked and loaded from one private copy, so the file cannot change between the two.
copy=$(mktemp)
trap 'rm -f "$copy"' EXIT
cat -- "$file" > "$copy"

# Every word of the file, comments removed, split at blanks and nft's punctuation.
keywords='table|inet|smtp_pushback|set|blocked_v4|blocked_v6|type|ipv4_addr|ipv6_addr|flags|interval|timeout|expires|flush|add|delete|element|elements|auto-merge|size'
ipv4='[0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?'
ipv6='[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*(/[0-9]{1,3})?'
duration='([0-9]+(ms|s|m|h|d))+'
allowed="^($keywords|$ipv4|$ipv6|$ipv4-$ipv4|$ipv6-$ipv6|$duration|[0-9]+)\$"
refused=$(sed 's/#.*//' "$copy" | tr -s '{};,=\t\r ' '[\n*]' | grep -v '^$' | grep -Evc "$allowed" || true)
if [ "$refused" != "0" ]; then
  # The words themselves are not printed: the file is not trusted, and neither is what it says.
  echo "load-blocked-sets: $file has $refused word(s) outside the sets of table inet smtp_pushback; nothing loaded" >&2
  exit 1
fi

if [ "$check_only" = yes ]; then
  echo "load-blocked-sets: $file: OK"
  exit 0
fi
"$nft" -f "$copy"
