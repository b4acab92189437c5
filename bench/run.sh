#!/usr/bin/env bash
# hoard benchmark (issue 5): hoard side by side with nginx, the Docker Distribution registry and the
# Distribution registry in proxy (pull-through) mode, all started here on 127.0.0.1, in one run;
# hoard through its proxy port and through its registry-mirror port (issue 14).
#
#   bench/run.sh            full run: 1 GiB blob, 16 x 100 MiB, 4 GiB blob, 5 runs per case
#   bench/run.sh --quick    smaller sizes, 3 runs (a fast check that everything works)
#   options: --runs N  --no-big  --big  --keep (keep the work folder)  --workdir DIR
#            --no-small (leave out bench/small.sh's small-request rows)  --small-only (only those)
#   --only cold: only the cold rows at this machine's speed (direct, Distribution proxy, hoard h1
#   and h2); the other rows, bench/small.sh and bench/idle.sh are left out, their targets NOT MEASURED
#   BENCH_REGISTRY_LOG=info: the registries log every request (in the work folder's logs/)
#   Then bench/idle.sh (10,000 idle connections, issue 25): its targets join the targets block.
#
# The report goes to stdout; progress and errors go to stderr. See docs/benchmarks.md.
set -uo pipefail

MODE=full
RUNS=
BIG=
ONLY=
KEEP=0
BASE=${TMPDIR:-/tmp}
SMALL=1
SMALL_ARGS=() # what bench/small.sh gets of these options
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ;;
        --full) MODE=full ;;
        --runs) RUNS=$2; SMALL_ARGS+=(--runs "$2"); shift ;;
        --big) BIG=1 ;;
        --no-big) BIG=0 ;;
        --no-small) SMALL=0 ;;
        --small-only) SMALL=only ;;
        --keep) KEEP=1; SMALL_ARGS+=(--keep) ;;
        --workdir) BASE=$2; SMALL_ARGS+=(--workdir "$2"); shift ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --only) ONLY=$2; SMALL=0; shift; [ "$ONLY" = cold ] || { echo "--only takes: cold" >&2; exit 2; } ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
SMALL_ARGS+=("--$MODE")
# Small requests (issue 25): many clients, small objects, hits only; a script of its own.
[ "$SMALL" = only ] && exec "$(dirname "$0")/small.sh" "${SMALL_ARGS[@]}"

MIB=1048576
if [ "$MODE" = full ]; then
    MAIN_MIB=1024; PAR_MIB=100; BIG_MIB=4096; HS_NAMES=50; : "${RUNS:=5}"; : "${BIG:=1}"
else
    MAIN_MIB=256; PAR_MIB=16; BIG_MIB=1024; HS_NAMES=10; : "${RUNS:=3}"; : "${BIG:=0}"
fi
PAR_N=16
MAIN_BYTES=$((MAIN_MIB * MIB)); PAR_BYTES=$((PAR_MIB * MIB)); BIG_BYTES=$((BIG_MIB * MIB))
REPO=bench
HOST=registry.bench
# TLS 1.3 everywhere, one cipher for every client-side fetch (AES-128-GCM: what Go clients such as
# dockerd and containerd pick on AES-NI hardware), so no server wins by a cheaper cipher.
CURL_TLS=(--tlsv1.3 --tls13-ciphers TLS_AES_128_GCM_SHA256)
CURL_MAX=900
TICK=$(getconf CLK_TCK)

# Shared with bench/fleet.sh and bench/memory.sh: logging, processes and clean-up, ports, the PKI, blobs, the
# Distribution registry, the rate-limited link.
. "$(dirname "$0")/lib.sh"

MAIN_L=$(size_label $MAIN_MIB); PAR_L="${PAR_N}x$(size_label $PAR_MIB | tr -d ' ')"; BIG_L=$(size_label $BIG_MIB)


# ---------------------------------------------------------------------------------------------
# Tools

if ! need nginx || [ ! -f /usr/lib/nginx/modules/ngx_stream_module.so ]; then
    need apt-get || die "nginx (with its stream module) is missing and there is no apt-get"
    log "installing nginx-light and libnginx-mod-stream"
    pkgs=(nginx-light libnginx-mod-stream)
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >&2; then
        apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >&2 \
            || die "cannot install ${pkgs[*]}"
    fi
fi
for t in docker-registry curl openssl ss awk sha256sum cargo git; do
    need "$t" || die "missing tool: $t (Debian: docker-registry curl openssl iproute2 gawk coreutils)"
done

# What the hash and the cipher of a fill cost on this CPU, as the bound of a cold fill (see the
# report's "bounds"): openssl speed, one core, 16 KiB blocks -> CPU s/GiB.
cipher_cost() { # openssl-evp-name -> CPU s/GiB
    openssl speed -seconds 1 -bytes 16384 -evp "$1" 2>/dev/null |
        awk -v n="$1" 'tolower($1) == n { sub(/k$/, "", $2); if ($2 > 0) printf "%.2f", 1073741824 / ($2 * 1000) }'
}
log "measuring SHA-256 and AES-128-GCM on this CPU (openssl speed)"
SHA_COST=$(cipher_cost sha256); AES_COST=$(cipher_cost aes-128-gcm)

build_hoard

make_work bench
# main and par: the files, the upstream, the Distribution proxy, a cold fill, five hoard caches.
need_kib=$(( ((MAIN_MIB + PAR_MIB) * 10 + (BIG ? BIG_MIB : 0) * 6) * 1024 ))
free_kib=$(df -Pk "$WORK" | awk 'NR==2 {print $4}')
[ "$free_kib" -gt "$need_kib" ] || die "need about $((need_kib / 1048576)) GiB free in $BASE, have $((free_kib / 1048576)) GiB"

# ---------------------------------------------------------------------------------------------
# PKI: a test CA and one server certificate for every server here (nginx and both registries).

HS_LIST=""
for i in $(seq "$HS_NAMES"); do HS_LIST="$HS_LIST h$i.bench"; done
NAMES="$HOST w.bench$HS_LIST"
make_pki "$NAMES"

# ---------------------------------------------------------------------------------------------
# The blobs: random files, served as they are by nginx and pushed into the upstream registry.

log "writing random blobs: $MAIN_L, $(size_label $PAR_MIB)$( [ "$BIG" = 1 ] && echo ", $BIG_L")"
make_blob main $MAIN_MIB
make_blob par $PAR_MIB
[ "$BIG" = 1 ] && make_blob big $BIG_MIB

# ---------------------------------------------------------------------------------------------
# Servers

UP_PORT=$(free_port)
UP_STORAGE="$WORK/upstream-storage"




