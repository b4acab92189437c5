#!/usr/bin/env bash
# Upstream shaping (upstream.max_rate): FILLS cold blobs of FILL_MIB each pulled at once through
# hoard with max_rate = RATE, beside the time the rate implies (their bytes at that rate), and a
# hit of HOT_MIB pulled meanwhile (hits are never paced). The release build, the Distribution
# registry over TLS as the upstream, curl through hoard's proxy port (CONNECT, intercepted).
#
#   bench/shaping.sh                4 x 8 MiB at 40Mbit, a 16 MiB hit
#   options: --rate 40Mbit  --fills N  --fill-mib N  --hot-mib N  --keep  --workdir DIR
#
# The report goes to stdout; progress and errors go to stderr.
set -uo pipefail

RATE=40Mbit
FILLS=4
FILL_MIB=8
HOT_MIB=16
KEEP=0
BASE=${TMPDIR:-/tmp}
# name value ...: the options, each with its value (--keep alone); the usage is lines 2-10.
option() {
    case "$1" in
        --rate) RATE=$2 ;;
        --fills) FILLS=$2 ;;
        --fill-mib) FILL_MIB=$2 ;;
        --hot-mib) HOT_MIB=$2 ;;
        --workdir) BASE=$2 ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
}
for arg in "$@"; do [ "$arg" = --keep ] && KEEP=1; done
set -- $(printf '%s\n' "$@" | grep -vx -- --keep)
while [ $# -gt 0 ]; do option "$1" "${2:-}"; shift; [ $# -gt 0 ] && shift; done

MIB=1048576
REPO=bench
HOST=registry.bench

. "$(dirname "$0")/lib.sh"

need_all docker-registry curl openssl ss awk sha256sum cargo

# The rate in bits per second, as hoard reads it (decimal units).
case "$RATE" in
    *kbit) BITS=$((${RATE%kbit} * 1000)) ;;
    *Mbit) BITS=$((${RATE%Mbit} * 1000000)) ;;
    *Gbit) BITS=$((${RATE%Gbit} * 1000000000)) ;;
    *) die "--rate: like 40Mbit" ;;
esac

build_hoard

make_work shaping
make_pki "$HOST"

UP_PORT=$(free_port)
start_registry upstream "$UP_PORT" "$WORK/upstream-storage"

log "pushing $FILLS blobs of $FILL_MIB MiB and one of $HOT_MIB MiB"
for i in $(seq "$FILLS"); do
    make_blob "cold$i" "$FILL_MIB"
    v="cold${i}_DIGEST"
    push_blob "$WORK/files/cold$i" "${!v}"
done
make_blob hot "$HOT_MIB"
push_blob "$WORK/files/hot" "$hot_DIGEST"

PROXY=$(free_port); ADMIN=$(free_port)
hoard_toml "$WORK/hoard.toml" "$PROXY" "$ADMIN" "max_rate = \"$RATE\""
RUST_LOG=hoard=warn "$HOARD" serve --config "$WORK/hoard.toml" >"$WORK/logs/hoard.log" 2>&1 &
HOARD_PID=$!
wait_port $HOARD_PID "$PROXY" hoard "$WORK/logs/hoard.log" || die "hoard did not start"

get() { # digest out -> "seconds bytes/s" on stdout
    curl -sS -x "http://127.0.0.1:$PROXY" --cacert "$WORK/hoard-ca/ca.crt" -o "$2" \
        -w '%{time_total} %{speed_download}\n' "https://$HOST/v2/$REPO/blobs/$1"
}
check() { # file digest
    [ "sha256:$(sha256sum "$1" | awk '{print $1}')" = "$2" ] || die "$1 does not match $2"
}

log "warming the hot blob (paced like any fill)"
get "$hot_DIGEST" "$WORK/hot-warm" >/dev/null || die "warming failed"
check "$WORK/hot-warm" "$hot_DIGEST"

log "$FILLS cold fills at once, a hit after 1 s"
START=$(date +%s.%N)
pids=()
for i in $(seq "$FILLS"); do
    v="cold${i}_DIGEST"
    get "${!v}" "$WORK/cold$i.out" >"$WORK/logs/cold$i.time" &
    pids+=($!)
done
sleep 1
HIT=$(get "$hot_DIGEST" "$WORK/hot.out") || die "the hit failed"
HIT_END=$(date +%s.%N)
for p in "${pids[@]}"; do wait "$p" || die "a cold fill failed"; done
END=$(date +%s.%N)
check "$WORK/hot.out" "$hot_DIGEST"
for i in $(seq "$FILLS"); do v="cold${i}_DIGEST"; check "$WORK/cold$i.out" "${!v}"; done
THROTTLED=$(curl -sS "http://127.0.0.1:$ADMIN/metrics" |
    awk '/^hoard_upstream_throttled_seconds_total/ {s += $2} END {print s + 0}')

echo "hoard $(git -C "$REPO_DIR" rev-parse --short HEAD), release build; $(nproc) cores; upstream.max_rate = \"$RATE\""
awk -v n="$FILLS" -v mib="$FILL_MIB" -v bits="$BITS" -v s="$START" -v e="$END" -v he="$HIT_END" \
    -v hit="$HIT" -v hot="$HOT_MIB" -v thr="$THROTTLED" 'BEGIN {
    split(hit, h, " ")
    implied = n * mib * 1048576 * 8 / bits
    printf "%d cold fills of %d MiB at once:   %6.2f s measured, %6.2f s implied by the rate (%+.1f%%)\n",
        n, mib, e - s, implied, (e - s - implied) / implied * 100
    printf "a hit of %d MiB meanwhile:        %6.3f s, %8.1f MiB/s (done %.2f s after the fills began)\n",
        hot, h[1], h[2] / 1048576, he - s
    printf "hoard_upstream_throttled_seconds_total: %.2f\n", thr
}'
for i in $(seq "$FILLS"); do
    printf 'fill %d: %s s\n' "$i" "$(awk '{print $1}' "$WORK/logs/cold$i.time")"
done
stop_pid "$HOARD_PID"
