# Shared by bench/run.sh, bench/fleet.sh and bench/memory.sh (sourced, not run): logging, the servers' processes
# and the clean-up on exit, ports, the test PKI, random blobs, the Distribution registry and
# pushing to it, nginx serving $WORK/files, a rate-limited TCP link, a hoard node's config, cold
# bursts of curl clients, the registry's byte count, medians and the targets' lines. Expects MIB,
# KEEP and (once made) WORK; start_link and push_blob use UP_PORT (and UP_ADDR); make_work BASE.

# No proxy of the caller's between the clients and the servers here; C sorting and number formats.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
export LC_ALL=C
# The checkout the scripts are in: the hoard that build_hoard builds.
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

size_label() { # MiB -> "1 GiB" / "100 MiB"
    if [ $(($1 % 1024)) -eq 0 ]; then echo "$(($1 / 1024)) GiB"; else echo "$1 MiB"; fi
}

# ---------------------------------------------------------------------------------------------
# Processes and clean-up: every server is a background job of this shell; on exit (normal, error,
# Ctrl-C, TERM) all of them are stopped by PID and the work folder is removed.

WORK=
PAGE_REPORTING_WAS= # see "Free page reporting" below
restore_page_reporting() {
    if [ -n "$PAGE_REPORTING_WAS" ]; then echo "$PAGE_REPORTING_WAS" >"$PAGE_REPORTING" 2>/dev/null; fi
    PAGE_REPORTING_WAS=
}
cleanup() {
    local rc=$? pids pid i
    trap - EXIT INT TERM
    restore_page_reporting
    pids=$(jobs -p)
    if [ -n "$pids" ]; then
        kill -TERM $pids 2>/dev/null
        for i in $(seq 50); do
            local alive=0
            for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
            [ $alive = 0 ] && break
            sleep 0.1
        done
        kill -KILL $pids 2>/dev/null
        wait 2>/dev/null
    fi
    if declare -F cleanup_more >/dev/null; then cleanup_more; fi # a script's own (bench/netns.sh)
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    fi
    exit $rc
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT
trap 'log terminated; exit 143' TERM

# Free page reporting (virtio-balloon, on VMs such as this one): memory the guest frees goes back
# to the host a few seconds later, and the first write to it afterwards waits for the host to
# back it again. Writing 1 GiB into the page cache then costs ~2 s of system time instead of 0.3
# on this machine, charged to whichever cold case the kernel happens to hand such pages: noise of
# the VM, not work of the server under test. The run turns it off where it can (root) and puts
# it back on exit; the report says which.
PAGE_REPORTING=/sys/module/page_reporting/parameters/page_reporting_order
PAGE_REPORTING_NOTE="not present"
if [ -e "$PAGE_REPORTING" ]; then
    PAGE_REPORTING_NOTE="on (cannot change it: not root)"
    if [ -w "$PAGE_REPORTING" ] && was=$(cat "$PAGE_REPORTING") && echo 11 >"$PAGE_REPORTING" 2>/dev/null; then
        PAGE_REPORTING_WAS=$was
        PAGE_REPORTING_NOTE="off during the run (page_reporting_order $was -> 11, restored at exit)"
    fi
fi

settle() { # before a cold fill: the previous case's writes on disk, not in the kernel's flusher
    sync
}

stop_pid() { # stop one server we started, by PID
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

tree_pids() { # a PID and its descendants (nginx: master and workers)
    local c
    echo "$1"
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree_pids "$c"; done
}
cpu_ticks() { # utime+stime of a process tree, in clock ticks
    local t=0 p v
    for p in $(tree_pids "$1"); do
        v=$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null) || continue
        t=$((t + ${v:-0}))
    done
    echo $t
}
hwm_kib() { # VmHWM summed over a process tree, KiB
    local t=0 p v
    for p in $(tree_pids "$1"); do
        v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
        t=$((t + ${v:-0}))
    done
    echo $t
}

free_port() { # a loopback port nothing uses, below the kernel's ephemeral range (a port there can
              # be the local end of an outgoing connection by the time a server binds it); picks
              # are remembered in a file, as $(free_port) runs in a subshell
    local p low=10000 high taken="${WORK:-/tmp}/ports-taken"
    high=$(awk '{print $1 - 1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32767)
    while :; do
        p=$((low + RANDOM % (high - low)))
        grep -qx "$p" "$taken" 2>/dev/null && continue
        if ! ss -Htan "sport = :$p" | grep -q .; then echo "$p" >>"$taken"; echo $p; return; fi
    done
}
# The network namespace (`ip netns`) that start_registry, wait_port and push_blob work in: "" for
# this one (bench/netns.sh sets it per call).
BENCH_NS=
in_ns() { # command...: run in BENCH_NS (in the foreground: "in_ns x &" would make a subshell the job)
    if [ -n "$BENCH_NS" ]; then ip netns exec "$BENCH_NS" "$@"; else "$@"; fi
}
UP_ADDR=127.0.0.1 # the upstream registry's address
wait_port() { # pid [addr:]port what logfile (addr: 127.0.0.1 unless given)
    local i a=127.0.0.1 p=$2
    case "$p" in *:*) a=${p%:*}; p=${p##*:} ;; esac
    for i in $(seq 600); do
        if ! kill -0 "$1" 2>/dev/null; then
            log "$3 exited while starting; its log:"; tail -n 30 "$4" >&2; return 1
        fi
        if in_ns bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$a" "$p" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "$3 did not listen on $2 within 60 s; its log:"; tail -n 30 "$4" >&2
    return 1
}

need() { command -v "$1" >/dev/null 2>&1; }
need_all() { # tools...: dies naming the first one missing
    local t
    for t in "$@"; do need "$t" || die "missing tool: $t"; done
}

build_hoard() { # -> HOARD: the release build of the checkout at REPO_DIR, or HOARD_BIN if set
                # (another build to measure, e.g. an earlier commit's for a before/after)
    if [ -n "${HOARD_BIN:-}" ]; then
        HOARD=$HOARD_BIN
        [ -x "$HOARD" ] || die "HOARD_BIN=$HOARD_BIN is not an executable"
        log "measuring $HOARD (HOARD_BIN)"
        return
    fi
    log "building hoard (cargo build --release)"
    (cd "$REPO_DIR" && cargo build --release -q >&2) || die "cargo build --release failed"
    HOARD="$REPO_DIR/target/release/hoard"
    [ -x "$HOARD" ] || die "no $HOARD"
}

hoard_rev() { # which hoard is measured: the checkout's commit, or HOARD_BIN
    if [ -n "${HOARD_BIN:-}" ]; then echo "$HOARD_BIN"; else git -C "$REPO_DIR" describe --always --dirty 2>/dev/null; fi
}

make_work() { # name -> WORK: a new folder under BASE with logs/, files/ and pki/
    mkdir -p "$BASE"
    WORK=$(mktemp -d "$BASE/hoard-$1.XXXXXX") || die "mktemp"
    chmod 755 "$WORK"
    mkdir -p "$WORK/logs" "$WORK/files" "$WORK/pki"
}

make_pki() { # names [addresses] -> $WORK/pki/{ca,server}.{crt,key}, CA: a test CA and one
               # server certificate for localhost, 127.0.0.1, the names and the addresses
    log "making the test CA and server certificate"
    (
        cd "$WORK/pki" || exit 1
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj /CN=hoard-bench-ca -keyout ca.key -out ca.crt \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
            -keyout server.key -out server.csr
        san="DNS:localhost,IP:127.0.0.1"
        for n in $1; do san="$san,DNS:$n"; done
        for n in ${2:-}; do san="$san,IP:$n"; done
        printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
            "$san" >server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
            -extfile server.ext -out server.crt
    ) >"$WORK/logs/pki.log" 2>&1 || { cat "$WORK/logs/pki.log" >&2; die "openssl failed"; }
    CA="$WORK/pki/ca.crt"
    chmod 644 "$WORK"/pki/*
}

make_blob() { # name MiB -> sets the global <name>_DIGEST
    local f="$WORK/files/$1" d
    head -c $(($2 * MIB)) /dev/urandom >"$f" || die "cannot write $f"
    d=$(sha256sum "$f" | awk '{print $1}')
    printf -v "${1}_DIGEST" 'sha256:%s' "$d"
    chmod 644 "$f"
}

registry_yml() { # file port storage [remoteurl]
    {
        if [ -n "${BENCH_REGISTRY_LOG:-}" ]; then # e.g. info: registries log every request
            printf 'version: 0.1\nlog:\n  level: %s\n' "$BENCH_REGISTRY_LOG"
        else
            printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n'
        fi
        printf 'storage:\n  filesystem:\n    rootdirectory: %s\n  cache:\n    blobdescriptor: inmemory\n' "$3"
        printf 'http:\n  addr: %s:%s\n  tls:\n    certificate: %s\n    key: %s\n' \
            "$UP_ADDR" "$2" "$WORK/pki/server.crt" "$WORK/pki/server.key"
        [ -n "${4:-}" ] && printf 'proxy:\n  remoteurl: %s\n' "$4"
    } >"$1"
}
start_registry() { # name port storage [remoteurl] -> PID: on UP_ADDR, in BENCH_NS
    local yml="$WORK/$1.yml" lg="$WORK/logs/$1.log"
    registry_yml "$yml" "$2" "$3" "${4:-}"
    # Distribution's proxy mode verifies the remote's TLS with the system roots: SSL_CERT_FILE.
    local pre=() # not in_ns: the job must be the registry itself, to stop it by its PID
    [ -n "$BENCH_NS" ] && pre=(ip netns exec "$BENCH_NS")
    "${pre[@]}" env $(env | awk -F= '/^REGISTRY_/ {printf "-u %s ", $1}') SSL_CERT_FILE="$CA" \
        docker-registry serve "$yml" >"$lg" 2>&1 &
    PID=$!
    wait_port $PID "$UP_ADDR:$2" "$1" "$lg" || die "$1 did not start"
}

start_nginx() { # name port [plain] -> PID; plain: HTTP without TLS (the plain mirror's reference).
                # When set: NGINX_ROOT (default $WORK/files), NGINX_WORKERS (default auto),
                # NGINX_SERVER (more lines in the server block), NGINX_PRE (a command before nginx,
                # e.g. taskset -c 1)
    local d="$WORK/$1" u="" listen="listen 127.0.0.1:$2 ssl http2;" pre=(${NGINX_PRE:-})
    mkdir -p "$d/tmp"
    [ "$(id -u)" = 0 ] && u="user root;"
    [ "${3:-}" = plain ] && listen="listen 127.0.0.1:$2;"
    cat >"$d/nginx.conf" <<EOF
$u
worker_processes ${NGINX_WORKERS:-auto};
pid $d/nginx.pid;
error_log $d/error.log warn;
daemon off;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    default_type application/octet-stream;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    server {
        $listen
        ssl_certificate $WORK/pki/server.crt;
        ssl_certificate_key $WORK/pki/server.key;
        ssl_protocols TLSv1.3;
        root ${NGINX_ROOT:-$WORK/files};
        ${NGINX_SERVER:-}
    }
}
EOF
    "${pre[@]}" nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf" >"$WORK/logs/$1.log" 2>&1 &
    PID=$!
    wait_port $PID "$2" "$1" "$WORK/logs/$1.log" || { cat "$d/error.log" >&2; die "$1 did not start"; }
}

STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so
start_link() { # name port MiB/s [target port] -> PID: a TCP relay (nginx stream) reading the
               # upstream (or the target) at that speed
    local d="$WORK/$1" u=""
    mkdir -p "$d"
    [ "$(id -u)" = 0 ] && u="user root;"
    # TLS stays end to end: the relay spends almost no CPU, so the link, not this machine, is the
    # limit.
    cat >"$d/nginx.conf" <<EOF
load_module $STREAM_MODULE;
$u
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
daemon off;
events { worker_connections 64; }
stream {
    server {
        listen 127.0.0.1:$2;
        proxy_pass 127.0.0.1:${4:-$UP_PORT};
        proxy_download_rate ${3}m;
    }
}
EOF
    nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf" >"$WORK/logs/$1.log" 2>&1 &
    PID=$!
    wait_port $PID "$2" "$1" "$WORK/logs/$1.log" || { cat "$d/error.log" >&2; die "$1 did not start"; }
}

hoard_toml() { # file proxy-port admin-port [upstream lines] [proxy lines]: a hoard config
               # intercepting HOST, resolved to the upstream at UP_PORT (trusting CA), its CA and
               # cache in WORK; other sections may follow the upstream lines
    cat >"$1" <<EOF
[proxy]
listen = "127.0.0.1:$2"
${5:-}
[ca]
dir = "$WORK/hoard-ca"
[cache]
dir = "$WORK/hoard-cache"
max_size = "10GiB"
min_free = "0"
[intercept]
hosts = ["$HOST"]
[admin]
listen = "127.0.0.1:$3"
[upstream]
extra_ca_files = ["$CA"]
resolve = { "$HOST" = "127.0.0.1:$UP_PORT" }
${4:-}
EOF
}

push_blob() { # file digest: into the registry at UP_ADDR:UP_PORT, from BENCH_NS
    local loc code up="https://$UP_ADDR:$UP_PORT"
    loc=$(in_ns curl -sS --cacert "$CA" -X POST -D - -o /dev/null \
        "$up/v2/$REPO/blobs/uploads/" | awk -F': ' 'tolower($1) == "location" {print $2}' | tr -d '\r')
    [ -n "$loc" ] || die "registry gave no upload location"
    case "$loc" in /*) loc="$up$loc" ;; esac
    case "$loc" in *\?*) loc="$loc&digest=$2" ;; *) loc="$loc?digest=$2" ;; esac
    code=$(in_ns curl -sS --cacert "$CA" -o /dev/null -w '%{http_code}' -T "$1" \
        -H 'Content-Type: application/octet-stream' "$loc") || die "push of $1 failed"
    [ "$code" = 201 ] || die "push of $1: HTTP $code"
}

# ---------------------------------------------------------------------------------------------
# Fleet benchmarks (bench/fleet.sh, bench/netns.sh): a node's config, cold bursts, the registry's
# bytes, figures per case and the targets' lines.

node_toml() { # file cache-dir addr proxy-port mirror-port admin-port upstream [self]: a hoard node
              # with a plain-HTTP mirror listener on addr, HOST resolved to upstream (addr:port,
              # trusting CA); in a fleet (peers FLEET, a list of quoted addr:port) if self is given
    cat >"$1" <<EOF2
[proxy]
listen = "$3:$4"
[ca]
dir = "$WORK/hoard-ca"
[cache]
dir = "$2"
max_size = "50GiB"
min_free = "0"
[intercept]
hosts = ["$HOST"]
[upstream]
extra_ca_files = ["$CA"]
resolve = { "$HOST" = "$7" }
[admin]
listen = "$3:$6"
[mirror]
listen = "$3:$5"
EOF2
    if [ -n "${8:-}" ]; then
        printf '[fleet]\npeers = [%s]\nself = "%s"\nlisten = "%s"\nsecret_file = "%s"\n' \
            "$FLEET" "$8" "$8" "$WORK/fleet.secret" >>"$1"
    fi
}

image_registry() { # port -> DIGESTS, UP_PORT, UP_LOG: LAYERS random layers of LAYER_MIB MiB,
                   # pushed into a new registry at UP_ADDR:port (in BENCH_NS) whose access log
                   # counts the bytes each run fetched
    local i v
    log "writing $LAYERS random layers of $LAYER_MIB MiB"
    DIGESTS=()
    for i in $(seq $LAYERS); do
        make_blob "layer$i" $LAYER_MIB
        v="layer${i}_DIGEST"
        DIGESTS+=("${!v}")
    done
    UP_PORT=$1
    BENCH_REGISTRY_LOG=info start_registry upstream "$UP_PORT" "$WORK/upstream-storage"
    UP_LOG="$WORK/logs/upstream.log"
    for i in $(seq $LAYERS); do push_blob "$WORK/files/layer$i" "${DIGESTS[$((i - 1))]}"; done
}

# pull_burst <name> <endpoint...>: CLIENTS clients at once, client i on endpoint i mod n, each
# one curl pulling every layer in turn (starting at its own) over one connection, or
# PULL_PARALLEL of them at once (curl --parallel, a connection each), as dockerd pulls an
# image's layers (its max-concurrent-downloads, 3 by default). An endpoint is
# a mirror listener: a port on 127.0.0.1, addr:port, or ns/addr:port to reach it from that network
# namespace. Sets SECS (wall time), FIRST_BYTE (the last client's first byte: of the layer it ended
# first) and FIRST_LAYER (the median client's first layer done), in s, or fails the run. Uses LAYERS, LAYER_MIB, DIGESTS, REPO, HOST.
pull_burst() {
    local name=$1 i k ep t0 t1 bad=0 pids=() eps args pre par=()
    shift
    eps=("$@")
    [ "${PULL_PARALLEL:-1}" -gt 1 ] && par=(--parallel --parallel-immediate --parallel-max "$PULL_PARALLEL")
    t0=$(date +%s%N)
    for i in $(seq 0 $((CLIENTS - 1))); do
        ep=${eps[$((i % ${#eps[@]}))]}
        case "$ep" in *:*) ;; *) ep=127.0.0.1:$ep ;; esac
        args=()
        for k in $(seq 0 $((LAYERS - 1))); do
            args+=(-o /dev/null "http://${ep#*/}/v2/$REPO/blobs/${DIGESTS[$(((i + k) % LAYERS))]}?ns=$HOST")
        done
        pre=()
        case "$ep" in */*) pre=(ip netns exec "${ep%%/*}") ;; esac
        "${pre[@]}" curl -sS "${par[@]}" --max-time 600 -w '%{http_code} %{size_download} %{time_starttransfer} %{time_total}\n' "${args[@]}" \
            >"$WORK/logs/$name.$i" 2>"$WORK/logs/$name.$i.err" &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do wait "${pids[$i]}" || bad=1; done
    t1=$(date +%s%N)
    for i in $(seq 0 $((CLIENTS - 1))); do
        if [ "$(grep -c "^200 $((LAYER_MIB * MIB)) " "$WORK/logs/$name.$i")" != $LAYERS ]; then
            bad=1
            log "$name: client $i: $(tr '\n' ' ' <"$WORK/logs/$name.$i") $(tr '\n' ' ' <"$WORK/logs/$name.$i.err")"
        fi
    done
    [ $bad = 0 ] || die "$name: a client failed"
    SECS=$(awk -v ns=$((t1 - t0)) 'BEGIN {printf "%.2f", ns / 1e9}')
    # Each client's first layer: its first byte (the last client's) and its end (the median).
    # Each transfer's times count from its own start. The first line is the first transfer to
    # end, which started with the client (also at once: a queued one starts when another ends).
    FIRST_BYTE=$(for i in $(seq 0 $((CLIENTS - 1))); do awk 'NR == 1 {print $3}' "$WORK/logs/$name.$i"; done | sort -g | tail -n 1)
    FIRST_LAYER=$(median_of "$(for i in $(seq 0 $((CLIENTS - 1))); do awk 'NR == 1 {print $4}' "$WORK/logs/$name.$i"; done)")
}

# Bytes of blob GETs the registry has sent so far (UP_LOG, its access log: the combined format's
# size; summed as a float: mawk's %d stops at 2^31). A line is written when its request ends, so a
# run's bytes are read after its nodes have stopped, once the log has stopped growing.
upstream_bytes() {
    awk '/"GET \/v2\/[^ ]*\/blobs\/sha256:/ { for (i = 1; i < NF; i++) if ($i ~ /^[0-9][0-9][0-9]$/ && $(i + 1) ~ /^[0-9]+$/ && $(i - 1) ~ /HTTP\/[0-9.]+"$/) { s += $(i + 1); break } }
         END { printf "%.0f", s }' "$UP_LOG"
}
upstream_settled() {
    local a b i
    b=$(upstream_bytes)
    for i in $(seq 50); do
        sleep 0.2
        a=$(upstream_bytes)
        [ "$a" = "$b" ] && break
        b=$a
    done
    echo "$b"
}

# Figures per case: its runs' values, one value per run.
declare -A VALS
add_value() { VALS[$1]="${VALS[$1]:-} $2"; log "$1: $2"; }
median_of() { printf '%s\n' $1 | sort -g | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]; else print "-"}'; }
spread_of() { printf '%s\n' $1 | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {if (NR) print lo "-" hi; else print "-"}'; }

target() { # label value op limit: a line of the targets block
    local ok
    if [ "$2" = - ] || [ -z "$2" ]; then printf '  %-62s %-8s %s\n' "$1" "-" "NOT MEASURED"; return; fi
    ok=$(awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN { if (op == ">=") print (v >= l) ? "PASS" : "FAIL"; else print (v <= l) ? "PASS" : "FAIL" }')
    printf '  %-62s %-8s %s\n' "$1" "$2" "$ok"
}