NGINX_TUNNEL_PORT=$(free_port)
LINK_TUNNEL_PORT=$(free_port) # a relay in front of that nginx, for the tunnel over a link
HOARD_CA_DIR="$WORK/hoard-ca"
# The TLS mirror's name: under *.bench, as the CA every hoard here shares was made (by the first
# one) for intercept.hosts only, and a new CA signs nothing else. A DNS name, not 127.0.0.1: a
# leaf for an IP address carries it as its CN too, which OpenSSL (curl) checks against the DNS
# constraint and refuses.
MIRROR_NAME=mirror.bench
start_hoard() { # name cachedir [upstream port] [plain|tls] -> PID, PORT (and MIRROR_PORT,
                 # ADMIN_PORT with a mirror listener: plain HTTP, or TLS with a leaf from hoard's
                 # CA for MIRROR_NAME)
    local cfg="$WORK/$1.toml" lg="$WORK/logs/$1.log" n resolve up=${3:-$UP_PORT} mirror=${4:-}
    PORT=$(free_port)
    resolve=""
    for n in $NAMES; do resolve="$resolve\"$n\" = \"127.0.0.1:$up\", "; done
    cat >"$cfg" <<EOF
[proxy]
listen = "127.0.0.1:$PORT"
connect_ports = [443, $NGINX_TUNNEL_PORT, $LINK_TUNNEL_PORT]
allow_private_destinations = true
[ca]
dir = "$HOARD_CA_DIR"
[cache]
dir = "$2"
max_size = "50GiB"
min_free = "0"
[intercept]
hosts = ["*.bench"]
[upstream]
extra_ca_files = ["$CA"]
resolve = { ${resolve%, } }
EOF
    if [ -n "$mirror" ]; then
        MIRROR_PORT=$(free_port); ADMIN_PORT=$(free_port)
        printf '[admin]\nlisten = "127.0.0.1:%s"\n[mirror]\nlisten = "127.0.0.1:%s"\n' \
            "$ADMIN_PORT" "$MIRROR_PORT" >>"$cfg"
        [ "$mirror" = tls ] && echo "names = [\"$MIRROR_NAME\"]" >>"$cfg"
    fi
    RUST_LOG=hoard=warn "$HOARD" serve --config "$cfg" >"$lg" 2>&1 &
    PID=$!
    wait_port $PID "$PORT" "$1" "$lg" || die "$1 did not start"
    if [ -n "$mirror" ]; then wait_port $PID "$MIRROR_PORT" "$1 (mirror)" "$lg" || die "$1 did not start"; fi
}

# ---------------------------------------------------------------------------------------------
# Fetching

# fetch <log-name> <expected bytes> <curl args...>: one transfer to /dev/null; sets SPEED (MiB/s)
# or returns 1 with FETCH_ERR.
fetch() {
    local name=$1 want=$2 out rc code size speed err="$WORK/logs/curl-$1.err"
    shift 2
    out=$(curl -sS -o /dev/null --max-time $CURL_MAX "${CURL_TLS[@]}" \
        -w '%{http_code} %{size_download} %{speed_download}' "$@" 2>"$err")
    rc=$?
    read -r code size speed <<<"$out"
    if [ $rc != 0 ] || [ "$code" != 200 ] || [ "$size" != "$want" ]; then
        FETCH_ERR="curl exit $rc, HTTP ${code:-?}, $size of $want bytes: $(tr '\n' ' ' <"$err")"
        return 1
    fi
    SPEED=$(awk -v s="$speed" -v m=$MIB 'BEGIN {printf "%.1f", s / m}')
}

# par_fetch <log-name> <expected bytes each> <curl args...>: PAR_N clients at once; sets SPEED
# to the aggregate (total bytes / wall time), MiB/s.
par_fetch() {
    local name=$1 want=$2 i t0 t1 bad=0 code size pids=()
    shift 2
    t0=$(date +%s%N)
    for i in $(seq $PAR_N); do
        curl -sS -o /dev/null --max-time $CURL_MAX "${CURL_TLS[@]}" -w '%{http_code} %{size_download}' \
            "$@" >"$WORK/logs/par-$name.$i" 2>"$WORK/logs/par-$name.$i.err" &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do wait "${pids[$i]}" || bad=1; done
    t1=$(date +%s%N)
    for i in $(seq $PAR_N); do
        read -r code size <"$WORK/logs/par-$name.$i"
        if [ "$code" != 200 ] || [ "$size" != "$want" ]; then
            bad=1
            FETCH_ERR="client $i: HTTP ${code:-?}, $size of $want bytes: $(tr '\n' ' ' <"$WORK/logs/par-$name.$i.err")"
        fi
    done
    [ $bad = 0 ] || { FETCH_ERR=${FETCH_ERR:-"a client failed"}; return 1; }
    SPEED=$(awk -v b=$((PAR_N * want)) -v ns=$((t1 - t0)) -v m=$MIB 'BEGIN {printf "%.1f", b / m / (ns / 1e9)}')
}

# ---------------------------------------------------------------------------------------------
# Results: per case its speeds, peak RSS (KiB, max over its processes' lives), CPU ticks and
# bytes served while measured.

declare -A VALS RSS TICKS BYTES ERR TITLE UPTICKS CLIENT_MS WALL_MS SERVER_IS_EXTRA
EXTRA_PID= # when set: a second server (the upstream registry, the tunnel's nginx), whose CPU is
           # also counted (UPTICKS) during a transfer; SERVER_IS_EXTRA marks the cases whose
           # server it is (the direct fetches), so that it is not counted twice
ORDER=()
add_case() { ORDER+=("$1"); TITLE[$1]=$2; VALS[$1]=""; RSS[$1]=0; TICKS[$1]=0; BYTES[$1]=0; CLIENT_MS[$1]=0; WALL_MS[$1]=0; }
children_ms() { # -> CHILD_MS: CPU (user + system) of this shell's finished children (the curls)
    times >"$WORK/times.txt"
    CHILD_MS=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%d", t * 1000 }' "$WORK/times.txt")
}
note_rss() { local k; k=$(hwm_kib "$2"); [ "$k" -gt "${RSS[$1]}" ] && RSS[$1]=$k; }
fail_case() {
    ERR[$1]="${ERR[$1]:-$2}"
    log "FAILED $1: $2"
    [ -n "${3:-}" ] && [ -f "$3" ] && { log "last lines of $(basename "$3"):"; tail -n 15 "$3" >&2; }
}

# measure <case> <server pid> <server log> <bytes> <fetcher> <args...>: one measured transfer.
measure() {
    local c=$1 pid=$2 lg=$3 bytes=$4 t0 t1
    shift 4
    [ -n "${ERR[$c]:-}" ] && return 1
    local u0=0 u1=0 c0 c1 w0 w1
    [ -n "$EXTRA_PID" ] && u0=$(cpu_ticks "$EXTRA_PID")
    t0=$(cpu_ticks "$pid")
    children_ms; c0=$CHILD_MS
    w0=$(date +%s%N)
    if "$@"; then
        w1=$(date +%s%N)
        children_ms; c1=$CHILD_MS
        t1=$(cpu_ticks "$pid")
        [ -n "$EXTRA_PID" ] && u1=$(cpu_ticks "$EXTRA_PID")
        CLIENT_MS[$c]=$(( CLIENT_MS[$c] + c1 - c0 ))
        WALL_MS[$c]=$(( WALL_MS[$c] + (w1 - w0) / 1000000 ))
        UPTICKS[$c]=$(( ${UPTICKS[$c]:-0} + u1 - u0 ))
        [ "$EXTRA_PID" = "$pid" ] && SERVER_IS_EXTRA[$c]=1
        VALS[$c]="${VALS[$c]} $SPEED"
        TICKS[$c]=$((TICKS[$c] + t1 - t0))
        BYTES[$c]=$((BYTES[$c] + bytes))
    else
        fail_case "$c" "$FETCH_ERR" "$lg"
        return 1
    fi
}

