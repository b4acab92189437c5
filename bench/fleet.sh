#!/usr/bin/env bash
# hoard fleet benchmark (issue 15): a cold burst of 16 clients through one hoard, through three
# hoards in a fleet and through three hoards that are not (the reference: what a fleet saves);
# hit throughput of a node with the shared S3 tier and without, against nginx serving the same
# files; and a node on an empty disk filling from the tier against filling from the registry. The
# upstream is the Distribution registry behind a rate-limited link (nginx stream), the tier is
# SeaweedFS; everything runs here, on 127.0.0.1, in one run.
#
#   bench/fleet.sh            4 layers of 64 MiB, a 100 MiB/s link, 3 runs per case
#   bench/fleet.sh --quick    4 layers of 16 MiB, 1 run (a fast check that everything works)
#   options: --runs N  --link MiB/s  --keep (keep the work folder)  --workdir DIR
#
#   bench/fleet.sh --netns    the fleet across links (issue 25, bench/netns.sh; root): registry and
#                             nodes in network namespaces, 48 clients, 4 layers of 32 MiB (--quick
#                             8 MiB), 3 runs (--quick 1); --uplink Mbit/s (default 200); --parallel N:
#                             layers each client pulls at once (default 3, as dockerd; 1: in turn);
#                             NODE_LOG=hoard=info: the nodes log every request (kept with --keep)
#
# The report goes to stdout; progress and errors go to stderr. See docs/benchmarks.md.
set -uo pipefail

MODE=full
RUNS=
LINK=100
NETNS=0
UPLINK=200
PULL_PARALLEL=
KEEP=0
BASE=${TMPDIR:-/tmp}
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ;;
        --runs) RUNS=$2; shift ;;
        --link) LINK=$2; shift ;;
        --netns) NETNS=1 ;;
        --uplink) UPLINK=$2; shift ;;
        --parallel) PULL_PARALLEL=$2; shift ;;
        --keep) KEEP=1 ;;
        --workdir) BASE=$2; shift ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$PULL_PARALLEL" ] && [ "$NETNS" = 0 ] && { echo "--parallel is for --netns" >&2; exit 2; }
if [ "$NETNS" = 1 ]; then
    . "$(dirname "$0")/netns.sh"
    exit 0
fi

MIB=1048576
LAYERS=4
if [ "$MODE" = full ]; then LAYER_MIB=64; : "${RUNS:=3}"; else LAYER_MIB=16; : "${RUNS:=1}"; fi
CLIENTS=16
REPO=bench
HOST=registry.bench
IMAGE_BYTES=$((LAYERS * LAYER_MIB * MIB))
SEAWEEDFS_VERSION=4.48

. "$(dirname "$0")/lib.sh"

need_all docker-registry nginx curl openssl ss awk sha256sum cargo
[ -f "$STREAM_MODULE" ] || die "nginx's stream module is missing (Debian: libnginx-mod-stream)"
WEED=${HOARD_WEED:-$HOME/.cache/hoard-ci/seaweedfs-$SEAWEEDFS_VERSION/bin/weed}
[ -x "$WEED" ] || die "no SeaweedFS at $WEED (.ci/run installs it; or set HOARD_WEED)"

build_hoard

make_work fleet
make_pki "$HOST"
openssl rand -hex 32 >"$WORK/fleet.secret"

# ---------------------------------------------------------------------------------------------
# The image's layers, pushed into the upstream registry (its access log on: it counts the bytes
# each run fetched).

image_registry "$(free_port)"
LINK_PORT=$(free_port)
start_link link "$LINK_PORT" "$LINK"

# ---------------------------------------------------------------------------------------------
# SeaweedFS, the shared tier: `weed mini` on loopback ports, one access key, its bucket.

