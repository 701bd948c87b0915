#!/bin/sh
# Loads the proxy's nftables export (pushback.firewall.nftablesFile) into the kernel's sets
# blocked_v4 and blocked_v6 of table inet smtp_pushback. The file is written by the unprivileged
# proxy and this runs with CAP_NET_ADMIN, so none of the file's text is handed to nft: the loader
# reads the elements' addresses, prefixes and timeouts out of it with strict patterns, writes an
# nftables script of its own from them (declare the table and both sets, flush both, add the
# elements), lets nft check that script (nft -c) and only then loads it. A file holding any byte but
# tab, newline and printable ASCII, a line longer than any the proxy writes, or any line that is not
# one of the export's own (see renderNftables) is refused whole and nothing is loaded: a compromised
# proxy can at worst change which clients port 25 drops.
# Usage: load-blocked-sets.sh [FILE] (default /var/lib/smtp-pushback/pushback.nft); NFT=path of nft.
# --check: read the file and have nft check the script built from it, without loading (exit 0 when
# the file would be loaded).
set -eu

# Bytes, not characters: in a UTF-8 locale sed stops at an invalid byte and grep calls the rest
# binary and prints nothing, which once let `# \xff\0` hide every line after it from the check.
LC_ALL=C
export LC_ALL

check_only=no
if [ "${1:-}" = "--check" ]; then
  check_only=yes
  shift
fi
file=${1:-/var/lib/smtp-pushback/pushback.nft}
nft=${NFT:-nft}

# The private copy that is read, and the script that is loaded, live where the proxy cannot write.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
copy=$work/copy
normal=$work/normal
script=$work/load.nft

refuse() {
  # The file's words are not printed: the file is not trusted, and neither is what it says.
  echo "load-blocked-sets: $file has $1; nothing loaded" >&2
  exit 1
}

# The export's lines, blanks squeezed. A host is written bare, a network as address/length, each with
# the whole seconds it has left; no ranges, no expires, no other duration (renderNftables writes none).
octet='(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])'
ipv4="$octet(\\.$octet){3}(/([0-9]|[12][0-9]|3[0-2]))?"
ipv6='[0-9a-f]{0,4}(:[0-9a-f]{0,4}){2,7}(/([0-9]|[1-9][0-9]|1[01][0-9]|12[0-8]))?'
timeout=' timeout [1-9][0-9]{0,9}s'
v4="$ipv4($timeout)?"
v6="$ipv6($timeout)?"
table='inet smtp_pushback'
line="(#.*)?|table $table \\{|set blocked_v4 \\{|set blocked_v6 \\{|type ipv4_addr|type ipv6_addr"
line="$line|flags interval, timeout|\\}|flush set $table blocked_v4|flush set $table blocked_v6"
line="$line|add element $table blocked_v4 \\{ $v4(, $v4)* \\}|add element $table blocked_v6 \\{ $v6(, $v6)* \\}"
# 500 elements a line (ELEMENTS_PER_STATEMENT) of at most about 60 bytes each.
max_line_bytes=65536

# The elements of one set's lines, one a line, as "address [timeout]": fields, not the file's text.
elements() {
  sed -n "s/^add element $table blocked_v$1 { \\(.*\\) }\$/\\1/p" "$normal" | tr ',' '\n' |
    awk 'NF == 1 { print $1 } NF == 3 { print $1, $3 }'
}

# The script nft loads, the same declarations as deploy/nftables/smtp-pushback.nft (so either loads
# first), 500 elements a statement as the proxy writes them.
render() {
  printf 'table %s {\n' "$table"
  printf '\tset blocked_v4 {\n\t\ttype ipv4_addr\n\t\tflags interval, timeout\n\t}\n'
  printf '\tset blocked_v6 {\n\t\ttype ipv6_addr\n\t\tflags interval, timeout\n\t}\n'
  printf '}\nflush set %s blocked_v4\nflush set %s blocked_v6\n' "$table" "$table"
  for family in 4 6; do
    elements "$family" | awk -v head="add element $table blocked_v$family { " '
      { list = list sep $1 (NF == 2 ? " timeout " $2 : ""); sep = ", " }
      NR % 500 == 0 { print head list " }"; list = ""; sep = "" }
      END { if (list != "") print head list " }" }'
  done
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

  # Before anything else reads it: a byte outside tab, newline and printable ASCII (NUL, CR, VT, a
  # UTF-8 BOM, any byte above 0x7e) is one no line of the export holds.
  odd_bytes=$(tr -d '\011\012\040-\176' < "$copy" | wc -c)
  [ "$odd_bytes" -eq 0 ] || refuse "$odd_bytes byte(s) other than tab, newline and printable ASCII"
  long_lines=$(awk -v max="$max_line_bytes" 'length($0) > max { n++ } END { print n + 0 }' "$copy")
  [ "$long_lines" -eq 0 ] || refuse "$long_lines line(s) longer than $max_line_bytes bytes"

  sed -e 's/[[:blank:]][[:blank:]]*/ /g' -e 's/^ //' -e 's/ $//' "$copy" > "$normal"
  # grep -c exits 1 when every line matched; above 1 it could not read the file, which is a refusal too.
  grep_status=0
  unlike=$(grep -a -v -x -E -c -e "$line" -- "$normal") || grep_status=$?
  [ "$grep_status" -le 1 ] || refuse "lines the check could not read"
  [ "$unlike" -eq 0 ] || refuse "$unlike line(s) outside the sets of table inet smtp_pushback"

  render > "$script"
  "$nft" -c -f "$script" || refuse "elements nft -c refused"
  if [ "$check_only" = yes ]; then
    echo "load-blocked-sets: $file: OK"
    exit 0
  fi
  "$nft" -f "$script"
  round=$((round + 1))
  if cmp -s -- "$file" "$copy" || [ "$round" -ge 5 ]; then
    exit 0
  fi
done