hs() { # url [curl args] -> HS (ms)
    local out rc u=$1
    shift
    out=$(curl -sS -o /dev/null --max-time 30 "${CURL_TLS[@]}" --http1.1 "$@" \
        -w '%{http_code} %{time_connect} %{time_appconnect}' "$u" 2>"$WORK/logs/curl-hs.err")
    rc=$?
    set -- $out
    if [ $rc != 0 ] || [ "${3:-0}" = "0.000000" ]; then
        HS_ERR="curl exit $rc: $(tr '\n' ' ' <"$WORK/logs/curl-hs.err")"; return 1
    fi
    HS=$(awk -v a="$2" -v b="$3" 'BEGIN {printf "%.3f", (b - a) * 1000}')
}
HS_NEW=""; HS_MINTED=""; HS_DIFF=""; HS_ERR=""
VIA=() # curl args to go through a hoard
via() { VIA=(-x "http://127.0.0.1:$1" --cacert "$HOARD_CA_DIR/ca.crt"); }
blob_url() { echo "https://$1/v2/$REPO/blobs/$2"; }

# ---------------------------------------------------------------------------------------------
START=$(date +%s)

log "upstream registry: pushing the blobs"
start_registry upstream-push "$UP_PORT" "$UP_STORAGE"
UP_PID=$PID
push_blob "$WORK/files/main" "$main_DIGEST"
push_blob "$WORK/files/par" "$par_DIGEST"
[ "$BIG" = 1 ] && push_blob "$WORK/files/big" "$big_DIGEST"
stop_pid $UP_PID
# A fresh upstream process for the measurements (its peak memory is that of serving only).
start_registry upstream "$UP_PORT" "$UP_STORAGE"
UP_PID=$PID
UP_LOG="$WORK/logs/upstream.log"

add_case nginx "nginx TLS, $MAIN_L, http/1.1"
add_case nginx_h2 "nginx TLS, $MAIN_L, h2"
add_case nginx_par "nginx TLS, $PAR_L parallel"
add_case nginx_plain "nginx plain HTTP, $MAIN_L, http/1.1"
add_case direct "Distribution (upstream) direct, $MAIN_L, http/1.1"
add_case direct_h2 "Distribution (upstream) direct, $MAIN_L, h2"
add_case dist_cold "Distribution proxy cold, $MAIN_L"
add_case dist_warm "Distribution proxy warm, $MAIN_L"
add_case dist_par "Distribution proxy warm, $PAR_L parallel"
add_case hit "hoard hit, $MAIN_L, http/1.1"
add_case hit_h2 "hoard hit, $MAIN_L, h2"
# The same hits through the mirror listener (issue 14): plain HTTP, and TLS with hoard's leaf.
add_case mirror "hoard mirror hit, plain HTTP, $MAIN_L, http/1.1"
add_case mirror_tls "hoard mirror hit, TLS, $MAIN_L, http/1.1"
add_case mirror_tls_h2 "hoard mirror hit, TLS, $MAIN_L, h2"
add_case cold "hoard cold (fill), $MAIN_L, http/1.1"
add_case cold_h2 "hoard cold (fill), $MAIN_L, h2"
# Links of a fixed speed in front of the upstream (MiB/s): 1 Gbit/s and 2.5 Gbit/s.
LINKS=(119 238)
declare -A LINK_L=([119]="1 Gbit/s" [238]="2 Gbit/s")
for l in "${LINKS[@]}"; do
    add_case "link${l}_direct" "upstream over a ${LINK_L[$l]} link, direct, $MAIN_L"
    add_case "link${l}_cold" "upstream over a ${LINK_L[$l]} link, hoard cold"
done
add_case par "hoard hit, $PAR_L parallel"
add_case tunnel "hoard CONNECT tunnel to nginx, $MAIN_L"
# The tunnel when the link, not this machine, is the limit: nginx behind a 2 Gbit/s relay.
TUNNEL_LINK=238
add_case link_tunnel_direct "nginx over a ${LINK_L[$TUNNEL_LINK]} link, direct, $MAIN_L"
add_case link_tunnel "nginx over a ${LINK_L[$TUNNEL_LINK]} link, hoard tunnel"
[ "$BIG" = 1 ] && add_case big "hoard hit, $BIG_L, http/1.1"

MAIN_PATH="/v2/$REPO/blobs/$main_DIGEST"
MIRROR_PATH="$MAIN_PATH?ns=$HOST" # containerd's way of naming the registry to a mirror
PAR_PATH="/v2/$REPO/blobs/$par_DIGEST"

# --- Cold: every run on a fresh process with empty storage, interleaved with a direct fetch from
# the upstream (their reference). The last filled storage is kept for the warm cases.
log "cold fills: $RUNS runs each of direct h1 and h2, Distribution proxy, hoard http/1.1, hoard h2"
DIST_KEEP="$WORK/dist-storage"; HOARD_KEEP="$WORK/hoard-cache"
fetch warmup-direct $MAIN_BYTES --http1.1 --cacert "$CA" "https://127.0.0.1:$UP_PORT$MAIN_PATH" \
    || fail_case direct "warm-up: $FETCH_ERR" "$UP_LOG"
EXTRA_PID=$UP_PID
for r in $(seq "$RUNS"); do
    log "  run $r/$RUNS"
    rm -rf "$WORK/dist-cold" "$WORK/hoard-cold"
    measure direct $UP_PID "$UP_LOG" $MAIN_BYTES fetch direct $MAIN_BYTES \
        --http1.1 --cacert "$CA" "https://127.0.0.1:$UP_PORT$MAIN_PATH"
    measure direct_h2 $UP_PID "$UP_LOG" $MAIN_BYTES fetch direct_h2 $MAIN_BYTES \
        --http2 --cacert "$CA" "https://127.0.0.1:$UP_PORT$MAIN_PATH"
    # Distribution proxy
    DP=$(free_port)
    settle
    start_registry dist-cold "$DP" "$WORK/dist-cold" "https://127.0.0.1:$UP_PORT"
    measure dist_cold $PID "$WORK/logs/dist-cold.log" $MAIN_BYTES fetch dist_cold $MAIN_BYTES \
        --http1.1 --cacert "$CA" "https://127.0.0.1:$DP$MAIN_PATH"
    note_rss dist_cold $PID; stop_pid $PID
    if [ "$r" = "$RUNS" ]; then mv "$WORK/dist-cold" "$DIST_KEEP"; fi
    # hoard, http/1.1 and h2
    for c in cold cold_h2; do
        rm -rf "$WORK/hoard-cold"
        settle
        start_hoard "hoard-$c" "$WORK/hoard-cold"; via $PORT
        v=--http1.1; [ $c = cold_h2 ] && v=--http2
        measure $c $PID "$WORK/logs/hoard-$c.log" $MAIN_BYTES fetch $c $MAIN_BYTES $v "${VIA[@]}" \
            "https://$HOST$MAIN_PATH"
        note_rss $c $PID; stop_pid $PID
    done
    if [ "$r" = "$RUNS" ]; then mv "$WORK/hoard-cold" "$HOARD_KEEP"; fi
