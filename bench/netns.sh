# The fleet across links (issue 25), run by `bench/fleet.sh --netns` (sourced by it after its
# options: MODE, RUNS, KEEP, BASE, UPLINK). The registry, and each of three hoard nodes with its
# clients, in a network namespace of its own; a fourth namespace holds the bridge that joins them
# (veth pairs made inside the namespaces: the root namespace is left as it is). Nodes reach each
# other at the bridge's speed; the registry is reached through one shared uplink, shaped by tbf on
# the registry's side of its veth (its egress, registry -> nodes). Every address is in
# 127.100.0.0/24 (route_localnet on in each namespace); loopback's own 127.0.0.0/8 route is cut
# to 127.0.0.1/32 there so that the other 127.100.0.x addresses leave by the veth.
#
# Rows, each a cold burst (CLIENTS clients at once pulling every layer, PULL_PARALLEL at a time as
# dockerd and containerd pull an image, on new and empty caches):
# through three nodes in a fleet (16 clients in each node's namespace, on their own node), through
# three nodes alone (the same, no [fleet]), and through one node with all 48 clients.

MIB=1048576
LAYERS=4
if [ "$MODE" = full ]; then LAYER_MIB=32; : "${RUNS:=3}"; else LAYER_MIB=8; : "${RUNS:=1}"; fi
PER_NODE=16
: "${PULL_PARALLEL:=3}" # layers each client pulls at once: dockerd's max-concurrent-downloads
CLIENTS=$((3 * PER_NODE))
REPO=bench
HOST=registry.bench
IMAGE_BYTES=$((LAYERS * LAYER_MIB * MIB))

NS=hoardb # the namespaces' prefix: hoardb-sw, hoardb-reg, hoardb-n1..3
NODES=(n1 n2 n3)
NET=127.100.0
REG_NS=$NS-reg
node_addr() { echo "$NET.1${1#n}"; } # n1 -> 127.100.0.11
PROXY_PORT=3128
MIRROR_PORT=8080
ADMIN_PORT=9090
PEER_PORT=3129

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$(id -u)" = 0 ] || die "--netns needs root (ip netns, tc)"
need_all ip tc docker-registry curl openssl awk sha256sum cargo
build_hoard

# ---------------------------------------------------------------------------------------------
# The namespaces, and their removal on exit (lib.sh's cleanup calls cleanup_more after stopping
# this shell's jobs).

