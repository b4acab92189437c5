
# ---- containerd (Kubernetes nodes): /etc/containerd/certs.d/<registry>/hosts.toml sends each
# registry's pulls to hoard's mirror first and to the registry itself when the mirror fails; the
# CRI plugin reads that folder once config.toml's registry config_path names it. ----

CERTS_D=/etc/containerd/certs.d
CONFIG=/etc/containerd/config.toml
CONFIG_CHANGED=0

# hosts_toml DIR SERVER: one registry's hosts.toml; DIR is its folder, as containerd sees it.
hosts_toml() {
	printf '%s\n' "$MARKER from $SETUP_URL; run it again to update."
	printf 'server = "%s"\n\n' "$2"
	printf '[host."%s"]\n' "$MIRROR_URL"
	printf '  capabilities = ["pull", "resolve"]'
	if [ "$MIRROR_TLS" = minted ]; then
		# .pem, not .crt: without hosts.toml containerd would trust every *.crt in the folder
		# for the registry itself, and hoard's CA is for the mirror only.
		printf '\n  ca = "%s"' "$1/hoard-ca.pem"
	fi
}

# Reads config.toml and prints "ok" when the CRI plugin reads $dir already, "conflict WHAT" when
# the file has settings containerd does not combine with config_path, or "edit" and the new file:
# config_path set, or $dir put first in it, or the registry section added, named as the file's
# version names it (none: 1; 2: containerd 1.x; 3: containerd 2.x). An empty file gets version 2,
# which containerd 2.x reads too.
CRI_CONFIG_AWK='
function header(text) {
	sub(/^[ \t]*\[/, "", text)
	sub(/\][ \t]*(#.*)?$/, "", text)
	gsub(/[ \t]/, "", text)
	gsub(sq, "\"", text)
	return text
}
function is_registry(name) {
	return name == "plugins.\"io.containerd.grpc.v1.cri\".registry" ||
		name == "plugins.\"io.containerd.cri.v1.images\".registry" ||
		name == "plugins.cri.registry"
}
# The TOML string after the = of a key = "value" line, or "?" when it is no string.
function value(text,   quote, end) {
	sub(/^[^=]*=[ \t]*/, "", text)
	quote = substr(text, 1, 1)
	if (quote != "\"" && quote != sq) return "?"
	text = substr(text, 2)
	end = index(text, quote)
	if (end == 0) return "?"
	return substr(text, 1, end - 1)
}
{ line[NR] = $0 }
!/^[ \t]*(#.*)?$/ { settings = 1 }
/^[ \t]*\[/ {
	section = header($0)
	if (is_registry(section)) at = NR
	if (section ~ /\.registry\.mirrors\./) conflict = "registry.mirrors"
	if (section ~ /\.registry\.configs\..*\.tls$/) conflict = "registry.configs.<host>.tls"
	next
}
section == "" && /^[ \t]*version[ \t]*=/ { version = $0; sub(/^[^=]*=[ \t]*/, "", version); version += 0 }
is_registry(section) && /^[ \t]*config_path[ \t]*=/ { path_at = NR }
section ~ /^plugins\.("io\.containerd\.grpc\.v1\.cri"|"io\.containerd\.cri\.v1\.images"|cri)$/ && /^[ \t]*registry[ \t]*[.=]/ {
	conflict = "registry settings written inline"
}
END {
	if (conflict != "") { print "conflict " conflict; exit }
	count = NR
	setting = "config_path = \"" dir "\""
	v2 = "plugins.\"io.containerd.grpc.v1.cri\".registry"
	if (path_at) {
		current = value(line[path_at])
		if (current == "?") { print "conflict a config_path that is not a string"; exit }
		n = split(current, paths, ":")
		for (i = 1; i <= n; i++) {
			sub(/\/+$/, "", paths[i])
			if (paths[i] == dir) { print "ok"; exit }
		}
		if (current != "") setting = "config_path = \"" dir ":" current "\""
		indent = line[path_at]
		sub(/[^ \t].*$/, "", indent)
		line[path_at] = indent marker "\n" indent setting
	} else if (at) {
		line[at] = line[at] "\n  " marker "\n  " setting
	} else if (!settings) {
		line[++count] = marker "\nversion = 2\n\n[" v2 "]\n  " setting
	} else {
		name = version >= 3 ? "plugins.\"io.containerd.cri.v1.images\".registry" : version == 2 ? v2 : "plugins.cri.registry"
		line[++count] = "\n" marker "\n[" name "]\n  " setting
	}
	print "edit"
	for (i = 1; i <= count; i++) print line[i]
}'

# Makes the CRI plugin (the kubelet's way to containerd) read $CERTS_D. ctr and nerdctl take
# --hosts-dir instead. Sets CONFIG_CHANGED.
cri_config_path() {
	cc_marker="$MARKER: containerd's CRI plugin reads hoard's mirror from $CERTS_D/<registry>/hosts.toml"
	cc_out=$(awk -v dir="$CERTS_D" -v marker="$cc_marker" -v sq="'" "$CRI_CONFIG_AWK" "$(existing "$CONFIG")") ||
		fail "cannot read $ROOT$CONFIG"
	if ! edit_config "$CONFIG" "$cc_out"; then
		warn "$ROOT$CONFIG has ${cc_out#conflict }, which containerd does not combine with config_path: left alone. Move those settings to $CERTS_D/<host>/hosts.toml and run this again; until then the CRI plugin (the kubelet) does not use hoard's mirror"
	fi
	CONFIG_CHANGED=$PF_CHANGED
}

main() {
	parse_args "$@"
	prepare
	for cm_registry in $REGISTRIES; do
		cm_dir=$CERTS_D/$(registry_name "$cm_registry")
		if [ "$MIRROR_TLS" = minted ]; then
			put_file "$cm_dir/hoard-ca.pem" 644 "$CA_PEM"
		fi
		put_file "$cm_dir/hosts.toml" 644 "$(hosts_toml "$cm_dir" "https://$cm_registry")" config
	done
	if [ -n "$REGISTRIES" ]; then
		cri_config_path
	fi
	if [ "$CONFIG_CHANGED" = 1 ]; then
		restart_service containerd
	elif [ "$CHANGES" != 0 ]; then
		say "note: containerd reads $CERTS_D/<registry>/hosts.toml at each pull: no restart needed"
	fi
	finish
}

main "$@"
