#!/usr/bin/env bash
# Thousands of clients (issue 25, item 4): 16 clients pulling hits from hoard's plain mirror
# listener with and without a crowd of 10,000 idle keep-alive connections, interleaved run by run
# in one run, and hoard's resident memory per idle connection. Two kinds of crowd, every round a
# fresh hoard process on the same warm cache (bench/idle_clients.py):
#   mirror  plain HTTP/1.1 keep-alive connections to the mirror listener, one HEAD each, then idle
#   tunnel  CONNECT tunnels to the intercepted registry, TLS up, one HEAD each, then idle
#
#   bench/idle.sh            64 MiB blob, each of the 16 clients pulls it 4 times, 5 runs per case
#   bench/idle.sh --quick    16 MiB blob, 2 pulls per client, 3 runs (the crowd stays 10,000)
#   options: --runs N  --idle N (connections, default 10000)  --keep  --workdir DIR
#
# The report (ending in a targets block) goes to stdout, progress to stderr. bench/run.sh runs it
# at the end of its targets block. See docs/benchmarks.md, "Thousands of clients".
set -uo pipefail

MODE=full
RUNS=
IDLE=10000
KEEP=0
BASE=${TMPDIR:-/tmp}
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ;;
        --full) MODE=full ;;
        --runs) RUNS=$2; shift ;;
        --idle) IDLE=$2; shift ;;
        --keep) KEEP=1 ;;
        --workdir) BASE=$2; shift ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

MIB=1048576
if [ "$MODE" = full ]; then
    BLOB_MIB=64; PULLS=4; : "${RUNS:=5}"
else
    BLOB_MIB=16; PULLS=2; : "${RUNS:=3}"
fi
CLIENTS=16
ADDRS=40 # source addresses of the crowd: 127.0.0.10 on; hoard admits 256 per address by default
REPO=bench
HOST=registry.bench

. "$(dirname "$0")/lib.sh"

need_all docker-registry curl openssl ss awk sha256sum cargo python3
# The crowd's sockets (and hoard's, as its child) count against the open-files limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
[ "$(ulimit -n)" -ge $((IDLE + 1000)) ] ||
    die "open files limit $(ulimit -n) (hard $(ulimit -Hn)) is below $((IDLE + 1000)); raise it (ulimit -Hn)"
[ $(((IDLE + ADDRS - 1) / ADDRS)) -le 256 ] ||
    die "$IDLE connections over $ADDRS addresses exceed hoard's 256 per address"
CLIENT_PY="$(dirname "$0")/idle_clients.py"

build_hoard
make_work idle
make_pki "$HOST"
log "writing a random blob of $BLOB_MIB MiB and pushing it to the registry"
make_blob blob $BLOB_MIB
UP_PORT=$(free_port)
start_registry upstream "$UP_PORT" "$WORK/upstream-storage"
UP_PID=$PID
push_blob "$WORK/files/blob" "$blob_DIGEST"
BLOB_PATH="/v2/$REPO/blobs/$blob_DIGEST"

