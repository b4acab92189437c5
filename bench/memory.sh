#!/usr/bin/env bash
# hoard's memory and CPU under pulls, for the Kubernetes resource figures (docs/kubernetes.md).
# The release build with the Kubernetes base's listeners (proxy, mirror, admin), the Distribution
# registry over TLS as the upstream, and skopeo pulling images through hoard's proxy port
# (CONNECT, intercepted with a leaf from hoard's CA). After each step the resident set (VmRSS)
# and its peak so far (VmHWM) are read from /proc/<pid>/status, and the CPU time hoard used
# (utime + stime from /proc/<pid>/stat):
#   idle (started, nothing pulled); one cold pull of image A; CLIENTS cold pulls of image B at
#   once; CLIENTS warm pulls of image A at once.
#
#   bench/memory.sh                 3 layers of 8 MiB per image, 8 clients
#   options: --layer-mib N  --clients N  --keep (keep the work folder)  --workdir DIR
#
# The report goes to stdout; progress and errors go to stderr.
set -uo pipefail

LAYER_MIB=8
CLIENTS=8
KEEP=0
BASE=${TMPDIR:-/tmp}
while [ $# -gt 0 ]; do
    case "$1" in
        --layer-mib) LAYER_MIB=$2; shift ;;
        --clients) CLIENTS=$2; shift ;;
        --keep) KEEP=1 ;;
        --workdir) BASE=$2; shift ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

MIB=1048576
LAYERS=3
REPO=bench
HOST=registry.bench

. "$(dirname "$0")/lib.sh"

need_all docker-registry skopeo curl openssl ss awk sha256sum cargo

build_hoard

make_work memory
make_pki "$HOST"

UP_PORT=$(free_port)
start_registry upstream "$UP_PORT" "$WORK/upstream-storage"

# An image: LAYERS random layers of LAYER_MIB, a config, an OCI manifest tagged $1.
push_image() {
    local tag=$1 i v layers="" config
    for i in $(seq $LAYERS); do
        make_blob "$tag$i" "$LAYER_MIB"
        v="$tag${i}_DIGEST"
        push_blob "$WORK/files/$tag$i" "${!v}"
        [ -n "$layers" ] && layers="$layers,"
        layers="$layers{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"${!v}\",\"size\":$((LAYER_MIB * MIB))}"
    done
    config="$WORK/files/$tag.config"
    printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$config"
    local cd cs
    cd="sha256:$(sha256sum "$config" | awk '{print $1}')"
    cs=$(stat -c %s "$config")
    push_blob "$config" "$cd"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[%s]}' \
        "$cd" "$cs" "$layers" >"$WORK/files/$tag.manifest"
    local code
    code=$(curl -sS --cacert "$CA" -o /dev/null -w '%{http_code}' -X PUT \
        -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary "@$WORK/files/$tag.manifest" "https://127.0.0.1:$UP_PORT/v2/$REPO/manifests/$tag") ||
        die "push of manifest $tag failed"
    [ "$code" = 201 ] || die "push of manifest $tag: HTTP $code"
}
log "pushing two images of $LAYERS x $LAYER_MIB MiB"
push_image a
push_image b

PROXY=$(free_port); MIRROR=$(free_port); ADMIN=$(free_port)
hoard_toml "$WORK/hoard.toml" "$PROXY" "$ADMIN"
printf '[mirror]\nlisten = "127.0.0.1:%s"\n' "$MIRROR" >>"$WORK/hoard.toml"
RUST_LOG=hoard=warn "$HOARD" serve --config "$WORK/hoard.toml" >"$WORK/logs/hoard.log" 2>&1 &
HOARD_PID=$!
wait_port $HOARD_PID "$PROXY" hoard "$WORK/logs/hoard.log" || die "hoard did not start"
mkdir -p "$WORK/certs"
cp "$WORK/hoard-ca/ca.crt" "$WORK/certs/ca.crt"

pull() { # tag out
    HTTPS_PROXY="http://127.0.0.1:$PROXY" skopeo --insecure-policy copy -q \
        --src-cert-dir "$WORK/certs" "docker://$HOST/$REPO:$1" "dir:$2" \
        >>"$WORK/logs/skopeo.log" 2>&1
}
status_kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$HOARD_PID/status"; }
ROWS=()
measure() { # step
    local rss hwm cpu
    rss=$(status_kib VmRSS); hwm=$(status_kib VmHWM); cpu=$(cpu_ticks "$HOARD_PID")
    ROWS+=("$(awk -v s="$1" -v r="$rss" -v h="$hwm" -v c="$cpu" -v t="$(getconf CLK_TCK)" \
        'BEGIN { printf "%-30s %9.1f %9.1f %9.2f", s, r / 1024, h / 1024, c / t }')")
}
burst() { # tag name
    local i pids=() bad=0
    for i in $(seq "$CLIENTS"); do
        pull "$1" "$WORK/out-$2-$i" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || bad=1; done
    [ $bad = 0 ] || { tail -n 20 "$WORK/logs/skopeo.log" >&2; die "a pull of $1 failed"; }
}

measure "idle"
log "one cold pull of image a"
pull a "$WORK/out-a" || { tail -n 20 "$WORK/logs/skopeo.log" >&2; die "pull of a failed"; }
measure "1 cold pull"
log "$CLIENTS cold pulls of image b at once"
burst b cold
measure "$CLIENTS cold pulls at once"
log "$CLIENTS warm pulls of image a at once"
burst a warm
measure "$CLIENTS warm pulls at once"
# Every pull got the manifest and every blob (skopeo verifies their digests).
for f in "$WORK"/out-*/; do
    [ "$(ls "$f" | grep -c '^[0-9a-f]\{64\}$')" = $((LAYERS + 1)) ] || die "incomplete pull in $f"
done

echo "hoard $(git -C "$REPO_DIR" rev-parse --short HEAD), release build; images of $LAYERS x $LAYER_MIB MiB; $(nproc) cores"
printf '%-30s %9s %9s %9s\n' "after" "RSS MiB" "peak MiB" "CPU s"
printf '%s\n' "${ROWS[@]}"
stop_pid "$HOARD_PID"
