#!/usr/bin/env bash
# Small requests (issue 25): many keep-alive clients asking for small objects, hits only. A 4 KiB
# blob, a manifest by digest and a tag within its TTL (with an Accept header), each against nginx
# serving the same bytes at the same paths: h1 with wrk on hoard's plain mirror against nginx
# plain HTTP, h2 with h2load on hoard's TLS mirror against nginx TLS; and the same through the
# proxy port (CONNECT + TLS) with benches/small_requests.rs, reported. bench/run.sh runs it too.
#
#   bench/small.sh            full run: 5 runs of 4 s per row, 64 clients
#   bench/small.sh --quick    2 runs of 2 s per row
#   options: --runs N  --seconds S  --clients N  --keep (keep the work folder)  --workdir DIR
#   SMALL_SERVER_CPUS (default 1), SMALL_CLIENT_CPUS (default 0): the CPUs (taskset lists) the
#   servers and the load generators run on; servers get one worker per CPU of theirs
#
# The report goes to stdout; progress and errors go to stderr. See docs/benchmarks.md.
set -uo pipefail

MODE=full
RUNS=
SECS=
CLIENTS=64
KEEP=0
BASE=${TMPDIR:-/tmp}
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ;;
        --full) MODE=full ;;
        --runs) RUNS=$2; shift ;;
        --seconds) SECS=$2; shift ;;
        --clients) CLIENTS=$2; shift ;;
        --keep) KEEP=1 ;;
        --workdir) BASE=$2; shift ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$MODE" = full ]; then : "${RUNS:=5}" "${SECS:=4}"; else : "${RUNS:=2}" "${SECS:=2}"; fi

MIB=1048576
REPO=bench
HOST=registry.bench
MIRROR_NAME=mirror.bench # the TLS mirror's name (mirror.names): hoard's CA signs it
TAG=v1
BLOB_BYTES=4096
MEDIA=application/vnd.oci.image.manifest.v1+json
SERVER_CPUS=${SMALL_SERVER_CPUS:-1}
CLIENT_CPUS=${SMALL_CLIENT_CPUS:-0}

. "$(dirname "$0")/lib.sh"

need_all nginx wrk h2load docker-registry curl openssl ss awk sha256sum taskset cargo
cpu_count() { # taskset list -> CPUs in it
    taskset -c "$1" nproc
}
SERVER_N=$(cpu_count "$SERVER_CPUS") || die "SMALL_SERVER_CPUS=$SERVER_CPUS: not CPUs of this machine"
CLIENT_N=$(cpu_count "$CLIENT_CPUS") || die "SMALL_CLIENT_CPUS=$CLIENT_CPUS: not CPUs of this machine"
ON_SERVER=(taskset -c "$SERVER_CPUS")
ON_CLIENT=(taskset -c "$CLIENT_CPUS")

build_hoard
log "building the proxy-port load client (cargo bench --no-run --bench small_requests)"
LOADER=$(cd "$REPO_DIR" && cargo bench -q --no-run --bench small_requests --message-format=json 2>/dev/null |
    grep '"name":"small_requests"' | grep -o '"executable":"[^"]*"' | tail -n 1 | cut -d'"' -f4)
[ -x "$LOADER" ] || die "cannot build benches/small_requests.rs (cargo bench --no-run --bench small_requests)"

make_work small
make_pki "$HOST"

# ---------------------------------------------------------------------------------------------
# The image: a 4 KiB random layer, a config and an OCI manifest tagged TAG, pushed into a
# Distribution registry; the same bytes laid out for nginx at the registry API's paths.

UP_PORT=$(free_port)
start_registry upstream "$UP_PORT" "$WORK/upstream-storage"
log "pushing a $BLOB_BYTES-byte layer, a config and a manifest tagged $TAG"
f="$WORK/files"
head -c $BLOB_BYTES /dev/urandom >"$f/blob"
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$f/config"
BLOB_DIGEST="sha256:$(sha256sum "$f/blob" | awk '{print $1}')"
CONFIG_DIGEST="sha256:$(sha256sum "$f/config" | awk '{print $1}')"
push_blob "$f/blob" "$BLOB_DIGEST"
push_blob "$f/config" "$CONFIG_DIGEST"
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
    "$MEDIA" "$CONFIG_DIGEST" "$(stat -c %s "$f/config")" "$BLOB_DIGEST" $BLOB_BYTES >"$f/manifest"