done

# --- Cold fills from an upstream behind a link of a fixed speed (nginx with limit_rate in front of
# the upstream registry), as pulls are in use: the link, not this machine's CPUs, is the limit,
# and hoard's hashing, writing and sending may not slow the stream. Interleaved with a direct
# fetch over the same link.
[ -n "$ONLY" ] || for l in "${LINKS[@]}"; do # --only cold: not the links
    log "cold fills over a ${LINK_L[$l]} link: $RUNS runs each of direct and hoard"
    LP=$(free_port); start_link "link-$l" "$LP" "$l"; LINK_PID=$PID
    fetch "warmup-link-$l" $MAIN_BYTES --http1.1 --cacert "$CA" "https://127.0.0.1:$LP$MAIN_PATH" \
        || fail_case "link${l}_direct" "warm-up: $FETCH_ERR" "$WORK/link-$l/error.log"
    for r in $(seq "$RUNS"); do
        log "  run $r/$RUNS"
        measure "link${l}_direct" $LINK_PID "$WORK/link-$l/error.log" $MAIN_BYTES fetch "link${l}_direct" \
            $MAIN_BYTES --http1.1 --cacert "$CA" "https://127.0.0.1:$LP$MAIN_PATH"
        rm -rf "$WORK/hoard-link"
        settle
        start_hoard "hoard-link-$l" "$WORK/hoard-link" "$LP"; via $PORT
        measure "link${l}_cold" $PID "$WORK/logs/hoard-link-$l.log" $MAIN_BYTES fetch "link${l}_cold" \
            $MAIN_BYTES --http1.1 "${VIA[@]}" "https://$HOST$MAIN_PATH"
        note_rss "link${l}_cold" $PID; stop_pid $PID
    done
    note_rss "link${l}_direct" $LINK_PID; stop_pid $LINK_PID
done
EXTRA_PID=
rm -rf "$WORK/dist-cold" "$WORK/hoard-cold" "$WORK/hoard-link"
if [ ! -d "$HOARD_KEEP" ]; then mkdir -p "$HOARD_KEEP"; fi
if [ ! -d "$DIST_KEEP" ]; then mkdir -p "$DIST_KEEP"; fi

# --only cold: everything from here to the report is skipped (not indented, to keep the diff small).
if [ -z "$ONLY" ]; then
# --- Preparation (not measured): the parallel blob into both caches (and the main blob if a cold
# run failed), then a copy of hoard's cache for each other hit process (h2, the three mirror ones):
# the mirror rows serve what the proxy port filled.
log "filling the caches for the warm cases"
DP=$(free_port)
start_registry dist-prep "$DP" "$DIST_KEEP" "https://127.0.0.1:$UP_PORT"
for p in "$MAIN_PATH|$MAIN_BYTES" "$PAR_PATH|$PAR_BYTES"; do
    fetch prep-dist "${p#*|}" --http1.1 --cacert "$CA" "https://127.0.0.1:$DP${p%|*}" \
        || log "warning: filling the Distribution proxy: $FETCH_ERR"
done
stop_pid $PID
start_hoard hoard-prep "$HOARD_KEEP"; via $PORT
for p in "$MAIN_PATH|$MAIN_BYTES" "$PAR_PATH|$PAR_BYTES"; do
    fetch prep-hoard "${p#*|}" --http1.1 "${VIA[@]}" "https://$HOST${p%|*}" \
        || log "warning: filling hoard: $FETCH_ERR"
done
stop_pid $PID
MIRROR_CACHES=(mirror mirror-tls mirror-tls-h2)
for d in h2 "${MIRROR_CACHES[@]}"; do rm -rf "$WORK/hoard-cache-$d"; cp -a "$HOARD_KEEP" "$WORK/hoard-cache-$d"; done
BIG_PATH=
if [ "$BIG" = 1 ]; then
    # The big blob in a cache of its own, filled by a process of its own.
    BIG_PATH="/v2/$REPO/blobs/$big_DIGEST"
    start_hoard hoard-big-prep "$WORK/hoard-cache-big"; via $PORT
    fetch prep-big $BIG_BYTES --http1.1 "${VIA[@]}" "https://$HOST$BIG_PATH" \
        || fail_case big "fill: $FETCH_ERR" "$WORK/logs/hoard-big-prep.log"
    stop_pid $PID
fi

# --- Warm single-client cases: all servers up at once, runs interleaved (so background load
# hits every case alike), one unmeasured warm-up transfer each.
log "warm cases: $RUNS interleaved runs"
NP=$(free_port); start_nginx nginx "$NP"; NGINX_PID=$PID
NP2=$(free_port); start_nginx nginx-h2 "$NP2"; NGINX2_PID=$PID
start_nginx nginx-tunnel "$NGINX_TUNNEL_PORT"; NGINXT_PID=$PID
DP=$(free_port); start_registry dist-warm "$DP" "$DIST_KEEP" "https://127.0.0.1:$UP_PORT"; DISTW_PID=$PID
start_hoard hoard-hit "$HOARD_KEEP"; HIT_PID=$PID; HIT_PORT=$PORT
start_hoard hoard-hit-h2 "$WORK/hoard-cache-h2"; HIT2_PID=$PID; HIT2_PORT=$PORT
start_hoard hoard-tunnel "$WORK/hoard-tunnel-cache"; TUN_PID=$PID; TUN_PORT=$PORT
NP3=$(free_port); start_nginx nginx-plain "$NP3" plain; NGINXP_PID=$PID
start_hoard hoard-mirror "$WORK/hoard-cache-mirror" "" plain
MIR_PID=$PID; MIR_PORT=$MIRROR_PORT; MIR_ADMIN=$ADMIN_PORT
start_hoard hoard-mirror-tls "$WORK/hoard-cache-mirror-tls" "" tls
MIRT_PID=$PID; MIRT_PORT=$MIRROR_PORT; MIRT_ADMIN=$ADMIN_PORT
start_hoard hoard-mirror-tls-h2 "$WORK/hoard-cache-mirror-tls-h2" "" tls
MIRT2_PID=$PID; MIRT2_PORT=$MIRROR_PORT; MIRT2_ADMIN=$ADMIN_PORT
WARM=(nginx hit nginx_h2 hit_h2 dist_warm tunnel nginx_plain mirror mirror_tls mirror_tls_h2)
if [ "$BIG" = 1 ]; then
    start_hoard hoard-big "$WORK/hoard-cache-big"; BIG_PID=$PID; BIG_PORT=$PORT
    WARM+=(big)
