
# ---- Shared by every hoard setup script ----

DRY_RUN=0
ROOT=${HOARD_SETUP_ROOT-}
PROXY_USER=${HOARD_PROXY_USER-}
EXTRA_NO_PROXY=${HOARD_NO_PROXY-}
CA_SHA256=${HOARD_CA_SHA256-}
CHANGES=0
PF_CHANGED=0
CA_CHANGED=0
UNIT_CHANGED=0
MARKER='# Written by hoard setup'

usage() {
	cat <<EOF
Usage: curl -fsSL http://$PROXY_HOSTPORT/setup/$ENGINE | sudo sh -s -- [OPTIONS]

  -n, --dry-run                 say what would change; change nothing
  --root DIR                    write every file under DIR and restart nothing
                                (env HOARD_SETUP_ROOT), e.g. for an image build
  --proxy-user USER:PASSWORD    credentials for hoard's proxy authentication
                                (env HOARD_PROXY_USER)
  --no-proxy LIST               more NO_PROXY entries, comma-separated
                                (env HOARD_NO_PROXY)
  --ca-sha256 HEX               change nothing unless the CA in this script has this
                                fingerprint (hoard ca fingerprint; env HOARD_CA_SHA256)
  -h, --help                    this text
EOF
}

say() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
fail() {
	printf 'hoard setup: %s\n' "$*" >&2
	exit 1
}
usage_error() {
	printf 'hoard setup: %s\n' "$*" >&2
	usage >&2
	exit 2
}

parse_args() {
	while [ $# -gt 0 ]; do
		case $1 in
		-n | --dry-run) DRY_RUN=1 ;;
		--root)
			[ $# -ge 2 ] || usage_error "--root needs a folder"
			ROOT=$2
			shift
			;;
		--root=*) ROOT=${1#--root=} ;;
		--proxy-user)
			[ $# -ge 2 ] || usage_error "--proxy-user needs USER:PASSWORD"
			PROXY_USER=$2
			shift
			;;
		--proxy-user=*) PROXY_USER=${1#--proxy-user=} ;;
		--no-proxy)
			[ $# -ge 2 ] || usage_error "--no-proxy needs a list"
			EXTRA_NO_PROXY=$2
			shift
			;;
		--no-proxy=*) EXTRA_NO_PROXY=${1#--no-proxy=} ;;
		--ca-sha256)
			[ $# -ge 2 ] || usage_error "--ca-sha256 needs a fingerprint"
			CA_SHA256=$2
			shift
			;;
		--ca-sha256=*) CA_SHA256=${1#--ca-sha256=} ;;
		-h | --help)
			usage
			exit 0
			;;
		*) usage_error "unknown option: $1" ;;
		esac
		shift
	done
	# "/" and "" both mean the real root.
	while [ "${ROOT%/}" != "$ROOT" ]; do ROOT=${ROOT%/}; done
	check_ca_sha256
}

