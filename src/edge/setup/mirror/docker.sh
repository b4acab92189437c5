
# ---- docker: dockerd's registry-mirrors in /etc/docker/daemon.json. dockerd asks a mirror for
# Docker Hub images only (hoard sends requests that name no registry to mirror.default_registry);
# other registries are pulled directly. ----

DAEMON_JSON=/etc/docker/daemon.json
DAEMON_JSON_CHANGED=0

# Reads daemon.json and prints "ok" when registry-mirrors has $url already, "error WHY" when the
# file is not a JSON object with registry-mirrors a list of strings, or "edit" and the new file:
# $url first in registry-mirrors, the key added when missing. Every other byte stays.
DAEMON_JSON_AWK='
function fail(why) {
	print "error " why
	exit
}
{ text = text $0 "\n" }
END {
	entry = "\"" url "\""
	if (text ~ /^[ \t\r\n]*$/) {
		printf "edit\n{\n  \"%s\": [%s]\n}\n", name, entry
		exit
	}
	n = length(text)
	for (i = 1; i <= n; i++) {
		c = substr(text, i, 1)
		if (c == "\"") {
			j = i + 1
			s = ""
			while (j <= n) {
				d = substr(text, j, 1)
				if (d == "\\") { s = s d substr(text, j + 1, 1); j += 2; continue }
				if (d == "\"") break
				s = s d
				j++
			}
			if (j > n) fail("a string that does not end")
			if (depth == 1 && expecting_key) {
				if (s == name && found) fail(name " twice")
				key = s
				expecting_key = 0
				keys++
			} else if (depth == 1 && key == name) {
				fail(name " that is not a list")
			} else if (in_list && depth == 2) {
				sub(/\/+$/, "", s)
				if (s == url) have = 1
				count++
			}
			i = j
			continue
		}
		if (c == "{" || c == "[") {
			if (depth == 0 && open) fail("more than one JSON value")
			if (in_list) fail(name " holding more than strings")
			stack[++depth] = c
			if (depth == 1) {
				if (c != "{") fail("no JSON object")
				open = i
				expecting_key = 1
			} else if (depth == 2 && key == name) {
				if (c != "[") fail(name " that is not a list")
				in_list = 1
				found = 1
				list_open = i
			}
			continue
		}
		if (c == "}" || c == "]") {
			if (depth == 0 || (c == "}") != (stack[depth] == "{")) fail("brackets that do not match")
			if (depth == 2) in_list = 0
			depth--
			continue
		}
		if (c ~ /[ \t\r\n]/) continue
		if (depth == 0) fail("more than one JSON value")
		if (depth == 1 && c == ",") { expecting_key = 1; continue }
		if (depth == 1 && c == ":") continue
		if (depth == 1 && key == name) fail(name " that is not a list")
		if (in_list && depth == 2 && c != ",") fail(name " holding more than strings")
	}
	if (depth != 0) fail("brackets that do not match")
	if (have) { print "ok"; exit }
	if (found) {
		out = substr(text, 1, list_open) entry (count ? ", " : "") substr(text, list_open + 1)
	} else if (keys) {
		out = substr(text, 1, open) "\n  \"" name "\": [" entry "]," substr(text, open + 1)
	} else {
		rest = substr(text, open + 1)
		sub(/^[ \t\r\n]*/, "", rest)
		out = substr(text, 1, open) "\n  \"" name "\": [" entry "]\n" rest
	}
	printf "edit\n%s", out
}'

# registry-mirrors in daemon.json has the mirror, with everything else in the file kept. Sets
# DAEMON_JSON_CHANGED.
daemon_json() {
	dj_out=$(awk -v name=registry-mirrors -v url="$MIRROR_URL" "$DAEMON_JSON_AWK" "$(existing "$DAEMON_JSON")") ||
		fail "cannot read $ROOT$DAEMON_JSON"
	if ! edit_config "$DAEMON_JSON" "$dj_out"; then
		fail "$ROOT$DAEMON_JSON has ${dj_out#error }: left alone; fix it by hand, then run this again"
	fi
	DAEMON_JSON_CHANGED=$PF_CHANGED
}

# dockerd applies registry-mirrors on SIGHUP (systemctl reload), so running containers keep
# running.
reload_dockerd() {
	if [ "$DAEMON_JSON_CHANGED" = 0 ]; then
		return 0
	fi
	if [ -n "$ROOT" ]; then
		say "skipped    systemctl reload docker (--root)"
	elif ! have_systemd; then
		say "note: systemd is not running here: send dockerd SIGHUP (or restart it) to apply"
	elif ! systemctl cat docker.service >/dev/null 2>&1; then
		say "note: docker.service is not installed: it uses hoard's mirror once it is"
	else
		say "note: a docker.service without ExecReload restarts instead, which stops running containers unless live-restore is on"
		run systemctl reload-or-restart docker
	fi
}

main() {
	parse_args "$@"
	prepare
	install_mirror_ca /etc/docker/certs.d
	daemon_json
	dm_others=
	for dm_registry in $REGISTRIES; do
		if [ "$dm_registry" != "$DEFAULT_REGISTRY" ]; then
			dm_others="$dm_others $(registry_name "$dm_registry")"
		fi
	done
	if [ "$DEFAULT_REGISTRY" != registry-1.docker.io ]; then
		say "note: hoard's mirror.default_registry is $DEFAULT_REGISTRY: what dockerd pulls from Docker Hub through the mirror comes from there"
	fi
	if [ "$DEFAULT_SERVED" = 0 ]; then
		warn "hoard does not serve $DEFAULT_REGISTRY (add it to intercept.hosts or mirror.registries): the mirror refuses dockerd's requests, and dockerd pulls from Docker Hub directly"
	fi
	if [ -n "$dm_others" ]; then
		say "note: dockerd's registry-mirrors are for Docker Hub only: it pulls$dm_others directly (hoard's proxy mode, /setup/docker, covers every registry)"
	fi
	reload_dockerd
	finish
}

main "$@"