fi

run_warm() { # case -> one transfer (measured unless $1 is prefixed by "-")
    local c=${1#-} bytes=$MAIN_BYTES
    local a=()
    case $c in
        nginx) a=($NGINX_PID "$WORK/nginx/error.log" --http1.1 --cacert "$CA" "https://127.0.0.1:$NP/main") ;;
        nginx_h2) a=($NGINX2_PID "$WORK/nginx-h2/error.log" --http2 --cacert "$CA" "https://127.0.0.1:$NP2/main") ;;
        direct) a=($UP_PID "$UP_LOG" --http1.1 --cacert "$CA" "https://127.0.0.1:$UP_PORT$MAIN_PATH") ;;
        dist_warm) a=($DISTW_PID "$WORK/logs/dist-warm.log" --http1.1 --cacert "$CA" "https://127.0.0.1:$DP$MAIN_PATH") ;;
        hit) via $HIT_PORT; a=($HIT_PID "$WORK/logs/hoard-hit.log" --http1.1 "${VIA[@]}" "https://$HOST$MAIN_PATH") ;;
        hit_h2) via $HIT2_PORT; a=($HIT2_PID "$WORK/logs/hoard-hit-h2.log" --http2 "${VIA[@]}" "https://$HOST$MAIN_PATH") ;;
        tunnel) via $TUN_PORT; EXTRA_PID=$NGINXT_PID; a=($TUN_PID "$WORK/logs/hoard-tunnel.log" --http1.1 "${VIA[@]}" --cacert "$CA" "https://127.0.0.1:$NGINX_TUNNEL_PORT/main") ;;
        nginx_plain) a=($NGINXP_PID "$WORK/nginx-plain/error.log" --http1.1 "http://127.0.0.1:$NP3/main") ;;
        mirror) a=($MIR_PID "$WORK/logs/hoard-mirror.log" --http1.1 "http://127.0.0.1:$MIR_PORT$MIRROR_PATH") ;;
        mirror_tls) a=($MIRT_PID "$WORK/logs/hoard-mirror-tls.log" --http1.1 --cacert "$HOARD_CA_DIR/ca.crt" \
            --resolve "$MIRROR_NAME:$MIRT_PORT:127.0.0.1" "https://$MIRROR_NAME:$MIRT_PORT$MIRROR_PATH") ;;
        mirror_tls_h2) a=($MIRT2_PID "$WORK/logs/hoard-mirror-tls-h2.log" --http2 --cacert "$HOARD_CA_DIR/ca.crt" \
            --resolve "$MIRROR_NAME:$MIRT2_PORT:127.0.0.1" "https://$MIRROR_NAME:$MIRT2_PORT$MIRROR_PATH") ;;
        big) via $BIG_PORT; bytes=$BIG_BYTES; a=($BIG_PID "$WORK/logs/hoard-big.log" --http1.1 "${VIA[@]}" "https://$HOST$BIG_PATH") ;;
    esac
    if [ "$c" != "$1" ]; then
        fetch "warmup-$c" $bytes "${a[@]:2}" || fail_case "$c" "warm-up: $FETCH_ERR" "${a[1]}"
    else
        measure "$c" "${a[0]}" "${a[1]}" $bytes fetch "$c" $bytes "${a[@]:2}"
    fi
    EXTRA_PID=
}
for c in "${WARM[@]}"; do [ "$c" = big ] || run_warm "-$c"; done
for r in $(seq "$RUNS"); do
    log "  run $r/$RUNS"
    for c in "${WARM[@]}"; do run_warm "$c"; done
done
# A mirror row counts only if the mirror served it from the cache: no request through it went
# upstream (hoard's metrics, from its admin listener).
mirror_hits_only() { # case admin-port log
    local m bad
    m=$(curl -sS --max-time 10 "http://127.0.0.1:$2/metrics" 2>&1) || { fail_case "$1" "metrics: $m" "$3"; return; }
    bad=$(grep '^hoard_requests_total{' <<<"$m" | grep 'via="mirror"' | grep -v 'cache="HIT"')
    if [ -n "$bad" ] || ! grep -q '^hoard_requests_total{cache="HIT",via="mirror"}' <<<"$m"; then
        fail_case "$1" "not every request through the mirror was a hit: $(grep '^hoard_requests_total{' <<<"$m" | tr '\n' ' ')" "$3"
    fi
}
mirror_hits_only mirror $MIR_ADMIN "$WORK/logs/hoard-mirror.log"
mirror_hits_only mirror_tls $MIRT_ADMIN "$WORK/logs/hoard-mirror-tls.log"
mirror_hits_only mirror_tls_h2 $MIRT2_ADMIN "$WORK/logs/hoard-mirror-tls-h2.log"
# For scale: TLS handshakes with nginx, direct and through hoard's tunnel.
HS_NGINX=""; HS_NGINX_TUN=""
for i in $(seq "$HS_NAMES"); do
    hs "https://127.0.0.1:$NGINX_TUNNEL_PORT/" --cacert "$CA" && HS_NGINX="$HS_NGINX $HS"
    via $TUN_PORT
    hs "https://127.0.0.1:$NGINX_TUNNEL_PORT/" "${VIA[@]}" --cacert "$CA" && HS_NGINX_TUN="$HS_NGINX_TUN $HS"
done
# The tunnel over a link: nginx behind a relay, fetched through the relay directly and through
# hoard's tunnel, interleaved.
log "tunnel over a ${LINK_L[$TUNNEL_LINK]} link: $RUNS runs each of direct and hoard"
start_link link-tunnel "$LINK_TUNNEL_PORT" "$TUNNEL_LINK" "$NGINX_TUNNEL_PORT"; LT_PID=$PID
LT_URL="https://127.0.0.1:$LINK_TUNNEL_PORT/main"
fetch warmup-link-tunnel $MAIN_BYTES --http1.1 --cacert "$CA" "$LT_URL" \
    || fail_case link_tunnel_direct "warm-up: $FETCH_ERR" "$WORK/link-tunnel/error.log"
EXTRA_PID=$NGINXT_PID
for r in $(seq "$RUNS"); do
    log "  run $r/$RUNS"
    measure link_tunnel_direct $LT_PID "$WORK/link-tunnel/error.log" $MAIN_BYTES \
        fetch link_tunnel_direct $MAIN_BYTES --http1.1 --cacert "$CA" "$LT_URL"
    via $TUN_PORT
    measure link_tunnel $TUN_PID "$WORK/logs/hoard-tunnel.log" $MAIN_BYTES \
        fetch link_tunnel $MAIN_BYTES --http1.1 "${VIA[@]}" --cacert "$CA" "$LT_URL"
