#!/bin/sh
# hoard host setup for @ENGINE@, served by hoard at http://@PROXY@/setup/@ENGINE@
#
#   curl -fsSL http://@PROXY@/setup/@ENGINE@ | sudo sh
#   curl -fsSL http://@PROXY@/setup/@ENGINE@ | sh -s -- --dry-run
#
# Trusts hoard's CA and points @ENGINE@ at hoard. Safe to run again: files that are already
# right are left alone, and nothing is restarted when nothing changed. --help lists the options.
# Everything below is functions until the last line, so a download cut short runs nothing.
set -eu
set -f
umask 022
LC_ALL=C
export LC_ALL

ENGINE='@ENGINE@'
# Where this host reaches hoard, as the script was fetched (host:port).
PROXY_HOSTPORT='@PROXY@'
# Always bypass the proxy for these (the proxy host itself included).
NO_PROXY_BASE='@NO_PROXY@'
# Intercepted registry hosts (hoard's intercept.hosts), and the wildcard patterns among them.
HOSTS='@HOSTS@'
WILDCARDS='@WILDCARDS@'
# 1 when hoard requires proxy authentication (proxy.auth_file); the password is never in here.
AUTH_REQUIRED=@AUTH_REQUIRED@

ca_pem() {
	cat <<'HOARD_CA_PEM'
@CA_PEM@
HOARD_CA_PEM
}
