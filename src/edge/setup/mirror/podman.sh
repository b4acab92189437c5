
# ---- podman (and buildah, skopeo, CRI-O): a registries.conf.d drop-in with hoard's mirror for
# each registry. The mirror's path prefix names the registry (hoard:5000/gcr.io/...); a pull that
# fails there goes to the registry itself. ----

DROP_IN=/etc/containers/registries.conf.d/50-hoard-mirror.conf

registries_conf() {
	printf '%s\n' "$MARKER from $SETUP_URL; run it again to update."
	printf '%s' "# Each registry is pulled through hoard's mirror first, directly when that fails."
	for rc_registry in $REGISTRIES; do
		rc_name=$(registry_name "$rc_registry")
		printf '\n\n[[registry]]\nprefix = "%s"\nlocation = "%s"\n' "$rc_name" "$rc_name"
		printf '\n[[registry.mirror]]\nlocation = "%s/%s"' "$MIRROR_HOSTPORT" "$rc_name"
		if [ "$MIRROR_TLS" = plain ]; then
			printf '\ninsecure = true'
		fi
	done
}

main() {
	parse_args "$@"
	prepare
	if [ -n "$REGISTRIES" ]; then
		install_mirror_ca /etc/containers/certs.d
		# Readable by everyone: rootless podman reads it as the user who runs it.
		put_file "$DROP_IN" 644 "$(registries_conf)" config
	fi
	if grep -q '^[[:space:]]*\[registries\.' "$ROOT/etc/containers/registries.conf" 2>/dev/null; then
		warn "$ROOT/etc/containers/registries.conf is in the version 1 format ([registries.search]), which podman does not combine with a drop-in: convert it to [[registry]] tables"
	fi
	say "note: podman has no daemon: its next command uses hoard's mirror (restart podman.service or crio if you run them)"
	finish
}

main "$@"