done
EXTRA_PID=
note_rss link_tunnel_direct $LT_PID; stop_pid $LT_PID
note_rss nginx $NGINX_PID; note_rss nginx_h2 $NGINX2_PID
note_rss dist_warm $DISTW_PID; note_rss hit $HIT_PID; note_rss hit_h2 $HIT2_PID; note_rss tunnel $TUN_PID
note_rss link_tunnel $TUN_PID
note_rss nginx_plain $NGINXP_PID; note_rss mirror $MIR_PID; note_rss mirror_tls $MIRT_PID
note_rss mirror_tls_h2 $MIRT2_PID
for p in $NGINX_PID $NGINX2_PID $NGINXT_PID $DISTW_PID $HIT_PID $HIT2_PID $TUN_PID \
    $NGINXP_PID $MIR_PID $MIRT_PID $MIRT2_PID; do stop_pid $p; done
if [ "$BIG" = 1 ]; then note_rss big $BIG_PID; stop_pid $BIG_PID; fi
rm -rf "$WORK/hoard-cache-h2" "$WORK/hoard-cache-big"
for d in "${MIRROR_CACHES[@]}"; do rm -rf "$WORK/hoard-cache-$d"; done

# --- Parallel hits, interleaved.
log "parallel cases, $PAR_L: $RUNS interleaved runs"
NP=$(free_port); start_nginx nginx-par "$NP"; NGINX_PID=$PID
DP=$(free_port); start_registry dist-par "$DP" "$DIST_KEEP" "https://127.0.0.1:$UP_PORT"; DISTW_PID=$PID
start_hoard hoard-par "$HOARD_KEEP"; PAR_PID=$PID; via $PORT
PAR_VIA=("${VIA[@]}")
fetch warmup-nginx-par $PAR_BYTES --http1.1 --cacert "$CA" "https://127.0.0.1:$NP/par" || fail_case nginx_par "warm-up: $FETCH_ERR"
fetch warmup-dist-par $PAR_BYTES --http1.1 --cacert "$CA" "https://127.0.0.1:$DP$PAR_PATH" || fail_case dist_par "warm-up: $FETCH_ERR" "$WORK/logs/dist-par.log"
fetch warmup-par $PAR_BYTES --http1.1 "${PAR_VIA[@]}" "https://$HOST$PAR_PATH" || fail_case par "warm-up: $FETCH_ERR" "$WORK/logs/hoard-par.log"
for r in $(seq "$RUNS"); do
    log "  run $r/$RUNS"
    measure nginx_par $NGINX_PID "$WORK/nginx-par/error.log" $((PAR_N * PAR_BYTES)) par_fetch nginx_par $PAR_BYTES \
        --http1.1 --cacert "$CA" "https://127.0.0.1:$NP/par"
    measure par $PAR_PID "$WORK/logs/hoard-par.log" $((PAR_N * PAR_BYTES)) par_fetch par $PAR_BYTES \
        --http1.1 "${PAR_VIA[@]}" "https://$HOST$PAR_PATH"
    measure dist_par $DISTW_PID "$WORK/logs/dist-par.log" $((PAR_N * PAR_BYTES)) par_fetch dist_par $PAR_BYTES \
        --http1.1 --cacert "$CA" "https://127.0.0.1:$DP$PAR_PATH"
done
note_rss nginx_par $NGINX_PID; note_rss dist_par $DISTW_PID; note_rss par $PAR_PID
for p in $NGINX_PID $DISTW_PID $PAR_PID; do stop_pid $p; done

# --- First TLS handshake to a name hoard has not minted a certificate for, then the same name
# again (minted): CONNECT + TLS handshake time as curl sees it (time_appconnect - time_connect).
log "TLS handshakes through hoard: $HS_NAMES new names, each then again"
start_hoard hoard-handshake "$WORK/hoard-hs-cache"; HS_PID=$PID; via $PORT
HS_ERR=""
hs https://w.bench/v2/ "${VIA[@]}" && hs https://w.bench/v2/ "${VIA[@]}" # warm-up: the process's first connection
for n in $HS_LIST; do
    hs "https://$n/v2/" "${VIA[@]}" && HS_NEW="$HS_NEW $HS" || break
    hs "https://$n/v2/" "${VIA[@]}" && HS_MINTED="$HS_MINTED $HS" || break
    HS_DIFF="$HS_DIFF $(awk -v a="${HS_NEW##* }" -v b="$HS" 'BEGIN {printf "%.3f", a - b}')"
done
[ -n "$HS_ERR" ] && { log "FAILED handshake: $HS_ERR"; tail -n 15 "$WORK/logs/hoard-handshake.log" >&2; }
stop_pid $HS_PID
fi # --only

note_rss direct $UP_PID; RSS[direct_h2]=${RSS[direct]}
stop_pid $UP_PID
ELAPSED=$(( $(date +%s) - START ))

# --- Small requests (bench/small.sh): its report follows this one's.
SMALL_OUT=
if [ "$SMALL" = 1 ]; then
    log "small requests: bench/small.sh ${SMALL_ARGS[*]}"
    SMALL_OUT="$WORK/small.txt"
    "$(dirname "$0")/small.sh" "${SMALL_ARGS[@]}" >"$SMALL_OUT" || log "bench/small.sh failed (exit $?)"
fi

# ---------------------------------------------------------------------------------------------
# Report

stats() { # values... -> "median min max"
    printf '%s\n' "$@" | sort -g | awk -v p="${PREC:-1}" '{v[NR] = $1} END {
        if (NR == 0) { print "- - -"; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        f = "%." p "f"; printf f " " f " " f "\n", m, v[1], v[NR] }'
}
median() { set -- $(stats "$@"); echo "$1"; }
med() { [ -n "${ERR[$1]:-}" ] && { echo -; return; }; median ${VALS[$1]}; }
all_ticks() { # case -> CPU ticks of its server and of the second server, if another one fed it
    if [ -n "${SERVER_IS_EXTRA[$1]:-}" ]; then echo "${TICKS[$1]}"; else echo $((TICKS[$1] + ${UPTICKS[$1]:-0})); fi
}
per_gib() { # case kind -> CPU s/GiB of its server (server), the second server (upstream), its
             # client(s) (client), or all of them (all)
    local t
    case $2 in
        server) t=$(awk -v t="${TICKS[$1]}" -v hz=$TICK 'BEGIN {print t / hz}') ;;
        upstream) t=$(awk -v t="${UPTICKS[$1]:-0}" -v hz=$TICK 'BEGIN {print t / hz}') ;;
        client) t=$(awk -v c="${CLIENT_MS[$1]}" 'BEGIN {print c / 1000}') ;;
        all) t=$(awk -v t="$(all_ticks $1)" -v c="${CLIENT_MS[$1]}" -v hz=$TICK 'BEGIN {print t / hz + c / 1000}') ;;
    esac
    awk -v t="$t" -v b="${BYTES[$1]:-0}" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", t / (b / 1073741824) }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
declare -A REF=([nginx_h2]=nginx [direct_h2]=direct [dist_cold]=direct [dist_warm]=nginx [dist_par]=nginx_par
    [hit]=nginx [hit_h2]=hit [cold]=direct [cold_h2]=direct [par]=nginx_par [tunnel]=nginx [big]=hit
    [mirror]=nginx_plain [mirror_tls]=nginx [mirror_tls_h2]=nginx_h2)