MANIFEST_DIGEST="sha256:$(sha256sum "$f/manifest" | awk '{print $1}')"
MANIFEST_BYTES=$(stat -c %s "$f/manifest")
code=$(curl -sS --cacert "$CA" -o /dev/null -w '%{http_code}' -X PUT -H "Content-Type: $MEDIA" \
    --data-binary "@$f/manifest" "https://127.0.0.1:$UP_PORT/v2/$REPO/manifests/$TAG") || die "push of the manifest failed"
[ "$code" = 201 ] || die "push of the manifest: HTTP $code"

WWW="$WORK/www"
mkdir -p "$WWW/v2/$REPO/blobs" "$WWW/v2/$REPO/manifests"
cp "$f/blob" "$WWW/v2/$REPO/blobs/$BLOB_DIGEST"
cp "$f/manifest" "$WWW/v2/$REPO/manifests/$MANIFEST_DIGEST"
cp "$f/manifest" "$WWW/v2/$REPO/manifests/$TAG"
chmod -R a+rX "$WWW"

# What each kind of request asks for: path, expected body size, extra header.
declare -A KPATH=([blob]="/v2/$REPO/blobs/$BLOB_DIGEST" [manifest]="/v2/$REPO/manifests/$MANIFEST_DIGEST"
    [tag]="/v2/$REPO/manifests/$TAG")
declare -A KSIZE=([blob]=$BLOB_BYTES [manifest]=$MANIFEST_BYTES [tag]=$MANIFEST_BYTES)
declare -A KHDR=([blob]="Accept: */*" [manifest]="Accept: $MEDIA" [tag]="Accept: $MEDIA")
declare -A KNAME=([blob]="4 KiB blob hits" [manifest]="manifest-by-digest hits" [tag]="tag hits (within TTL)")
KINDS=(blob manifest tag)
NS="?ns=$HOST" # containerd's way of naming the registry to a mirror

# ---------------------------------------------------------------------------------------------
# Servers, all on SERVER_CPUS with one worker per CPU there: nginx plain and TLS (keep-alive
# connections never closed by a request count: nginx's default closes them after 1000), and two
# hoards, each intercepting HOST with a mirror listener, plain HTTP or TLS for MIRROR_NAME.

NGINX_PRE="${ON_SERVER[*]}" NGINX_WORKERS=$SERVER_N NGINX_ROOT=$WWW \
    NGINX_SERVER="keepalive_requests 100000000; location /v2/$REPO/manifests/ { default_type $MEDIA; }"
export NGINX_PRE NGINX_WORKERS NGINX_ROOT NGINX_SERVER
NP=$(free_port); start_nginx nginx-plain "$NP" plain; NGINXP_PID=$PID
NT=$(free_port); start_nginx nginx-tls "$NT"; NGINXT_PID=$PID

start_small_hoard() { # name plain|tls -> PID, PROXY_PORT, MIRROR_PORT, ADMIN_PORT
    local cfg="$WORK/$1.toml" lg="$WORK/logs/$1.log"
    PROXY_PORT=$(free_port); ADMIN_PORT=$(free_port); MIRROR_PORT=$(free_port)
    hoard_toml "$cfg" "$PROXY_PORT" "$ADMIN_PORT"
    sed -i "s|hoard-cache\"|hoard-cache-$1\"|" "$cfg"
    printf '[mirror]\nlisten = "127.0.0.1:%s"\n' "$MIRROR_PORT" >>"$cfg"
    [ "$2" = tls ] && echo "names = [\"$MIRROR_NAME\"]" >>"$cfg"
    # Tags stay fresh for the whole run: every tag request measured is a hit.
    TOKIO_WORKER_THREADS=$SERVER_N RUST_LOG=hoard=warn "${ON_SERVER[@]}" "$HOARD" serve --config "$cfg" --tag-ttl 6h \
        >"$lg" 2>&1 &
    PID=$!
    wait_port $PID "$PROXY_PORT" "$1" "$lg" || die "$1 did not start"
    wait_port $PID "$MIRROR_PORT" "$1 (mirror)" "$lg" || die "$1 did not start"
}
# The TLS one first: the CA both share is made by the first, constrained to its names.
start_small_hoard hoard-tls tls; HT_PID=$PID; HT_PORT=$MIRROR_PORT; HT_ADMIN=$ADMIN_PORT
start_small_hoard hoard-plain plain; HP_PID=$PID; HP_PORT=$MIRROR_PORT; HP_ADMIN=$ADMIN_PORT
HP_PROXY=$PROXY_PORT
HOARD_CA="$WORK/hoard-ca/ca.crt"

