
# ---- docker: dockerd trusts the CA (system store, /etc/docker/certs.d) and uses the proxy ----

main() {
	parse_args "$@"
	prepare
	install_system_ca
	install_host_cas /etc/docker/certs.d
	put_file /etc/systemd/system/docker.service.d/http-proxy.conf "$SECRET_MODE" "$(systemd_dropin)" config
	UNIT_CHANGED=$PF_CHANGED
	if [ -f "$ROOT/etc/docker/daemon.json" ] && grep -q '"proxies"' "$ROOT/etc/docker/daemon.json"; then
		say "note: $ROOT/etc/docker/daemon.json sets \"proxies\", which dockerd prefers to this drop-in: set \"https-proxy\" there to http://$PROXY_HOSTPORT"
	fi
	refresh_system_store
	restart_service docker "restarting dockerd stops running containers unless live-restore is on"
	finish
}

main "$@"