declare -A SHORTUP=([direct]="curl h1" [direct_h2]="curl h2" [dist_cold]="Distribution proxy" [cold]="hoard h1" [cold_h2]="hoard h2")
declare -A SHORT=([nginx]="nginx h1" [nginx_h2]="nginx h2" [nginx_par]="nginx par" [direct]=direct
    [hit]="hoard hit h1" [nginx_par]="nginx par" [nginx_plain]="nginx plain")
for l in "${LINKS[@]}"; do REF[link${l}_cold]=link${l}_direct; SHORT[link${l}_direct]="link direct"; done
REF[link_tunnel]=link_tunnel_direct; SHORT[link_tunnel_direct]="link direct"

desc_machine() {
    echo "machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)," \
        "$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, kernel $(uname -r)," \
        "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "versions: $(nginx -v 2>&1 | sed 's/^nginx version: //'), docker-registry $(docker-registry --version 2>/dev/null | awk '{print $NF}')," \
        "$(curl --version | head -1 | awk '{print "curl " $2 ", " $5}'), hoard $(hoard_rev)" \
        "($(rustc --version 2>/dev/null | awk '{print $1, $2}'))"
    echo "mode: $MODE, $RUNS runs per case, TLS 1.3 TLS_AES_128_GCM_SHA256 on every client connection, $(date -u +%Y-%m-%dT%H:%MZ), took ${ELAPSED}s"
    echo "free page reporting: $PAGE_REPORTING_NOTE"
    echo "this CPU (openssl speed, one core): SHA-256 ${SHA_COST:-?} CPU s/GiB, AES-128-GCM ${AES_COST:-?} CPU s/GiB"
}

echo "# hoard benchmark"
echo
desc_machine
echo
fmt='%-50s %8s %15s %18s %8s %9s %9s %5s\n'
printf "$fmt" case "MiB/s" "min-max" "ratio (vs)" "peak MiB" "CPU s/GiB" "client" "cores"
printf "$fmt" "$(printf '%.0s-' $(seq 50))" -------- --------------- ------------------ -------- --------- --------- -----
for c in "${ORDER[@]}"; do
    [ -n "$ONLY" ] && [ "${BYTES[$c]}" = 0 ] && [ -z "${ERR[$c]:-}" ] && continue
    if [ -n "${ERR[$c]:-}" ] && [ -z "${VALS[$c]// /}" ]; then
        printf "$fmt" "${TITLE[$c]}" FAILED - - - - - -
        continue
    fi
    set -- $(stats ${VALS[$c]})
    m=$1; range="$2-$3"
    [ -n "${ERR[$c]:-}" ] && m="$m!"
    rat=reference
    if [ -n "${REF[$c]:-}" ]; then r=${REF[$c]}; rat="$(ratio "$(med $c)" "$(med $r)")x ${SHORT[$r]:-$r}"; fi
    rss=$(awk -v k="${RSS[$c]}" 'BEGIN {printf "%.1f", k / 1024}')
    cpu=$(per_gib $c server)
    client=$(per_gib $c client)
    cores=$(awk -v s="$(all_ticks $c)" -v c="${CLIENT_MS[$c]}" -v w="${WALL_MS[$c]}" -v hz=$TICK \
        'BEGIN { if (w == 0) print "-"; else printf "%.2f", (s / hz + c / 1000) / (w / 1000) }')
    printf "$fmt" "${TITLE[$c]}" "$m" "$range" "$rat" "$rss" "$cpu" "$client" "$cores"
done
echo
echo "peak MiB: VmHWM of the server's processes (nginx: master + workers summed; cold rows: the largest"
echo "of the fresh processes). CPU s/GiB: utime+stime of the server's processes during the measured"
echo "transfers / GiB served. client: the same for the curl client(s). cores: CPU seconds of every"
echo "process taking part (client, server, and the upstream registry or the tunnel's nginx) per second"
echo "of transfer, out of $(nproc) CPUs. Parallel rows: $PAR_N curl clients at once, total bytes / wall time."
echo "Cold rows: a fresh process with empty storage per run, interleaved run by run with the direct row."
echo "Warm rows (and, apart, the parallel rows): one process each, all up at once, one unmeasured warm-up"
echo "transfer each (not the $BIG_L row: its fill just wrote it), then interleaved run by run."
echo "Mirror rows: GET /v2/$REPO/blobs/<digest>?ns=$HOST on hoard's mirror listener, one hoard"
echo "each on a copy of the cache the proxy port filled (every request a hit, checked in its metrics);"
echo "plain HTTP against nginx plain HTTP, TLS (a leaf from hoard's CA for $MIRROR_NAME) against nginx TLS."
up=""
for c in direct direct_h2 dist_cold cold cold_h2; do
    [ "${BYTES[$c]}" -gt 0 ] && up="$up, ${SHORTUP[$c]} $(per_gib $c upstream)"
done
[ -n "$up" ] && echo "Upstream registry CPU s/GiB while it fed:${up#,}."
echo
if [ -n "$HS_NEW" ]; then
    set -- $(PREC=2 stats $HS_NEW); hn=$1; hnr="$2-$3"
    set -- $(PREC=2 stats $HS_MINTED); hm=$1; hmr="$2-$3"
    echo "TLS handshake through hoard (CONNECT + handshake, curl time_appconnect - time_connect), ms:"
    printf '  %-40s %8s  (%s, %d names)\n' "new name (certificate minted now)" "$hn" "$hnr" $(wc -w <<<"$HS_NEW")
    printf '  %-40s %8s  (%s)\n' "same name again (certificate minted)" "$hm" "$hmr"
    set -- $(PREC=2 stats $HS_DIFF); hd=$1
    printf '  %-40s %8s  (%s)\n' "new - same, per name" "$hd" "$2-$3"
    [ -n "$HS_NGINX" ] && { set -- $(PREC=2 stats $HS_NGINX); printf '  %-40s %8s  (%s)\n' "for scale: nginx direct (no CONNECT)" "$1" "$2-$3"; }
    [ -n "$HS_NGINX_TUN" ] && { set -- $(PREC=2 stats $HS_NGINX_TUN); printf '  %-40s %8s  (%s)\n' "for scale: nginx through hoard's tunnel" "$1" "$2-$3"; }
elif [ -n "$ONLY" ]; then
    echo "TLS handshake through hoard: not measured (--only $ONLY)"
else
    echo "TLS handshake through hoard: FAILED ($HS_ERR)"
fi
echo

# Bounds: the most a row can reach on this machine's CPUs, from the CPU figures of this run. A
# target above its bound cannot be met here, whatever hoard does.
bound() { # label MiB/s-cap reference-case
    local r
    r=$(ratio "$2" "$(med $3)")
    printf '  %-62s %s MiB/s = %sx %s\n' "$1" "$2" "$r" "${SHORT[$3]:-$3}"
}
cap() { # CPU s/GiB [CPUs] -> MiB/s that many CPUs carry at that cost
    awk -v c="$1" -v n="${2:-1}" 'BEGIN { if (c == "-" || c <= 0) print "-"; else printf "%.0f", n * 1024 / c }'
}
NCPU=$(nproc)
echo "bounds on $NCPU CPUs (all CPUs busy and nothing lost to waiting; from this run's CPU s/GiB):"
if [ "${BYTES[hit_h2]}" -gt 0 ]; then
    bound "h2 hit: one curl alone at $(per_gib hit_h2 client) CPU s/GiB" "$(cap "$(per_gib hit_h2 client)")" hit
