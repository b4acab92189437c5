# Shared by bench/run.sh, bench/fleet.sh and bench/memory.sh (sourced, not run): logging, the servers' processes
# and the clean-up on exit, ports, the test PKI, random blobs, the Distribution registry and
# pushing to it, nginx serving $WORK/files, and a rate-limited TCP link. Expects MIB, KEEP and (once made) WORK; start_link
# and push_blob use UP_PORT; make_work BASE.

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
wait_port() { # pid port what logfile
    local i
    for i in $(seq 600); do
        if ! kill -0 "$1" 2>/dev/null; then
            log "$3 exited while starting; its log:"; tail -n 30 "$4" >&2; return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
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

build_hoard() { # -> HOARD: the release build of the checkout at REPO_DIR
    log "building hoard (cargo build --release)"
    (cd "$REPO_DIR" && cargo build --release -q >&2) || die "cargo build --release failed"
    HOARD="$REPO_DIR/target/release/hoard"
    [ -x "$HOARD" ] || die "no $HOARD"
}

make_work() { # name -> WORK: a new folder under BASE with logs/, files/ and pki/
    mkdir -p "$BASE"
    WORK=$(mktemp -d "$BASE/hoard-$1.XXXXXX") || die "mktemp"
    chmod 755 "$WORK"
    mkdir -p "$WORK/logs" "$WORK/files" "$WORK/pki"
}

make_pki() { # names -> $WORK/pki/{ca,server}.{crt,key}, CA: a test CA and one server
               # certificate for localhost, 127.0.0.1 and the names
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
        printf 'http:\n  addr: 127.0.0.1:%s\n  tls:\n    certificate: %s\n    key: %s\n' \
            "$2" "$WORK/pki/server.crt" "$WORK/pki/server.key"
        [ -n "${4:-}" ] && printf 'proxy:\n  remoteurl: %s\n' "$4"
    } >"$1"
}
start_registry() { # name port storage [remoteurl] -> PID
    local yml="$WORK/$1.yml" lg="$WORK/logs/$1.log"
    registry_yml "$yml" "$2" "$3" "${4:-}"
    # Distribution's proxy mode verifies the remote's TLS with the system roots: SSL_CERT_FILE.
    env $(env | awk -F= '/^REGISTRY_/ {printf "-u %s ", $1}') SSL_CERT_FILE="$CA" \
        docker-registry serve "$yml" >"$lg" 2>&1 &
    PID=$!
    wait_port $PID "$2" "$1" "$lg" || die "$1 did not start"
}

start_nginx() { # name port [plain] -> PID; plain: HTTP without TLS (the plain mirror's reference)
    local d="$WORK/$1" u="" listen="listen 127.0.0.1:$2 ssl http2;"
    mkdir -p "$d/tmp"
    [ "$(id -u)" = 0 ] && u="user root;"
    [ "${3:-}" = plain ] && listen="listen 127.0.0.1:$2;"
    cat >"$d/nginx.conf" <<EOF
$u
worker_processes auto;
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
        root $WORK/files;
    }
}
EOF
    nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf" >"$WORK/logs/$1.log" 2>&1 &
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

hoard_toml() { # file proxy-port admin-port [upstream lines]: a hoard config intercepting HOST,
               # resolved to the upstream at UP_PORT (trusting CA), its CA and cache in WORK
    cat >"$1" <<EOF
[proxy]
listen = "127.0.0.1:$2"
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

push_blob() { # file digest
    local loc code
    loc=$(curl -sS --cacert "$CA" -X POST -D - -o /dev/null \
        "https://127.0.0.1:$UP_PORT/v2/$REPO/blobs/uploads/" | awk -F': ' 'tolower($1) == "location" {print $2}' | tr -d '\r')
    [ -n "$loc" ] || die "registry gave no upload location"
    case "$loc" in /*) loc="https://127.0.0.1:$UP_PORT$loc" ;; esac
    case "$loc" in *\?*) loc="$loc&digest=$2" ;; *) loc="$loc?digest=$2" ;; esac
    code=$(curl -sS --cacert "$CA" -o /dev/null -w '%{http_code}' -T "$1" \
        -H 'Content-Type: application/octet-stream' "$loc") || die "push of $1 failed"
    [ "$code" = 201 ] || die "push of $1: HTTP $code"
}