# Compares --ca-sha256 (or HOARD_CA_SHA256) with the fingerprint of the CA in this script,
# computed here from the PEM below (a fingerprint written by the server would be rewritten by
# whoever rewrote the script): a malformed value exits 2, a mismatch exits 1, both before
# anything is looked at or changed.
check_ca_sha256() {
	if [ -z "$CA_SHA256" ]; then
		printf 'hoard setup: note: --ca-sha256 HEX (from hoard ca fingerprint or its status page) checks the CA before it is trusted\n' >&2
		return 0
	fi
	cs_want=$(printf '%s' "$CA_SHA256" | tr 'A-Z' 'a-z')
	cs_want=${cs_want#sha256:}
	case $cs_want in
	*[!0-9a-f]* | '') usage_error "--ca-sha256 needs 64 hex digits, optionally after sha256:, not $CA_SHA256" ;;
	esac
	[ ${#cs_want} -eq 64 ] || usage_error "--ca-sha256 needs 64 hex digits, optionally after sha256:, not $CA_SHA256"
	if command -v sha256sum >/dev/null 2>&1; then
		cs_hash() { sha256sum; }
	elif command -v openssl >/dev/null 2>&1; then
		cs_hash() { openssl dgst -sha256 -r; }
	else
		fail "checking --ca-sha256 needs sha256sum or openssl, and this host has neither: nothing changed"
	fi
	if command -v base64 >/dev/null 2>&1; then
		cs_unbase64() { base64 -d; }
	elif command -v openssl >/dev/null 2>&1; then
		cs_unbase64() { openssl base64 -d -A; }
	else
		fail "checking --ca-sha256 needs base64 or openssl, and this host has neither: nothing changed"
	fi
	# The first certificate's base64, armour and line breaks removed, decoded to DER.
	cs_got=$(ca_pem | awk '/^-----BEGIN/ { on = 1; next } /^-----END/ { exit } on' | tr -d ' \t\r\n' | cs_unbase64 | cs_hash)
	cs_got=${cs_got%%[!0-9a-f]*}
	if [ "$cs_got" != "$cs_want" ]; then
		fail "the CA in this script is not the one --ca-sha256 names: expected sha256:$cs_want, got sha256:$cs_got; nothing changed (is this script really from your hoard?)"
	fi
	say "CA fingerprint checked: sha256:$cs_got"
}

# urlencode TEXT: percent-encodes every byte but RFC 3986's unreserved ones (LC_ALL=C: bytes).
urlencode() {
	ue_rest=$1
	ue_out=
	while [ -n "$ue_rest" ]; do
		ue_tail=${ue_rest#?}
		ue_char=${ue_rest%"$ue_tail"}
		ue_rest=$ue_tail
		case $ue_char in
		[A-Za-z0-9._~-]) ue_out=$ue_out$ue_char ;;
		*) ue_out=$ue_out$(printf '%%%02X' "'$ue_char") ;;
		esac
	done
	printf '%s' "$ue_out"
}

# Checks the options against the host, and works out the proxy URL and NO_PROXY.
prepare() {
	if [ "$DRY_RUN" = 0 ] && [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
		fail "run as root (curl -fsSL http://$PROXY_HOSTPORT/setup/$ENGINE | sudo sh), or add --dry-run"
	fi
	case $EXTRA_NO_PROXY in
	*[!A-Za-z0-9.,:/*_-]*) usage_error "--no-proxy takes host names, addresses and CIDRs separated by commas" ;;
	esac
	NO_PROXY_LIST=$NO_PROXY_BASE${EXTRA_NO_PROXY:+,$EXTRA_NO_PROXY}
	PROXY_URL=http://$PROXY_HOSTPORT
	SECRET_MODE=644
	if [ -n "$PROXY_USER" ]; then
		case $PROXY_USER in
		?*:*) ;;
		*) usage_error "--proxy-user takes USER:PASSWORD" ;;
		esac
		PROXY_URL=http://$(urlencode "${PROXY_USER%%:*}"):$(urlencode "${PROXY_USER#*:}")@$PROXY_HOSTPORT
		SECRET_MODE=600
		say "hoard setup for $ENGINE: proxy http://$PROXY_HOSTPORT as user ${PROXY_USER%%:*}"
	else
		say "hoard setup for $ENGINE: proxy http://$PROXY_HOSTPORT"
	fi
	if [ "$AUTH_REQUIRED" = 1 ] && [ -z "$PROXY_USER" ]; then
		warn "hoard requires proxy credentials: run again with --proxy-user USER:PASSWORD (or HOARD_PROXY_USER); until then pulls fail with 407"
	fi
	if [ "$DRY_RUN" = 1 ]; then
		say "dry run: nothing is written or restarted"
	fi
	CA_PEM=$(ca_pem)
}

# put_file PATH MODE CONTENT [config]: makes ROOT/PATH hold CONTENT and a newline. A config file
# that hoard did not write is kept next to it as PATH.before-hoard. Sets PF_CHANGED.
put_file() {
	pf_dest=$ROOT$1
	PF_CHANGED=0
	if [ -f "$pf_dest" ] && [ "$(cat "$pf_dest" && printf x)" = "$3
x" ]; then
		if [ "$DRY_RUN" = 0 ]; then chmod "$2" "$pf_dest"; fi
		say "unchanged  $pf_dest"
		return 0
	fi
	PF_CHANGED=1
	CHANGES=$((CHANGES + 1))
	pf_verb=create
	if [ -e "$pf_dest" ]; then
		pf_verb=update
		if [ "${4-}" = config ] && ! grep -q "^$MARKER" "$pf_dest" && [ ! -e "$pf_dest.before-hoard" ]; then
			if [ "$DRY_RUN" = 1 ]; then
				say "would save $pf_dest.before-hoard (not written by hoard)"
			else
				cp -p "$pf_dest" "$pf_dest.before-hoard"
				say "saved      $pf_dest.before-hoard (not written by hoard)"
			fi
		fi
	fi
	if [ "$DRY_RUN" = 1 ]; then
		say "would $pf_verb $pf_dest"
		return 0
	fi
	mkdir -p "${pf_dest%/*}"
	# Written next to the file, then renamed: never half a file, never a password readable
	# for a moment.
	(
		umask 077
		printf '%s\n' "$3" >"$pf_dest.hoard-tmp"
	)
	chmod "$2" "$pf_dest.hoard-tmp"
	mv -f "$pf_dest.hoard-tmp" "$pf_dest"
	say "${pf_verb}d    $pf_dest"
}

# run COMMAND...: runs a command (its output dropped unless it fails), or says it would.
run() {
	if [ "$DRY_RUN" = 1 ]; then
		say "would run  $*"
		return 0
	fi
	if ! "$@" </dev/null >/dev/null; then
		fail "$* failed"
	fi
	say "ran        $*"
}

have_systemd() {
	command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]
}

# The CA in Debian's system store (also read by every Go program: dockerd, containerd, podman).
install_system_ca() {
	put_file /usr/local/share/ca-certificates/hoard.crt 644 "$CA_PEM"
	CA_CHANGED=$PF_CHANGED
}

# install_host_cas DIR: DIR/<host>/ca.crt for each intercepted host.
install_host_cas() {
	for ih_host in $HOSTS; do
		put_file "$1/$ih_host/ca.crt" 644 "$CA_PEM"
	done
	for ih_pattern in $WILDCARDS; do
		say "note: $ih_pattern is a wildcard pattern, which $1 cannot hold: registries under it rely on the system store (or copy the CA to $1/<host>/ca.crt)"
	done
}

refresh_system_store() {
	if [ -n "$ROOT" ]; then
		if [ "$CA_CHANGED" = 1 ]; then
			say "skipped    update-ca-certificates (--root: run it inside that root)"
		fi
		return 0
	fi
	# Also after an earlier run that stopped before the store was rebuilt.
	if [ "$CA_CHANGED" = 0 ] && [ -e /etc/ssl/certs/hoard.pem ]; then
		return 0
	fi
	if command -v update-ca-certificates >/dev/null 2>&1; then
		run update-ca-certificates
	else
		say "note: no update-ca-certificates here: add /usr/local/share/ca-certificates/hoard.crt to the system store yourself (Fedora, RHEL: copy it to /etc/pki/ca-trust/source/anchors/ and run update-ca-trust)"
	fi
}

# systemd_dropin: a [Service] drop-in with the proxy environment. systemd expands % specifiers
# in Environment=, so a percent-encoded password has its % doubled.
systemd_dropin() {
	printf '%s\n' "$MARKER from http://$PROXY_HOSTPORT/setup/$ENGINE; run it again to update."
	printf '[Service]\n'
	printf 'Environment="HTTPS_PROXY=%s"\n' "$(printf '%s' "$PROXY_URL" | sed 's/%/%%/g')"
	printf 'Environment="NO_PROXY=%s"' "$NO_PROXY_LIST"
}

# restart_service NAME [NOTE]: after a change, so the service reads the new environment and CA.
# NOTE is said first when the restart happens.
restart_service() {
	if [ "$CHANGES" = 0 ]; then
		return 0
	fi
	if [ -n "$ROOT" ]; then
		say "skipped    systemctl restart $1 (--root)"
	elif ! have_systemd; then
		say "note: systemd is not running here: restart $1 yourself to apply"
	elif ! systemctl cat "$1.service" >/dev/null 2>&1; then
		say "note: $1.service is not installed: it uses hoard once it is"
	else
		if [ "$UNIT_CHANGED" = 1 ]; then
			run systemctl daemon-reload
		fi
		if [ -n "${2-}" ]; then say "note: $2"; fi
		run systemctl restart "$1"
	fi
}

finish() {
	if [ "$DRY_RUN" = 1 ]; then
		say "dry run: $CHANGES file(s) would change"
	elif [ "$CHANGES" = 0 ]; then
		say "done: $ENGINE already uses hoard at http://$PROXY_HOSTPORT; everything unchanged"
	else
		say "done: $CHANGES file(s) changed; $ENGINE pulls through hoard at http://$PROXY_HOSTPORT"
	fi
}