fi
if [ "${BYTES[direct]}" -gt 0 ] && [ -n "$SHA_COST" ] && [ -n "$AES_COST" ]; then
    floor=$(awk -v d="$(per_gib direct all)" -v s="$SHA_COST" -v a="$AES_COST" 'BEGIN {printf "%.2f", d + s + 2 * a}')
    bound "cold fill: direct $(per_gib direct all) + SHA-256 + AES-GCM twice = $floor" "$(cap "$floor" $NCPU)" direct
fi
if [ "${BYTES[tunnel]}" -gt 0 ] && [ "${BYTES[nginx]}" -gt 0 ]; then
    t=$(awk -v d="$(per_gib nginx all)" -v h="$(per_gib tunnel server)" 'BEGIN {printf "%.2f", d + h}')
    bound "tunnel: nginx direct $(per_gib nginx all) + hoard's splice $(per_gib tunnel server) = $t" "$(cap "$t" $NCPU)" nginx
fi
echo

# Targets of issue 5, from this run (target: bench/lib.sh).
echo "targets (issue 5):"
target "hit h1 >= 1.0x nginx TLS h1" "$(ratio "$(med hit)" "$(med nginx)")" ">=" 1.0
target "hit h2 >= 0.9x hit h1" "$(ratio "$(med hit_h2)" "$(med hit)")" ">=" 0.9
target "16 parallel hits >= 1.0x nginx 16 parallel" "$(ratio "$(med par)" "$(med nginx_par)")" ">=" 1.0
target "cold fill h1 >= 0.9x direct upstream" "$(ratio "$(med cold)" "$(med direct)")" ">=" 0.9
target "cold fill h2 >= 0.9x direct upstream" "$(ratio "$(med cold_h2)" "$(med direct)")" ">=" 0.9
target "tunnel >= 0.97x nginx direct" "$(ratio "$(med tunnel)" "$(med nginx)")" ">=" 0.97
target "tunnel over a ${LINK_L[$TUNNEL_LINK]} link >= 0.97x direct over it" \
    "$(ratio "$(med link_tunnel)" "$(med link_tunnel_direct)")" ">=" 0.97
for l in "${LINKS[@]}"; do
    target "cold fill over a ${LINK_L[$l]} link >= 0.9x direct over it" \
        "$(ratio "$(med link${l}_cold)" "$(med link${l}_direct)")" ">=" 0.9
done
maxrss=0
for c in hit hit_h2 mirror mirror_tls mirror_tls_h2 cold cold_h2 par tunnel link_tunnel big \
    $(printf 'link%s_cold ' "${LINKS[@]}"); do
    [ -n "${RSS[$c]:-}" ] && [ "${RSS[$c]}" -gt $maxrss ] && maxrss=${RSS[$c]}
done
target "hoard peak memory (all cases) <= 64 MiB" "$(awk -v k=$maxrss 'BEGIN {printf "%.1f", k / 1024}')" "<=" 64
if [ "$BIG" = 1 ] && [ "${RSS[big]:-0}" -gt 0 ] && [ "${RSS[hit]:-0}" -gt 0 ]; then
    target "peak memory $BIG_L hit - $MAIN_L hit <= 4 MiB" \
        "$(awk -v a="${RSS[big]}" -v b="${RSS[hit]}" 'BEGIN {printf "%.1f", (a - b) / 1024}')" "<=" 4
else
    target "peak memory $BIG_L hit - $MAIN_L hit <= 4 MiB" - "<=" 4
fi
if [ -n "$HS_NEW" ]; then
    target "first handshake - minted handshake <= 2 ms (median per name)" "$hd" "<=" 2
else
    target "first handshake - minted handshake <= 2 ms (median per name)" - "<=" 2
fi
target "hoard hit h1 / Distribution proxy warm > 1" "$(ratio "$(med hit)" "$(med dist_warm)")" ">=" 1.0
target "hoard cold h1 / Distribution proxy cold > 1" "$(ratio "$(med cold)" "$(med dist_cold)")" ">=" 1.0
target "hoard parallel / Distribution proxy parallel > 1" "$(ratio "$(med par)" "$(med dist_par)")" ">=" 1.0
target "cold fill CPU s/GiB <= 1.5" "$(per_gib cold server)" "<=" 1.5
# Issue 25, a million entries: cargo bench --bench store_startup (--quick: 100,000 entries only);
# its target lines here, its report below.
STORE_REPORT=
if [ -n "${HOARD_BIN:-}" ]; then
    log "store bench left out: it builds the checkout's store, not HOARD_BIN's"
elif [ -z "$ONLY" ]; then
    log "store at 100,000 and 1,000,000 entries (cargo bench --bench store_startup)"
    STORE_REPORT=$(cd "$REPO_DIR" && HOARD_BENCH_DIR=$WORK cargo bench -q --bench store_startup -- \
        $([ "$MODE" = quick ] && echo --quick) 2>&1) || STORE_REPORT+=$'\nstore_startup failed'
fi
sed -n '/^targets:$/,$p' <<<"$STORE_REPORT" | grep '^  ' ||
    for t in "store open warm 1M <= 2 s" "store memory per entry <= 200 B" "eviction 1M / eviction 100k <= 2x"; do
        target "$t" - "<=" 0
    done
# Thousands of clients (issue 25): bench/idle.sh, a run of its own; its targets join this block.
IDLE_ARGS=(--runs "$RUNS" --workdir "$BASE"); [ "$MODE" = quick ] && IDLE_ARGS+=(--quick)
[ -z "$ONLY" ] && log "thousands of clients: bench/idle.sh ${IDLE_ARGS[*]}"
if [ -z "$ONLY" ] && IDLE_OUT=$("$(dirname "$0")/idle.sh" "${IDLE_ARGS[@]}"); then
    sed -n '/^targets/,$p' <<<"$IDLE_OUT" | tail -n +2
else
    IDLE_OUT="bench/idle.sh: not run (--only) or failed (its log is above on stderr)"
    target "hits with 10k idle >= 0.9x without" - ">=" 0.9
    target "memory per idle connection <= 16 KiB" - "<=" 16
fi
for c in "${ORDER[@]}"; do
    [ -n "${ERR[$c]:-}" ] && echo "error in '${TITLE[$c]}': ${ERR[$c]}"
done
[ -n "$STORE_REPORT" ] &&
    printf '\nstore at 100,000 and 1,000,000 entries (cargo bench --bench store_startup):\n%s\n' "${STORE_REPORT%%$'\n'targets:*}"
if [ -n "$SMALL_OUT" ]; then echo; cat "$SMALL_OUT"; fi
echo
sed '/^targets/,$d' <<<"$IDLE_OUT"
exit 0