ns_pids_kill() { # every process still in one of our namespaces (clients of an interrupted run)
    local n p
    for n in sw reg "${NODES[@]}"; do
        for p in $(ip netns pids "$NS-$n" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    done
}
cleanup_more() {
    local n
    ns_pids_kill
    # Deleting a namespace deletes its veth ends, their peers, the bridge and the qdisc with them.
    for n in sw reg "${NODES[@]}"; do
        ip netns del "$NS-$n" 2>/dev/null
    done
    return 0
}

ns_new() { # name: a namespace whose loopback holds 127.0.0.1 alone, route_localnet on
    local n=$NS-$1
    ip netns add "$n" || die "ip netns add $n"
    ip -n "$n" link set lo up
    ip -n "$n" addr del 127.0.0.1/8 dev lo
    ip -n "$n" addr add 127.0.0.1/32 dev lo
    ip netns exec "$n" sysctl -qw net.ipv4.conf.all.route_localnet=1 \
        net.ipv4.conf.default.route_localnet=1 || die "sysctl in $n"
}
ns_attach() { # name address: the namespace's eth0, on the bridge in $NS-sw
    local n=$NS-$1
    ip -n "$n" link add eth0 type veth peer name "$1" netns "$NS-sw" || die "veth for $n"
    ip -n "$NS-sw" link set "$1" master br0 up
    ip -n "$n" addr add "$2/24" dev eth0
    ip -n "$n" link set eth0 up
    ip netns exec "$n" sysctl -qw net.ipv4.conf.eth0.route_localnet=1 || die "sysctl in $n"
}

for n in sw reg "${NODES[@]}"; do
    if ip netns list | grep -qw "^$NS-$n"; then
        log "removing $NS-$n, left by an earlier run"
        cleanup_more
        break
    fi
done
log "making the namespaces: $NS-sw (bridge), $REG_NS ($NET.1), ${NODES[*]/#/$NS-} ($NET.11-13)"
ns_new sw
ip -n "$NS-sw" link add br0 type bridge || die "bridge"
ip -n "$NS-sw" link set br0 up
ns_new reg
ns_attach reg "$NET.1"
for n in "${NODES[@]}"; do ns_new "$n"; ns_attach "$n" "$(node_addr "$n")"; done
# tbf's bucket: 10 ms at the rate, at least 64 KiB.
BURST=$(awk -v m="$UPLINK" 'BEGIN {b = m * 1e6 / 8 / 100; if (b < 65536) b = 65536; printf "%d", b}')
ip netns exec "$REG_NS" tc qdisc add dev eth0 root tbf rate "${UPLINK}mbit" burst "$BURST" latency 50ms ||
    die "tc tbf on $REG_NS"

make_work netns
make_pki "$HOST" "$NET.1"
openssl rand -hex 32 >"$WORK/fleet.secret"

# ---------------------------------------------------------------------------------------------
# The registry in its namespace, the image pushed from there; every node reaches it first.

UP_ADDR=$NET.1
BENCH_NS=$REG_NS image_registry 5000
for n in "${NODES[@]}"; do
    code=$(ip netns exec "$NS-$n" curl -sS --cacert "$CA" --resolve "$HOST:$UP_PORT:$UP_ADDR" \
        -o /dev/null -w '%{http_code}' "https://$HOST:$UP_PORT/v2/") || die "$NS-$n cannot reach the registry"
    [ "$code" = 200 ] || die "$NS-$n: the registry answered $code"
done
log "every node's namespace reaches the registry at $UP_ADDR:$UP_PORT"

uplink_sent() { # bytes tbf has sent on the uplink so far
    ip netns exec "$REG_NS" tc -s qdisc show dev eth0 | awk '/^ Sent / {print $2; exit}'
}

# ---------------------------------------------------------------------------------------------
# Nodes and bursts

start_ns_node() { # namespace-suffix name [fleet] -> PID, in NODE_PIDS; ENDPOINT: its mirror
    local a cfg="$WORK/$2.toml" lg="$WORK/logs/$2.log" self=
    a=$(node_addr "$1")
    [ -n "${3:-}" ] && self=$a:$PEER_PORT
    node_toml "$cfg" "$WORK/$2-cache" "$a" $PROXY_PORT $MIRROR_PORT $ADMIN_PORT "$UP_ADDR:$UP_PORT" "$self"
    ip netns exec "$NS-$1" env RUST_LOG=${NODE_LOG:-hoard=warn} "$HOARD" serve --config "$cfg" >"$lg" 2>&1 &
    PID=$!
    NODE_PIDS+=($PID)
    BENCH_NS=$NS-$1 wait_port $PID "$a:$MIRROR_PORT" "$2" "$lg" || die "$2 did not start"
    if [ -n "$self" ]; then BENCH_NS=$NS-$1 wait_port $PID "$self" "$2 (peers)" "$lg" || die "$2 did not start"; fi
    ENDPOINT=$NS-$1/$a:$MIRROR_PORT
}

fleet_counts() { # namespace-suffix -> "peer reads R, answered for peers A, duplicates D, upstream U"
    ip netns exec "$NS-$1" curl -s "http://$(node_addr "$1"):$ADMIN_PORT/metrics" | awk '
        /^hoard_fleet_peer_reads_total/ {r += $NF}
        /^hoard_requests_total\{.*via="fleet"/ {a += $NF}
        /^hoard_fleet_duplicate_fetches_total/ {d += $NF}
        /^hoard_upstream_requests_total/ {u += $NF}
        END {printf "peer reads %d, answered for peers %d, duplicate fetches %d, registry requests %d", r, a, d, u}'
}

nodes_ticks() { # CPU ticks the nodes of NODE_PIDS have used
    local p t=0
    for p in "${NODE_PIDS[@]}"; do t=$((t + $(cpu_ticks "$p"))); done
    echo $t
}
children_cpu() { # CPU seconds of this shell's waited-for children (the clients), from bash's
                  # `times` (in this shell: in $(...) it would count the subshell's children)
    times >"$WORK/times"
    CHILDREN_CPU=$(awk 'NR == 2 {for (i = 1; i <= 2; i++) {split($i, a, /[ms]/); s += a[1] * 60 + a[2]}} END {printf "%.2f", s}' "$WORK/times")
}
# The uplink's busy time: one process in the registry's namespace samples its veth's sent bytes
# every 50 ms; uplink_busy gives the last moment, from $1 (EPOCHREALTIME), that it sent more than
# 64 KiB in a sample: when the registry's last bytes left.
uplink_sampler() {
    ip netns exec "$REG_NS" bash -c 'while :; do echo "$EPOCHREALTIME $(</sys/class/net/eth0/statistics/tx_bytes)"; sleep 0.05; done' \
        >"$WORK/logs/uplink.samples" &
    SAMPLER=$!
}
uplink_busy() {
    stop_pid $SAMPLER
    awk -v t0="$1" 'NR > 1 && $2 - b > 65536 {last = $1} {b = $2} END {printf "%.2f", last ? last - t0 : 0}' "$WORK/logs/uplink.samples"
}

# cold <case> <label> <nodes> [fleet]: one run of a cold burst through new nodes in the first
# <nodes> namespaces, CLIENTS clients spread over them; adds <case>_s, _up (registry's access log)
# and _tc (tbf's bytes).
cold() {
    local c=$1 label=$2 k=$3 fleet=${4:-} n eps=() up0 tc0 cpu0 kids0 t0
    log "run $run of $RUNS: cold burst through $label"
    sync
    NODE_PIDS=()
    FLEET=$(for n in "${NODES[@]:0:$k}"; do printf '"%s:%s", ' "$(node_addr "$n")" $PEER_PORT; done)
    FLEET=${FLEET%, }
    for n in "${NODES[@]:0:$k}"; do
        start_ns_node "$n" "$c-$run-$n" "$fleet"
        eps+=("$ENDPOINT")
    done
    up0=$(upstream_settled)
    tc0=$(uplink_sent)
    cpu0=$(nodes_ticks)
    children_cpu; kids0=$CHILDREN_CPU
    uplink_sampler
    t0=$EPOCHREALTIME
    pull_burst "$c-$run" "${eps[@]}"
    add_value "${c}_busy" "$(uplink_busy "$t0")"
    children_cpu
    add_value "${c}_kids" "$(awk -v a="$CHILDREN_CPU" -v b="$kids0" 'BEGIN {printf "%.1f", a - b}')"
    add_value "${c}_cpu" "$(awk -v a="$(nodes_ticks)" -v b="$cpu0" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", (a - b) / hz}')"
    for n in "${NODES[@]:0:$k}"; do
        COUNTS[$c.$n]=$(fleet_counts "$n")
        log "$c $n: ${COUNTS[$c.$n]}"
    done
    for n in "${NODE_PIDS[@]}"; do stop_pid "$n"; done
    add_value "${c}_s" "$SECS"
    add_value "${c}_fb" "$(printf '%.3f' "$FIRST_BYTE")"
    add_value "${c}_fl" "$(printf '%.2f' "$FIRST_LAYER")"
    add_value "${c}_up" $(($(upstream_settled) - up0))
    add_value "${c}_tc" $(($(uplink_sent) - tc0))
}

declare -A COUNTS
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(date +%s)
for run in $(seq "$RUNS"); do
    cold fleet "three nodes in a fleet" 3 fleet
    cold alone "three nodes alone (no fleet)" 3
    cold one "one node with all $CLIENTS clients" 1
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# The report

over_image() { # bytes-values -> their median over the image's size
    awk -v u="$(median_of "$1")" -v i=$IMAGE_BYTES 'BEGIN {if (u == "-") print "-"; else printf "%.2f", u / i}'
}
ROW='| %-32s | %8s | %11s | %6s | %6s | %6s | %5s | %5s | %8s | %8s |\n'
med() { median_of "${VALS[$1]:-}"; }
row() { # label case
    printf "$ROW" "$1" "$(med ${2}_s)" "$(spread_of "${VALS[${2}_s]:-}")" "$(med ${2}_fb)" "$(med ${2}_fl)" "$(med ${2}_busy)" \
        "$(med ${2}_cpu)" "$(med ${2}_kids)" "$(over_image "${VALS[${2}_up]:-}")x" "$(over_image "${VALS[${2}_tc]:-}")x"
}
floor=$(awk -v b=$IMAGE_BYTES -v m="$UPLINK" 'BEGIN {printf "%.2f", b * 8 / (m * 1e6)}')
echo "hoard fleet across links (bench/fleet.sh --netns), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, kernel $(uname -r)"
echo "hoard $(hoard_rev)"
echo "mode: $MODE, $RUNS run(s), took $(($(date +%s) - T0)) s; load average at start $LOAD0, at end $LOAD1"
echo
echo "Image: $LAYERS layers of $LAYER_MIB MiB ($((IMAGE_BYTES / MIB)) MiB). $CLIENTS clients at once, $PER_NODE in each node's"
if [ "$PULL_PARALLEL" -gt 1 ]; then
    echo "namespace (all $CLIENTS in one for the one-node row), each a curl pulling every layer, $PULL_PARALLEL at once"
    echo "as dockerd does (from the layer of its number mod $LAYERS on), from its node's mirror port. The registry: one uplink of"
else
    echo "namespace (all $CLIENTS in one for the one-node row), each a curl pulling every layer in turn (its"
    echo "first the layer of its number mod $LAYERS) from its node's mirror port. The registry: one uplink of"
fi
echo "$UPLINK Mbit/s (tbf on its veth; the image alone takes $floor s at that rate); nodes on an unshaped bridge."
echo "wall (s): median and min-max of the runs. 1st B (s): when the last client had its first byte;"
echo "1st L (s): when the median client had all of its first layer; link (s): when the uplink sent its"
echo "last bytes (the rest of the wall time is clients reading layers the nodes already hold)."
echo "hoard, curl: CPU seconds of the hoard nodes and of the clients."
echo "upstream: the registry's blob bytes (its access log); uplink: tbf's bytes (with TCP/IP and TLS);"
echo "medians, over the image's size."
echo
printf "$ROW" case "wall (s)" "min-max" "1st B" "1st L" "link" hoard curl upstream uplink
printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' $(seq 34))" ---------- ------------- -------- -------- -------- ------- ------- ---------- ----------
row "three nodes in a fleet" fleet
row "three nodes alone (reference)" alone
row "one node, $CLIENTS clients" one
echo
echo "Each fleet node in the last run (its /metrics):"
for n in "${NODES[@]}"; do echo "  $n ($(node_addr "$n")): ${COUNTS[fleet.$n]:--}"; done
echo
speedup=$(awk -v a="$(med alone_s)" -v f="$(med fleet_s)" \
    'BEGIN {if (a == "-" || f == "-" || f == 0) print "-"; else printf "%.2f", a / f}')
# The bytes target takes the worst run, not the median.
worst=$(printf '%s\n' ${VALS[fleet_up]:-} | sort -g | tail -n 1)
bytes=$(awk -v u="${worst:--}" -v i=$IMAGE_BYTES 'BEGIN {if (u == "-") print "-"; else printf "%.2f", u / i}')
echo "targets (issue 25):"
target "fleet speedup over nodes alone >= 2.5x" "$speedup" ">=" 2.5
target "fleet upstream bytes <= 1.00x" "$bytes" "<=" 1.00
