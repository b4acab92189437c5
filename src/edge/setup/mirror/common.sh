
# ---- Shared by every mirror setup script: common.sh's parts for a registry mirror instead of a
# proxy (usage, prepare and finish are redefined here) ----

usage() {
	cat <<EOF
Usage: curl -fsSL '$SETUP_URL' | sudo sh -s -- [OPTIONS]

  -n, --dry-run                 say what would change; change nothing
  --root DIR                    write every file under DIR and restart nothing
                                (env HOARD_SETUP_ROOT), e.g. for an image build
  --ca-sha256 HEX               change nothing unless the CA in this script has this
                                fingerprint (hoard ca fingerprint; env HOARD_CA_SHA256)
  -h, --help                    this text
EOF
}

# Checks the options against the host.
prepare() {
	if [ "$DRY_RUN" = 0 ] && [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
		fail "run as root (curl -fsSL '$SETUP_URL' | sudo sh), or add --dry-run"
	fi
	if [ -n "$PROXY_USER$EXTRA_NO_PROXY" ]; then
		warn "--proxy-user and --no-proxy (HOARD_PROXY_USER, HOARD_NO_PROXY) are for proxy mode: ignored"
	fi
	say "hoard setup for $ENGINE: registry mirror $MIRROR_URL"
	if [ "$AUTH_REQUIRED" = 1 ]; then
		warn "hoard requires credentials (proxy.auth_file), on the mirror too: until $ENGINE logs in to $MIRROR_HOSTPORT, pulls through it fail with 401"
	fi
	if [ "$DRY_RUN" = 1 ]; then
		say "dry run: nothing is written or restarted"
	fi
	for pm_pattern in $WILDCARDS; do
		say "note: $pm_pattern is a wildcard pattern: $ENGINE's mirror config names each registry, so registries under it are not set up (add them to mirror.registries by name)"
	done
	if [ -z "$REGISTRIES" ]; then
		say "note: hoard serves no registry by name (intercept.hosts and mirror.registries): nothing to set up"
	fi
	CA_PEM=$(ca_pem)
}

# registry_name KEY: a registry as engines name it: Docker Hub is docker.io.
registry_name() {
	if [ "$1" = registry-1.docker.io ]; then
		printf 'docker.io'
	else
		printf '%s' "$1"
	fi
}

# file_mode PATH: 644, or 600 for an existing file that others cannot read, which stays so.
file_mode() {
	case $(ls -ld "$1" 2>/dev/null) in
	-??????r*) printf 644 ;;
	-*) printf 600 ;;
	*) printf 644 ;;
	esac
}

# existing PATH: ROOT/PATH for an editing awk program to read, or /dev/null when there is none.
existing() {
	if [ -e "$ROOT$1" ]; then
		printf '%s' "$ROOT$1"
	else
		printf /dev/null
	fi
}

# edit_config PATH OUTPUT: acts on what an editing awk program printed for ROOT/PATH: "ok" (the
# file is right), or "edit" and the new file, written with its mode kept. Returns 1 for anything
# else: a reason for the caller to give. Sets PF_CHANGED.
edit_config() {
	PF_CHANGED=0
	case $2 in
	ok) say "unchanged  $ROOT$1" ;;
	edit*) put_file "$1" "$(file_mode "$ROOT$1")" "${2#*
}" config ;;
	*) return 1 ;;
	esac
}

# install_mirror_ca DIR: DIR/<mirror host:port>/ca.crt, so that the engine trusts hoard's CA for
# the mirror's name only. Only a mirror with a certificate from hoard's CA needs it.
install_mirror_ca() {
	if [ "$MIRROR_TLS" = minted ]; then
		put_file "$1/$MIRROR_HOSTPORT/ca.crt" 644 "$CA_PEM"
	fi
}

finish() {
	if [ "$DRY_RUN" = 1 ]; then
		say "dry run: $CHANGES file(s) would change"
	elif [ "$CHANGES" = 0 ]; then
		say "done: $ENGINE already uses hoard's mirror at $MIRROR_URL; everything unchanged"
	else
		say "done: $CHANGES file(s) changed; $ENGINE pulls through hoard's mirror at $MIRROR_URL"
	fi
}
