#!/bin/sh
# hoard host setup for @ENGINE@ as a registry mirror, served by hoard at
# http://@PROXY@/setup/@ENGINE@?mode=mirror
#
#   curl -fsSL 'http://@PROXY@/setup/@ENGINE@?mode=mirror' | sudo sh
#   curl -fsSL 'http://@PROXY@/setup/@ENGINE@?mode=mirror' | sh -s -- --dry-run
#
# Points @ENGINE@ at hoard's registry mirror, @MIRROR_URL@: no proxy, and no CA in the system
# store. Safe to run again: files that are already right are left alone, and nothing is restarted
# when nothing changed. --help lists the options.
# Everything below is functions until the last line, so a download cut short runs nothing.
set -eu
set -f
umask 022
LC_ALL=C
export LC_ALL

ENGINE='@ENGINE@'
# Where this host fetched the script from (host:port).
PROXY_HOSTPORT='@PROXY@'
SETUP_URL="http://$PROXY_HOSTPORT/setup/$ENGINE?mode=mirror"
# hoard's mirror listener (mirror.listen), as this host reaches it.
MIRROR_URL='@MIRROR_URL@'
MIRROR_HOSTPORT='@MIRROR_HOSTPORT@'
# plain: HTTP. minted: TLS with a certificate from hoard's CA, which the engine trusts for the
# mirror's name only (certs.d, never the system store). files: TLS with the operator's certificate,
# trusted the way the system trusts it.
MIRROR_TLS='@MIRROR_TLS@'
# The registries hoard serves as a mirror: the exact hosts of intercept.hosts and
# mirror.registries, Docker Hub as registry-1.docker.io.
REGISTRIES='@REGISTRIES@'
# The wildcard patterns among them (*.domain). An engine's mirror config names each registry, and a
# pattern names none: registries under these are not set up here.
WILDCARDS='@WILDCARDS@'
# Where requests that name no registry go (mirror.default_registry): dockerd's registry-mirrors.
DEFAULT_REGISTRY='@DEFAULT_REGISTRY@'
# 1 when hoard serves it (intercept.hosts or mirror.registries match it).
DEFAULT_SERVED=@DEFAULT_SERVED@
# 1 when hoard requires credentials (proxy.auth_file); no password is ever in here.
AUTH_REQUIRED=@AUTH_REQUIRED@

ca_pem() {
	cat <<'HOARD_CA_PEM'
@CA_PEM@
HOARD_CA_PEM
}