start_hoard() { # name -> PID, PORT (proxy), MPORT (plain mirror); the cache in WORK/hoard-cache
    local cfg="$WORK/$1.toml" lg="$WORK/logs/$1.log"
    PORT=$(free_port); MPORT=$(free_port)
    # hyper closes a keep-alive connection waiting for its next request head after
    # header_read_timeout (default 30 s), before proxy.idle_timeout (300 s): long enough here for
    # the slowest crowd to stay open.
    hoard_toml "$cfg" "$PORT" "$(free_port)" "$(printf '[mirror]\nlisten = "127.0.0.1:%s"' "$MPORT")" \
        "$(printf 'max_connections = 20000\nheader_read_timeout = "300s"')"
    RUST_LOG=hoard=warn "$HOARD" serve --config "$cfg" >"$lg" 2>&1 &
    PID=$!
    wait_port $PID "$PORT" "$1" "$lg" || die "$1 did not start"
    wait_port $PID "$MPORT" "$1 (mirror)" "$lg" || die "$1 did not start"
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# hits <name>: CLIENTS curls at once on the mirror from 127.0.0.1, each pulling the blob PULLS
# times over one keep-alive connection -> SPEED (total MiB / wall s), or dies.
hits() {
    local name=$1 i k t0 t1 bad=0 pids=() args=() url="http://127.0.0.1:$MPORT$BLOB_PATH?ns=$HOST"
    for k in $(seq $PULLS); do args+=(-o /dev/null "$url"); done
    t0=$(date +%s%N)
    for i in $(seq $CLIENTS); do
        curl -sS --max-time 300 -w '%{http_code} %{size_download}\n' "${args[@]}" \
            >"$WORK/logs/$name.$i" 2>"$WORK/logs/$name.$i.err" &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do wait "${pids[$i]}" || bad=1; done
    t1=$(date +%s%N)
    for i in $(seq $CLIENTS); do
        [ "$(grep -c "^200 $((BLOB_MIB * MIB))\$" "$WORK/logs/$name.$i")" = $PULLS ] && continue
        bad=1; log "$name: client $i: $(tr '\n' ' ' <"$WORK/logs/$name.$i"{,.err})"
    done
    [ $bad = 0 ] || die "$name: a client failed"
    SPEED=$(awk -v b=$((CLIENTS * PULLS * BLOB_MIB)) -v ns=$((t1 - t0)) 'BEGIN {printf "%.0f", b / (ns / 1e9)}')
}

established() { ss -Htn state established "( sport = :$PORT or sport = :$MPORT )" | wc -l; }

# crowd <kind> <name>: opens IDLE idle connections -> CROWD_PID, CROWD_LOG, CROWD_SECS (to open)
crowd() {
    local i t0 args=(--kind "$1" --path "$BLOB_PATH" --count "$IDLE" --addrs $ADDRS)
    if [ "$1" = tunnel ]; then
        args+=(--server "127.0.0.1:$PORT" --host "$HOST" --cafile "$WORK/hoard-ca/ca.crt")
    else
        args=(--kind mirror --path "$BLOB_PATH?ns=$HOST" --count "$IDLE" --addrs $ADDRS --server "127.0.0.1:$MPORT")
    fi
    CROWD_LOG="$WORK/logs/$2.log"
    : >"$CROWD_LOG"
    t0=$(date +%s%N)
    python3 "$CLIENT_PY" "${args[@]}" >"$CROWD_LOG" 2>&1 &
    CROWD_PID=$!
    for i in $(seq 3000); do
        grep -q '^ready' "$CROWD_LOG" && break
        kill -0 $CROWD_PID 2>/dev/null || die "$2: the crowd failed: $(tail -n 3 "$CROWD_LOG")"
        sleep 0.1
    done
    grep -q "^ready $IDLE\$" "$CROWD_LOG" || die "$2: the crowd did not open in 300 s"
    CROWD_SECS=$(awk -v ns=$(($(date +%s%N) - t0)) 'BEGIN {printf "%.1f", ns / 1e9}')
}
crowd_open() { # -> how many of the crowd hoard has not closed
    local n
    n=$(grep -c '^open' "$CROWD_LOG")
    kill -USR1 $CROWD_PID
    for _ in $(seq 100); do [ "$(grep -c '^open' "$CROWD_LOG")" -gt "$n" ] && break; sleep 0.1; done
    grep '^open' "$CROWD_LOG" | tail -n 1 | awk '{print $2}'
}
crowd_gone() { # stops the crowd; waits until hoard has closed its side
    stop_pid $CROWD_PID
    for _ in $(seq 300); do [ "$(established)" -lt 50 ] && return; sleep 0.1; done
    log "hoard still holds $(established) connections 30 s after the crowd left"
}

declare -A VALS
# One kind of crowd, RUNS rounds, each on a fresh hoard process on the warm cache (a crowd's
# memory, once freed, stays with the allocator: the next crowd's figure would be off): a warm-up,
# the RSS before the crowd, hits without, the crowd opens, RSS, hits with, the crowd still open?
run_kind() {
    local kind=$1 r rss0 rss1 n t0
    log "$kind: $RUNS rounds"
    for r in $(seq "$RUNS"); do
        start_hoard "hoard-$kind-$r"; HPID=$PID
        hits "warmup-$kind-$r" # the first one fills the cache
        sleep 1
        rss0=$(rss_kib $HPID)
        hits "$kind-without-$r"; add_value "${kind}_without" "$SPEED"
        t0=$(date +%s)
        crowd "$kind" "crowd-$kind-$r"
        sleep 1
        rss1=$(rss_kib $HPID)
        add_value "${kind}_open_s" "$CROWD_SECS"
        add_value "${kind}_kib" "$(awk -v a=$rss1 -v b=$rss0 -v n=$IDLE 'BEGIN {printf "%.1f", (a - b) / n}')"
        hits "$kind-with-$r"; add_value "${kind}_with" "$SPEED"
        n=$(crowd_open)
        add_value "${kind}_held_s" $(($(date +%s) - t0))
        [ "$n" = "$IDLE" ] || die "$kind: hoard closed $((IDLE - ${n:-0})) of the idle connections during the round"
        crowd_gone
        stop_pid $HPID
    done
}

START=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
run_kind mirror
run_kind tunnel
stop_pid $UP_PID
ELAPSED=$(( $(date +%s) - START ))

med() { median_of "${VALS[$1]:-}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
echo "# hoard with thousands of idle clients"
echo
echo "machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)," \
    "load average at start: $LOAD0, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "hoard $(hoard_rev), mode: $MODE, $RUNS runs, $(date -u +%Y-%m-%dT%H:%MZ), took ${ELAPSED}s"
echo "hits: $CLIENTS curls on the plain mirror, each pulling the $BLOB_MIB MiB blob $PULLS times over one connection"
echo "crowd: $IDLE idle connections from $ADDRS source addresses (127.0.0.10-), one HEAD hit each"
echo
fmt='%-44s %8s %13s %9s %9s %8s\n'
printf "$fmt" crowd "hits MiB/s" "min-max" "ratio" "KiB/conn" "open s"
for kind in mirror tunnel; do
    printf "$fmt" "none ($kind rounds)" "$(med ${kind}_without)" "$(spread_of "${VALS[${kind}_without]}")" reference - -
    printf "$fmt" "$IDLE idle $kind connections" "$(med ${kind}_with)" "$(spread_of "${VALS[${kind}_with]}")" \
        "$(ratio "$(med ${kind}_with)" "$(med ${kind}_without)")x" "$(med ${kind}_kib)" "$(med ${kind}_open_s)"
done
echo
echo "KiB/conn: (hoard's VmRSS with the crowd open - VmRSS before it, after a warm-up) / $IDLE, median of"
echo "the rounds (${VALS[mirror_kib]# } | ${VALS[tunnel_kib]# }). Every round checks that all $IDLE are still open"
echo "after its hits (held for ${VALS[mirror_held_s]# } | ${VALS[tunnel_held_s]# } s; proxy.idle_timeout and"
echo "header_read_timeout are 300 s here; with the default header_read_timeout idle connections close after 30 s)."
echo
# The targets: the worse of the two kinds.
worst_ratio=$(printf '%s\n' "$(ratio "$(med mirror_with)" "$(med mirror_without)")" \
    "$(ratio "$(med tunnel_with)" "$(med tunnel_without)")" | sort -g | head -n 1)
worst_kib=$(printf '%s\n' "$(med mirror_kib)" "$(med tunnel_kib)" | sort -g | tail -n 1)
echo "targets (issue 25, thousands of clients; the worse of the two crowds):"
target "hits with 10k idle >= 0.9x without" "$worst_ratio" ">=" 0.9
target "memory per idle connection <= 16 KiB" "$worst_kib" "<=" 16
exit 0
