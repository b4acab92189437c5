
# ---- containerd (Kubernetes nodes): trusts the CA (system store, /etc/containerd/certs.d) and
# uses the proxy. Restarting containerd leaves running containers alone. ----

main() {
	parse_args "$@"
	prepare
	install_system_ca
	install_host_cas /etc/containerd/certs.d
	for cd_host in $HOSTS; do
		if [ -f "$ROOT/etc/containerd/certs.d/$cd_host/hosts.toml" ]; then
			say "note: $ROOT/etc/containerd/certs.d/$cd_host/hosts.toml exists, so containerd reads only what it names: add ca = \"ca.crt\" to it"
		fi
	done
	if [ -f "$ROOT/etc/containerd/config.toml" ] && ! grep -q 'config_path *= *"[^"]*certs\.d' "$ROOT/etc/containerd/config.toml"; then
		say "note: certs.d is read only with config_path = \"/etc/containerd/certs.d\" in the CRI registry section of $ROOT/etc/containerd/config.toml (the default from containerd 2.0); the system store works either way"
	fi
	put_file /etc/systemd/system/containerd.service.d/http-proxy.conf "$SECRET_MODE" "$(systemd_dropin)" config
	UNIT_CHANGED=$PF_CHANGED
	refresh_system_store
	restart_service containerd
	finish
}

main "$@"
