#!/bin/sh
# Loads the proxy's nftables export (pushback.firewall.nftablesFile) into the kernel, after checking
# that it only declares, flushes and fills the sets blocked_v4 and blocked_v6 of table inet
# smtp_pushback. The file is written by the unprivileged proxy and loaded with CAP_NET_ADMIN, so
# anything else (flush ruleset, include, other tables, chains, rules, deleting or flushing the table,
# variables, strings) is refused and nothing is loaded: a compromised proxy can at worst change which
# clients port 25 drops.
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

# Checked and loaded from one private copy, so the file cannot change between the two.
copy=$(mktemp)
trap 'rm -f "$copy"' EXIT

# Every word of the file, comments removed, split at blanks and nft's punctuation: the words of the
# statements below and the addresses, ranges and durations of the elements.
keywords='table|inet|smtp_pushback|set|blocked_v4|blocked_v6|type|ipv4_addr|ipv6_addr|flags|interval|timeout|expires|flush|add|element'
ipv4='[0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?'
ipv6='[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*(/[0-9]{1,3})?'
duration='([0-9]+(ms|s|m|h|d))+'
allowed="^($keywords|$ipv4|$ipv6|$ipv4-$ipv4|$ipv6-$ipv6|$duration)\$"

# Every line, comments removed and blanks squeezed, must be one of the export's own statements (see
# renderNftables): the lines of the table's declaration, a flush of one of the two sets, or elements
# added to one. Allowed words alone would let `flush table`, `add chain` or `add rule` through; `;`
# and line continuations match no line, so two statements cannot share one.
sets='(blocked_v4|blocked_v6)'
element="($ipv4|$ipv6|$ipv4-$ipv4|$ipv6-$ipv6)( timeout $duration)?( expires $duration)?"
statement="^(table inet smtp_pushback \\{|set $sets \\{|type ipv4_addr|type ipv6_addr|flags interval, ?timeout|\\}"
statement="$statement|flush set inet smtp_pushback $sets|add element inet smtp_pushback $sets \\{ ?$element(, ?$element)* ?\\})\$"

refuse() {
  # The file's words are not printed: the file is not trusted, and neither is what it says.
  echo "load-blocked-sets: $file has $1 outside the sets of table inet smtp_pushback; nothing loaded" >&2
  exit 1
}

# The proxy may replace the file while it is being loaded; systemd folds that change into the start
# already running, so the loader itself loads again until what it loaded is what the file holds
# (a few rounds: the proxy rewrites it at most about once a second).
round=0
while :; do
  if [ -L "$file" ] || [ ! -f "$file" ]; then
    echo "load-blocked-sets: $file is not a regular file; nothing loaded" >&2
    exit 1
  fi
  cat -- "$file" > "$copy"
  words=$(sed 's/#.*//' "$copy" | tr -s '{};,=\t\r ' '[\n*]' | grep -v '^$' | grep -Evc "$allowed" || true)
  [ "$words" = "0" ] || refuse "$words word(s)"
  lines=$(sed -e 's/#.*//' -e 's/[[:space:]]\{1,\}/ /g' -e 's/^ //' -e 's/ $//' "$copy" | grep -v '^$' | grep -Evc "$statement" || true)
  [ "$lines" = "0" ] || refuse "$lines statement(s)"

  if [ "$check_only" = yes ]; then
    echo "load-blocked-sets: $file: OK"
    exit 0
  fi
  "$nft" -f "$copy"
  round=$((round + 1))
  if cmp -s -- "$file" "$copy" || [ "$round" -ge 5 ]; then
    exit 0
  fi
done
