#!/bin/sh
# The compose deployment's Postfix: Debian's Postfix configured with main.cf.snippet, its smtpd on
# port 10025 of the compose network for the proxy alone (the proxy's fixed address is the only
# XCLIENT host), mail for POSTFIX_DOMAIN delivered to maildirs under /var/mail/vhosts, the log on
# stdout; then Postfix in the foreground.
#   POSTFIX_PROXY_ADDRESS  the proxy's address on the compose network (required)
#   POSTFIX_HOSTNAME       myhostname (default mx.example.org)
#   POSTFIX_DOMAIN         the domain received for (default example.org)
#   POSTFIX_MAILBOXES      local parts with a mailbox, comma-separated (default postmaster)
# --configure-only: write the configuration and stop (tests point POSTFIX_CONFIG_DIRECTORY and
# POSTFIX_PUSHBACK_SNIPPETS elsewhere).
set -eu
: "${POSTFIX_PROXY_ADDRESS:?the proxy's address on the compose network}"
hostname=${POSTFIX_HOSTNAME:-mx.example.org}
domain=${POSTFIX_DOMAIN:-example.org}
mailboxes=${POSTFIX_MAILBOXES:-postmaster}
config=${POSTFIX_CONFIG_DIRECTORY:-/etc/postfix}
snippets=${POSTFIX_PUSHBACK_SNIPPETS:-/etc/postfix/pushback}
vmail_id=5000

cat > "$config/main.cf" <<MAIN
compatibility_level = 3.6
myhostname = $hostname
mydestination =
inet_interfaces = all
inet_protocols = ipv4
maillog_file = /dev/stdout
alias_maps =
alias_database =
biff = no
virtual_mailbox_domains = $domain
virtual_mailbox_base = /var/mail/vhosts
virtual_mailbox_maps = texthash:$config/vmailbox
virtual_uid_maps = static:$vmail_id
virtual_gid_maps = static:$vmail_id
MAIN
cat "$snippets/main.cf.snippet" >> "$config/main.cf"

: > "$config/vmailbox"
for local in $(echo "$mailboxes" | tr ',' ' '); do
  echo "$local@$domain $domain/$local/" >> "$config/vmailbox"
done

# No public smtpd in the container: only the proxy's service, on every container address (the proxy
# is another container), in place of master.cf.snippet's loopback one. No chroot: the container is
# the confinement, and a chroot would need copies of /etc files.
postconf -c "$config" -MX smtp/inet
postconf -c "$config" -M "10025/inet=10025 inet n - n - - smtpd"
postconf -c "$config" -P "10025/inet/syslog_name=postfix/pushback" "10025/inet/smtpd_authorized_xclient_hosts=$POSTFIX_PROXY_ADDRESS"
postconf -c "$config" -F '*/*/chroot = n'

if [ "${1:-}" = "--configure-only" ]; then
  exit 0
fi
exec postfix -c "$config" start-fg