# ---------------------------------------------------------------------------------------------
# Filling and checking: every URL once with curl (200, the exact bytes), which fills each hoard.

check_get() { # what url curl-args...: 200 and the bytes of the file
    local what=$1 url=$2 want out
    shift 2
    case "$url" in */blobs/*) want="$f/blob" ;; *) want="$f/manifest" ;; esac
    out=$(curl -sS --max-time 30 -o "$WORK/got" -w '%{http_code}' "$@" "$url" 2>&1) || die "$what: $out"
    [ "$out" = 200 ] || die "$what: HTTP $out for $url"
    cmp -s "$WORK/got" "$want" || die "$what: $url did not give the bytes of $(basename "$want")"
}
log "filling both hoards through their mirrors and proxy ports; checking every URL"
for k in "${KINDS[@]}"; do
    h=(-H "${KHDR[$k]}")
    check_get "nginx plain" "http://127.0.0.1:$NP${KPATH[$k]}" "${h[@]}"
    check_get "nginx TLS" "https://127.0.0.1:$NT${KPATH[$k]}" "${h[@]}" --cacert "$CA" --http2
    check_get "hoard plain mirror" "http://127.0.0.1:$HP_PORT${KPATH[$k]}$NS" "${h[@]}"
    check_get "hoard TLS mirror" "https://$MIRROR_NAME:$HT_PORT${KPATH[$k]}$NS" "${h[@]}" --http2 \
        --cacert "$HOARD_CA" --resolve "$MIRROR_NAME:$HT_PORT:127.0.0.1"
    check_get "hoard proxy port" "https://$HOST${KPATH[$k]}" "${h[@]}" -x "http://127.0.0.1:$HP_PROXY" --cacert "$HOARD_CA"
done
[ "$(curl -sS -o /dev/null -w '%{content_type}' -H "Accept: $MEDIA" "http://127.0.0.1:$NP${KPATH[tag]}")" = "$MEDIA" ] ||
    die "nginx does not serve the manifest as $MEDIA"

# Requests that were not hits, by listener (hoard's metrics): the measured requests may add none.
not_hits() { # admin-port
    curl -sS --max-time 10 "http://127.0.0.1:$1/metrics" |
        awk '/^hoard_requests_total\{/ && !/cache="HIT"/ {n += $NF} END {printf "%d", n}'
}
HP_MISSES=$(not_hits $HP_ADMIN); HT_MISSES=$(not_hits $HT_ADMIN)

# ---------------------------------------------------------------------------------------------
# Load: each tool's run prints one line "rps p50_ms p99_ms" or fails the row with a reason
# (LOAD_ERR): a non-200 answer, a wrong body size, a socket error.

cat >"$WORK/report.lua" <<'EOF'
-- After the run: requests, bytes, errors and latency percentiles, on one line.
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("RESULT %d %d %.6f %d %d %.3f %.3f\n", summary.requests, summary.bytes,
        summary.duration / 1e6, e.status, e.connect + e.read + e.write + e.timeout,
        latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
EOF
# Bytes of an answer's head beyond its body: what wrk's byte count may add per request.
HEAD_MAX=1024
load_wrk() { # kind url secs
    local out
    out=$("${ON_CLIENT[@]}" wrk -t "$CLIENT_N" -c "$CLIENTS" -d "${3}s" --latency -s "$WORK/report.lua" \
        -H "${KHDR[$1]}" "$2" 2>&1) || { LOAD_ERR="wrk: $(tail -n 3 <<<"$out" | tr '\n' ' ')"; return 1; }
    awk -v size="${KSIZE[$1]}" -v hm=$HEAD_MAX '$1 == "RESULT" {
        if ($2 == 0) { print "ERR no request finished"; exit }
        if ($5 > 0 || $6 > 0) { print "ERR " $5 " answers >= 400, " $6 " socket errors"; exit }
        per = $3 / $2
        if (per < size || per > size + hm) { print "ERR " per " bytes per answer, the body is " size; exit }
        printf "%.0f %.3f %.3f\n", $2 / $4, $7, $8 }' <<<"$out" >"$WORK/load.out"
    load_result "wrk" "$out"
}
load_h2() { # kind url secs [h2load args]
    local kind=$1 url=$2 secs=$3 out
    shift 3
    rm -f "$WORK/h2load.log"
    out=$("${ON_CLIENT[@]}" h2load -t "$CLIENT_N" -c "$CLIENTS" -m 1 -D "$secs" \
        --log-file "$WORK/h2load.log" -H "${KHDR[$kind]}" "$@" "$url" 2>&1) ||
        { LOAD_ERR="h2load: $(tail -n 3 <<<"$out" | tr '\n' ' ')"; return 1; }
    # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
    # status codes: N 2xx, N 3xx, N 4xx, N 5xx;  traffic: ... , N (N) data
    awk -v size="${KSIZE[$kind]}" '
        /^requests:/ { done = $6; ok = $8; bad = $10 + $12 + $14 }
        /^status codes:/ { s2 = $3; sx = $5 + $7 + $9 }
        /^traffic:/ { for (i = 1; i < NF; i++) if ($(i + 1) == "data") { d = $i; gsub(/[()]/, "", d) } }
        /^finished in/ { rps = $4 }
        END {
            if (done == 0) { print "ERR no request finished"; exit }
            if (bad > 0 || sx > 0 || s2 != done) { print "ERR " s2 " of " done " answers 2xx, " bad " failed"; exit }
            if (d < done * size || d > done * size + size) { print "ERR " d " bytes of data for " done " answers of " size; exit }
            printf "%.0f\n", rps }' <<<"$out" >"$WORK/load.out"
    # Latency from the per-request log (start, status, µs): nearest-rank p50 and p99.
    if ! grep -q ERR "$WORK/load.out"; then
        echo "$(cat "$WORK/load.out") $(awk '{print $3}' "$WORK/h2load.log" | sort -n | awk '{v[NR] = $1}
            END { p = int(NR * 0.5 + 0.999999); q = int(NR * 0.99 + 0.999999); if (p < 1) p = 1; if (q < 1) q = 1
                  printf "%.3f %.3f", v[p] / 1000, v[q] / 1000 }')" >"$WORK/load.out"
    fi
    load_result "h2load" "$out"
}
load_proxy() { # kind url secs [--h2]
    local out
    out=$("${ON_CLIENT[@]}" "$LOADER" --proxy "127.0.0.1:$HP_PROXY" --ca "$HOARD_CA" --url "$2" \
        --size "${KSIZE[$1]}" --header "${KHDR[$1]}" --clients "$CLIENTS" --seconds "$3" ${4:-} 2>&1) ||
        { LOAD_ERR="small_requests: $(tail -n 3 <<<"$out" | tr '\n' ' ')"; return 1; }
    sed -n 's/^requests=[0-9]* seconds=[0-9.]* rps=\([0-9]*\) p50_ms=\([0-9.]*\) p99_ms=\([0-9.]*\)$/\1 \2 \3/p' \
        <<<"$out" >"$WORK/load.out"
    load_result small_requests "$out"
}
load_result() { # tool output: RPS P50 P99 from load.out, or LOAD_ERR
    local line
    line=$(cat "$WORK/load.out")
    case "$line" in
        ERR*|"") LOAD_ERR="$1: ${line#ERR }$( [ -z "$line" ] && tail -n 3 <<<"$2" | tr '\n' ' ')"; return 1 ;;
    esac
    read -r RPS P50 P99 <<<"$line"
}

# ---------------------------------------------------------------------------------------------
# Rows: name -> server PID, loader and URL. Per run a row's req/s, p50, p99 and server CPU µs
# per request (utime+stime of its processes over the requests it answered).

declare -A VALS P50S P99S CPUS ERR TITLE RPID RLOAD RURL RREF
ORDER=()
row() { # case title pid loader url [reference-case]
    ORDER+=("$1"); TITLE[$1]=$2; RPID[$1]=$3; RLOAD[$1]=$4; RURL[$1]=$5; RREF[$1]=${6:-}
    VALS[$1]=""; P50S[$1]=""; P99S[$1]=""; CPUS[$1]=""
}
for k in "${KINDS[@]}"; do
    row "h1_nginx_$k" "${KNAME[$k]}, h1, nginx plain" $NGINXP_PID "wrk $k" "http://127.0.0.1:$NP${KPATH[$k]}"
    row "h1_hoard_$k" "${KNAME[$k]}, h1, hoard plain mirror" $HP_PID "wrk $k" \
        "http://127.0.0.1:$HP_PORT${KPATH[$k]}$NS" "h1_nginx_$k"
done
for k in "${KINDS[@]}"; do
    row "h2_nginx_$k" "${KNAME[$k]}, h2, nginx TLS" $NGINXT_PID "h2 $k" "https://127.0.0.1:$NT${KPATH[$k]}"
    row "h2_hoard_$k" "${KNAME[$k]}, h2, hoard TLS mirror" $HT_PID "h2 $k --connect-to=127.0.0.1:$HT_PORT" \
        "https://$MIRROR_NAME:$HT_PORT${KPATH[$k]}$NS" "h2_nginx_$k"
done
for k in "${KINDS[@]}"; do
    for v in h1 h2; do
        row "proxy_${v}_$k" "${KNAME[$k]}, $v, hoard proxy port" $HP_PID "proxy $k $( [ $v = h2 ] && echo --h2)" \
            "https://$HOST${KPATH[$k]}"
    done
done

run_row() { # case secs [measure]
    local c=$1 t0 t1 n tool kind extra
    read -r tool kind extra <<<"${RLOAD[$c]}"
    [ -n "${ERR[$c]:-}" ] && return
    t0=$(cpu_ticks "${RPID[$c]}")
    case $tool in
        wrk) load_wrk "$kind" "${RURL[$c]}" "$2" ;;
        h2) load_h2 "$kind" "${RURL[$c]}" "$2" $extra ;;
        proxy) load_proxy "$kind" "${RURL[$c]}" "$2" $extra ;;
    esac || { ERR[$c]=$LOAD_ERR; log "FAILED ${TITLE[$c]}: $LOAD_ERR"; return; }
    t1=$(cpu_ticks "${RPID[$c]}")
    [ "${3:-}" = measure ] || return
    VALS[$c]="${VALS[$c]} $RPS"; P50S[$c]="${P50S[$c]} $P50"; P99S[$c]="${P99S[$c]} $P99"
    n=$(awk -v r="$RPS" -v s="$2" 'BEGIN {print r * s}')
    CPUS[$c]="${CPUS[$c]} $(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$n" 'BEGIN {printf "%.1f", t / hz / n * 1e6}')"
    log "  ${TITLE[$c]}: $RPS req/s, p50 $P50 ms, p99 $P99 ms"
}

START=$(date +%s)
log "warm-up: every row once for 1 s"
for c in "${ORDER[@]}"; do run_row "$c" 1; done
log "$RUNS interleaved runs of ${SECS}s per row, $CLIENTS clients; servers on CPUs $SERVER_CPUS, load on $CLIENT_CPUS"
for r in $(seq "$RUNS"); do
    log "run $r/$RUNS"
    for c in "${ORDER[@]}"; do run_row "$c" "$SECS" measure; done
done
ELAPSED=$(( $(date +%s) - START ))

# Every measured request to a hoard was a hit.
for p in "hoard-plain $HP_ADMIN $HP_MISSES h1_hoard proxy_h1 proxy_h2" "hoard-tls $HT_ADMIN $HT_MISSES h2_hoard"; do
    read -r name admin before rows <<<"$p"
    now=$(not_hits "$admin")
    if [ "$now" != "$before" ]; then
        for c in "${ORDER[@]}"; do
            for pre in $rows; do
                case $c in "$pre"_*) ERR[$c]="${ERR[$c]:-$name answered $((now - before)) requests that were not hits}" ;; esac
            done
        done
    fi
done

# ---------------------------------------------------------------------------------------------
# Report

median_or_dash() { [ -n "${ERR[$1]:-}" ] && { echo -; return; }; median_of "${VALS[$1]}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }

echo "# hoard small-request benchmark (issue 25)"
echo
echo "machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)," \
    "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "versions: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}'), $(h2load --version | head -1)," \
    "hoard $(hoard_rev)"
echo "mode: $MODE, $RUNS runs of ${SECS}s per row, $CLIENTS keep-alive clients, servers on CPUs $SERVER_CPUS ($SERVER_N workers each)," \
    "load generators on CPUs $CLIENT_CPUS, $(date -u +%Y-%m-%dT%H:%MZ), took ${ELAPSED}s"
echo
fmt='%-52s %8s %15s %12s %8s %8s %9s\n'
printf "$fmt" row "req/s" "min-max" "ratio" "p50 ms" "p99 ms" "CPU us/req"
printf "$fmt" "$(printf '%.0s-' $(seq 52))" -------- --------------- ------------ -------- -------- ---------
for c in "${ORDER[@]}"; do
    if [ -n "${ERR[$c]:-}" ]; then printf "$fmt" "${TITLE[$c]}" FAILED - - - - -; continue; fi
    rat=reference
    [ -n "${RREF[$c]}" ] && rat="$(ratio "$(median_of "${VALS[$c]}")" "$(median_or_dash "${RREF[$c]}")")x nginx"
    case $c in proxy_*) rat=reported ;; esac
    printf "$fmt" "${TITLE[$c]}" "$(median_of "${VALS[$c]}")" "$(spread_of "${VALS[$c]}")" "$rat" \
        "$(median_of "${P50S[$c]}")" "$(median_of "${P99S[$c]}")" "$(median_of "${CPUS[$c]}")"
done
echo
echo "Medians over the runs; p50/p99: the median of each run's percentile (wrk --latency; h2load's"
echo "per-request log; small_requests' own). CPU us/req: utime+stime of the server's processes per"
echo "request answered. Paths: /v2/$REPO/blobs/<digest>, /v2/$REPO/manifests/<digest> and"
echo "/v2/$REPO/manifests/$TAG (Accept: $MEDIA); hoard's mirror adds ?ns=$HOST, nginx serves"
echo "the same bytes from files at those paths. Every answer checked: 200 (wrk: none >= 400 and the"
echo "bytes per answer within $HEAD_MAX of the body; h2load: all 2xx and the data bytes; small_requests:"
echo "each status and body size), and hoard's metrics show no request measured was anything but a hit."
echo
echo "targets (issue 25, small requests):"
target "small blob hits h1 >= 1.0x nginx" "$(ratio "$(median_or_dash h1_hoard_blob)" "$(median_or_dash h1_nginx_blob)")" ">=" 1.0
target "small blob hits h2 >= 1.0x nginx" "$(ratio "$(median_or_dash h2_hoard_blob)" "$(median_or_dash h2_nginx_blob)")" ">=" 1.0
target "tag hits h1 >= 0.8x nginx" "$(ratio "$(median_or_dash h1_hoard_tag)" "$(median_or_dash h1_nginx_tag)")" ">=" 0.8
for c in "${ORDER[@]}"; do
    [ -n "${ERR[$c]:-}" ] && echo "error in '${TITLE[$c]}': ${ERR[$c]}"
done
exit 0
