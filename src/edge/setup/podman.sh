
# ---- podman (and buildah): trust the CA (system store, /etc/containers/certs.d) and use the
# proxy through containers.conf's [engine] env, the environment the engine itself runs with. ----

podman_conf() {
	printf '%s\n' "$MARKER from http://$PROXY_HOSTPORT/setup/$ENGINE; run it again to update."
	printf '%s\n' "# podman and buildah set this environment for themselves unless it is set already."
	printf '[engine]\n'
	printf 'env = ["HTTPS_PROXY=%s", "NO_PROXY=%s"]' "$PROXY_URL" "$NO_PROXY_LIST"
}

main() {
	parse_args "$@"
	prepare
	install_system_ca
	install_host_cas /etc/containers/certs.d
	# Readable by everyone: rootless podman reads it as the user who runs it.
	put_file /etc/containers/containers.conf.d/hoard.conf 644 "$(podman_conf)" config
	if [ -n "$PROXY_USER" ]; then
		warn "/etc/containers/containers.conf.d/hoard.conf holds the proxy password and is readable by every local user (rootless podman must read it)"
	fi
	refresh_system_store
	say "note: podman has no daemon: its next command uses hoard (restart podman.service if you run the API service)"
	say "note: an HTTPS_PROXY already in podman's environment wins over this file; podman also passes it on into containers unless [containers] http_proxy = false"
	finish
}

main "$@"