S3_KEY=hoardbench
S3_SECRET=$(openssl rand -hex 16)
start_seaweed() {
    local d="$WORK/seaweed" names n args=()
    mkdir -p "$d/data"
    printf '{"identities":[{"name":"hoard","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' \
        "$S3_KEY" "$S3_SECRET" >"$d/s3.json"
    names="master.port master.port.grpc volume.port volume.port.grpc filer.port filer.port.grpc s3.port s3.port.grpc admin.port admin.port.grpc"
    for n in $names; do
        args+=("-$n=$(free_port)")
        [ "$n" = s3.port ] && S3_PORT=${args[-1]#*=}
    done
    (cd "$d" && exec "$WEED" mini "${args[@]}" -dir="$d/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -s3.config="$d/s3.json" -bucket=hoard -s3.localSocket="$d/s3.sock" \
        -filer.localSocket="$d/filer.sock" -master.telemetry=false -s3.port.iceberg=0 \
        -s3.port.lance=0 -webdav=false -admin.ui=false -master.volumeSizeLimitMB=256) \
        >"$WORK/logs/seaweed.log" 2>&1 &
    SEAWEED_PID=$!
    local i
    for i in $(seq 300); do
        kill -0 $SEAWEED_PID 2>/dev/null || { tail -n 30 "$WORK/logs/seaweed.log" >&2; die "SeaweedFS exited"; }
        # Unsigned: refused (403) once the bucket is served.
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$S3_PORT/hoard/")" = 403 ] && return 0
        sleep 0.1
    done
    die "SeaweedFS did not serve its bucket within 30 s"
}
log "starting SeaweedFS $SEAWEEDFS_VERSION"
start_seaweed
printf '%s\n' "$S3_KEY" >"$WORK/s3-key-id"
printf '%s\n' "$S3_SECRET" >"$WORK/s3-secret"

# ---------------------------------------------------------------------------------------------
# hoard nodes: each with a mirror listener (plain HTTP, what the clients use) and an admin port;
# optionally in a fleet (FLEET: the peers' list) and on the tier (S3_PREFIX).

start_node() { # name [self] [s3 prefix] -> PID, MIRROR (port), ADMIN (port)
    local cfg="$WORK/$1.toml" lg="$WORK/logs/$1.log" port
    port=$(free_port); MIRROR=$(free_port); ADMIN=$(free_port)
    node_toml "$cfg" "$WORK/$1-cache" 127.0.0.1 "$port" "$MIRROR" "$ADMIN" "127.0.0.1:$LINK_PORT" "${2:-}"
    if [ -n "${3:-}" ]; then
        printf '[store.s3]\nendpoint = "http://127.0.0.1:%s"\nallow_http = true\nbucket = "hoard"\nprefix = "%s"\naccess_key_id_file = "%s"\nsecret_access_key_file = "%s"\n' \
            "$S3_PORT" "$3" "$WORK/s3-key-id" "$WORK/s3-secret" >>"$cfg"
    fi
    RUST_LOG=hoard=warn "$HOARD" serve --config "$cfg" >"$lg" 2>&1 &
    PID=$!
    wait_port $PID "$MIRROR" "$1" "$lg" || die "$1 did not start"
    if [ -n "${2:-}" ]; then wait_port $PID "${2#*:}" "$1 (peers)" "$lg" || die "$1 did not start"; fi
}

mibs() { awk -v b="$1" -v s="$2" -v m=$MIB 'BEGIN {printf "%.0f", b / m / s}'; }

stop_nodes() { local p; for p in "$@"; do stop_pid "$p"; done; }

# ---------------------------------------------------------------------------------------------
# Cold bursts: every run on new, empty caches; the registry's bytes counted around each.

for run in $(seq "$RUNS"); do
    log "run $run of $RUNS: cold burst through one node"
    sync
    start_node "one-$run"; P1=$PID; M1=$MIRROR
    before=$(upstream_settled)
    pull_burst "one-$run" "$M1"
    stop_nodes $P1
    add_value one_s "$SECS"; add_value one_up $(($(upstream_settled) - before))

    log "run $run of $RUNS: cold burst through three nodes in a fleet"
    sync
    peers=("127.0.0.1:$(free_port)" "127.0.0.1:$(free_port)" "127.0.0.1:$(free_port)")
    FLEET=$(printf '"%s", ' "${peers[@]}"); FLEET=${FLEET%, }
    pids=(); mirrors=()
    for n in 0 1 2; do start_node "fleet-$run-$n" "${peers[$n]}"; pids+=($PID); mirrors+=($MIRROR); done
    before=$(upstream_settled)
    pull_burst "fleet-$run" "${mirrors[@]}"
    stop_nodes "${pids[@]}"
    add_value fleet_s "$SECS"; add_value fleet_up $(($(upstream_settled) - before))

    log "run $run of $RUNS: cold burst through three nodes alone (no fleet)"
    sync
    pids=(); mirrors=()
    for n in 0 1 2; do start_node "alone-$run-$n"; pids+=($PID); mirrors+=($MIRROR); done
    before=$(upstream_settled)
    pull_burst "alone-$run" "${mirrors[@]}"
    stop_nodes "${pids[@]}"
    add_value alone_s "$SECS"; add_value alone_up $(($(upstream_settled) - before))
done

# ---------------------------------------------------------------------------------------------
# Hits: one node warm, without and with the tier, against nginx serving the same files; and a
# node on an empty disk filling from the tier against one filling from the registry.

log "hits: nginx, a node without the tier, a node with it"
NGINX_PORT=$(free_port)
# nginx serves $WORK/files: the layers under the paths the clients ask for.
mkdir -p "$WORK/files/v2/$REPO/blobs"
for i in $(seq $LAYERS); do ln -s "../../../layer$i" "$WORK/files/v2/$REPO/blobs/${DIGESTS[$((i - 1))]}"; done
start_nginx nginx "$NGINX_PORT" plain

start_node plain; PLAIN=$PID; PLAIN_M=$MIRROR
start_node tiered "" fleet; TIERED=$PID; TIERED_M=$MIRROR; TIERED_ADMIN=$ADMIN
pull_burst warm-plain "$PLAIN_M"
pull_burst warm-tiered "$TIERED_M"
# The tiered node uploads what it filled, in the background: wait for the four uploads.
for i in $(seq 600); do
    done_n=$(curl -s "http://127.0.0.1:$TIERED_ADMIN/metrics" |
        awk '/^hoard_tier_writes_total\{result="(created|already_there)"\}/ {s += $2} END {print s + 0}')
    [ "$done_n" -ge $LAYERS ] && break
    sleep 0.1
done
[ "$done_n" -ge $LAYERS ] || die "the tiered node's uploads did not finish"
for run in $(seq "$RUNS"); do
    pull_burst "hit-nginx-$run" "$NGINX_PORT"; add_value hit_nginx "$SECS"
    pull_burst "hit-plain-$run" "$PLAIN_M"; add_value hit_plain "$SECS"
    pull_burst "hit-tiered-$run" "$TIERED_M"; add_value hit_tiered "$SECS"
done
stop_nodes $PLAIN

log "cold fills of a node on an empty disk: from the tier, from the registry"
for run in $(seq "$RUNS"); do
    sync
    start_node "from-tier-$run" "" fleet; P=$PID
    before=$(upstream_settled)
    pull_burst "from-tier-$run" "$MIRROR"
    stop_nodes $P
    add_value tier_fill_s "$SECS"; add_value tier_fill_up $(($(upstream_settled) - before))
    sync
    start_node "from-registry-$run"; P=$PID
    pull_burst "from-registry-$run" "$MIRROR"
    add_value reg_fill_s "$SECS"
    stop_nodes $P
done

# ---------------------------------------------------------------------------------------------
# The report

served=$((CLIENTS * IMAGE_BYTES))
row() { # label seconds-case [upstream-case]
    local s up ratio="-"
    s=$(median_of "${VALS[$2]:-}")
    if [ -n "${3:-}" ]; then
        up=$(median_of "${VALS[$3]:-}")
        ratio=$(awk -v u="$up" -v i=$IMAGE_BYTES 'BEGIN {printf "%.2fx", u / i}')
    fi
    printf '| %-52s | %8s | %9s | %15s |\n' "$1" "$s" "$(mibs $served "$s")" "$ratio"
}
echo "hoard fleet benchmark, $(date -u +%Y-%m-%d), $(nproc) CPUs, hoard $(hoard_rev), SeaweedFS $SEAWEEDFS_VERSION"
echo
echo "Image: $LAYERS layers of $LAYER_MIB MiB ($((IMAGE_BYTES / MIB)) MiB); $CLIENTS clients at once, each"
echo "pulling every layer through a node's mirror port; upstream: the Distribution registry behind a relay"
echo "reading each upstream connection at $LINK MiB/s; medians of $RUNS run(s). Upstream bytes: what the registry"; echo "sent, over the image's size."
echo
printf '| %-52s | %8s | %9s | %15s |\n' case "wall (s)" "MiB/s" "upstream bytes"
printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' $(seq 54))" ---------- ----------- -----------------
row "cold burst, one node" one_s one_up
row "cold burst, three nodes in a fleet" fleet_s fleet_up
row "cold burst, three nodes alone (reference)" alone_s alone_up
row "hits, nginx (reference, plain HTTP, sendfile)" hit_nginx
row "hits, one node without the tier" hit_plain
row "hits, one node with the tier" hit_tiered
row "empty disk, filled from the tier" tier_fill_s tier_fill_up
row "empty disk, filled from the registry (reference)" reg_fill_s
echo
echo "MiB/s: bytes delivered to all clients over the wall time ($CLIENTS x $((IMAGE_BYTES / MIB)) MiB)."
