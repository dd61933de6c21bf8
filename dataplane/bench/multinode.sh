#!/usr/bin/env bash
# Cross-node pod-to-pod benchmark (BENCHMARKS.md "Multi-node"): per arm two
# node netns on their own underlay bridge (MTU 1500), one pod each:
#   reference: bridge + host-local per node, static routes to the other
#              node's pod subnet via its underlay address
#   native:    corral-cni + corral-agent --routing native (routes from Node
#              objects)
#   vxlan:     corral-cni + corral-agent --routing vxlan
#
# Method (made for a shared, noisy machine): the three arms are built once
# and exist side by side for the whole run; each round measures every arm
# once, back to back, in short runs (TCP throughput with iperf3, then
# back-to-back 64-byte request/response with `corral-loadgen net rr
# --interval-us 0`), and the arm order cycles through all six permutations
# so that no arm always runs first or last. Client and server are pinned
# with taskset to the same CPUs in every arm (CLIENT_CPU, SERVER_CPU) and
# run at the same priority (NICE, default 0; -20 gives the measured
# processes most of their CPU against other sessions' builds). Load that changes over seconds to
# minutes (other builds) then hits the three arms of a round alike, and the
# per-round ratio arm/reference cancels it; `paired.py` reports the median
# of those ratios with its interquartile range and a bootstrap 95 %
# confidence interval. With ATTRIBUTE=1 a last pass (not part of the
# ratios) enables kernel.bpf_stats_enabled for a few seconds and reads the
# run count and run time of the Corral programs on the pod veths: eBPF ns
# per request/response transaction and per MB of TCP.
#
# Run as root from the repository root after
#   cargo build --release -p corral-dataplane --bins -p corral-loadgen
# Usage: ROUNDS=30 SECS=2 bash dataplane/bench/multinode.sh [RESULTS.jsonl]
# Output: one JSON line per round and arm (RESULTS.jsonl, default a temp
# file), then the summary of dataplane/bench/paired.py.
# Needs: iproute2, iperf3, jq, python3, util-linux (taskset, nsenter),
# containernetworking-plugins. Creates only its own netns (prefix NS_PREFIX,
# default cbm) with addresses from 192.0.2.0/24 and 198.18.0.0/15 and
# removes them, their processes and pins on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
REL=${REL:-$ROOT/target/release}
SECS=${SECS:-2}
ROUNDS=${ROUNDS:-30}
CLIENT_CPU=${CLIENT_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
NICE=${NICE:-0}
ATTRIBUTE=${ATTRIBUTE:-0}
ARMS=(reference native vxlan)
ID=$(( $$ % 4096 ))
P=${NS_PREFIX:-cbm}$ID
TMP=$(mktemp -d)
OUT=${1:-$TMP/results.jsonl}
PIDS=()
STATS_WAS=

for t in iperf3 jq python3 taskset nsenter; do
  command -v $t >/dev/null || { echo "multinode.sh: $t not found" >&2; exit 1; }
done
for b in corral-agent corral-cni corral-loadgen; do
  [ -x "$REL/$b" ] || { echo "multinode.sh: $REL/$b not built" >&2; exit 1; }
done
case $ROUNDS in ''|*[!0-9]*) echo "multinode.sh: ROUNDS=$ROUNDS is not a count" >&2; exit 2 ;; esac

cleanup() {
  [ -n "$STATS_WAS" ] && sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS" || true
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  for n in $(ip netns list | awk '{print $1}' | grep "^$P" || true); do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$n" || true
  done
  rm -rf /sys/fs/bpf/corral-bench-$ID-* "$TMP"
}
trap cleanup EXIT

# client side / server side of every measurement: same CPUs, same priority.
# With kernel.sched_autogroup_enabled=1 a process's nice value only counts
# within its session's autogroup, so each measured process gets a session
# of its own whose autogroup carries the same nice value (released when the
# process exits).
prio() { # cpu netns cmd...
  setsid --wait sh -c '[ ! -w /proc/self/autogroup ] || echo "$1" >/proc/self/autogroup || exit 1
    n=$1 c=$2 ns=$3; shift 3; exec ip netns exec "$ns" nice -n "$n" taskset -c "$c" "$@"' sh "$NICE" "$@"
}
cli() { prio "$CLIENT_CPU" "$@"; }
srv() { prio "$SERVER_CPU" "$@"; }

# arm a (first letter r/n/v): underlay ${P}${a}u with bridge br0, nodes
# ${P}${a}n1/2 at 192.0.2.1/2 on ul0, pods ${P}${a}p1/2
underlay() { # a
  local a=$1 u=${P}$1u
  ip netns add "$u"
  ip -n "$u" link add br0 type bridge
  ip -n "$u" link set br0 up
  for k in 1 2; do
    local n=${P}${a}n$k
    ip netns add "$n"
    ip -n "$n" link set lo up
    ip netns exec "$n" sysctl -qw net.ipv4.ip_forward=1
    ip -n "$n" link add ul0 type veth peer name ulp$k
    ip -n "$n" link set ulp$k netns "$u"
    ip -n "$u" link set ulp$k master br0
    ip -n "$u" link set ulp$k up
    ip -n "$n" addr add 192.0.2.$k/24 dev ul0
    ip -n "$n" link set ul0 up
    ip netns add ${P}${a}p$k
  done
}

cni() { # a node plugin-binary conf
  echo "$4" | ip netns exec ${P}$1n$2 env CNI_COMMAND=ADD CNI_CONTAINERID=bench$1$2 \
    CNI_NETNS=/var/run/netns/${P}$1p$2 CNI_IFNAME=eth0 CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=b;K8S_POD_NAME=p$2" \
    CNI_PATH=/usr/lib/cni:$REL "$3"
}

build_reference() { # a
  for k in 1 2; do
    local o=$(( 3 - k ))
    cni "$1" $k /usr/lib/cni/bridge "{\"cniVersion\":\"1.0.0\",\"name\":\"ref\",\"type\":\"bridge\",\"bridge\":\"cbr0\",\"isGateway\":true,
      \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$TMP/ipam$1$k\",\"ranges\":[[{\"subnet\":\"198.19.$k.0/24\"}]],\"routes\":[{\"dst\":\"0.0.0.0/0\"}]}}" >/dev/null
    ip -n ${P}$1n$k route add 198.19.$o.0/24 via 192.0.2.$o
  done
}

build_corral() { # a mode
  local a=$1 nodes=""
  for k in 1 2; do
    nodes+="apiVersion: v1
kind: Node
metadata: {name: n$k}
spec: {podCIDRs: [198.19.$k.0/24]}
status: {addresses: [{type: InternalIP, address: 192.0.2.$k}]}
---
"
  done
  for k in 1 2; do
    local d=$TMP/$a$k
    mkdir -p "$d/man"
    echo "$nodes" >"$d/man/nodes.yaml"
    echo "{\"cniVersion\":\"1.0.0\",\"name\":\"corral\",\"plugins\":[{\"type\":\"corral-cni\",\"mtu\":1500,
      \"agentSocket\":\"$d/a.sock\",\"dataDir\":\"$d/cni\",\"logFile\":\"$d/cni.log\",
      \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$d/ipam\",\"ranges\":[[{\"subnet\":\"198.18.0.0/24\"}]]}}]}" >"$d/tpl.conflist"
    nsenter --net=/var/run/netns/${P}${a}n$k "$REL/corral-agent" --socket "$d/a.sock" \
      --pin-dir /sys/fs/bpf/corral-bench-$ID-$a$k --state-dir "$d/state" --manifests "$d/man" \
      --node-name n$k --routing "$2" --cni-conf "$d/10-corral.conflist" \
      --cni-conf-template "$d/tpl.conflist" >/dev/null 2>"$d/agent.log" &
    PIDS+=($!); disown $!
  done
  for k in 1 2; do
    local d=$TMP/$a$k
    for _ in $(seq 100); do [ -S "$d/a.sock" ] && [ -f "$d/10-corral.conflist" ] && break; sleep 0.1; done
    if ! [ -f "$d/10-corral.conflist" ]; then
      echo "multinode.sh: agent of node $a$k did not write its CNI config:" >&2
      cat "$d/agent.log" >&2
      exit 1
    fi
    local conf
    conf=$(jq -c '.plugins[0] + {cniVersion: .cniVersion, name: .name}' "$d/10-corral.conflist")
    cni "$a" $k "$REL/corral-cni" "$conf" >/dev/null
  done
}

pod_ip() { ip -n ${P}$1p$2 -j addr show dev eth0 | jq -r '.[0].addr_info[] | select(.family=="inet") | .local'; }

declare -A DST
build() { # arm
  local a=${1:0:1}
  underlay "$a"
  case $1 in
    reference) build_reference "$a" ;;
    native | vxlan) build_corral "$a" "$1" ;;
  esac
  DST[$1]=$(pod_ip "$a" 2)
  srv ${P}${a}p2 iperf3 -s -p 5201 >/dev/null 2>&1 &
  PIDS+=($!); disown $!
  srv ${P}${a}p2 "$REL/corral-loadgen" net server --listen 0.0.0.0:7001 --max-secs 86400 >/dev/null 2>&1 &
  PIDS+=($!); disown $!
  # the path works before anything is measured
  local ok=
  for _ in $(seq 50); do
    if ip netns exec ${P}${a}p1 "$REL/corral-loadgen" net rr --target "${DST[$1]}:7001" --secs 0.05 >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.1
  done
  [ -n "$ok" ] || { echo "multinode.sh: arm $1: pod 1 cannot reach pod 2 (${DST[$1]})" >&2; exit 1; }
}

measure() { # round position arm
  local a=${3:0:1} dst=${DST[$3]} ip rr load
  load=$(cut -d' ' -f1 /proc/loadavg)
  ip=$(cli ${P}${a}p1 iperf3 -c "$dst" -p 5201 -t "$SECS" -O 0.5 -J)
  rr=$(cli ${P}${a}p1 "$REL/corral-loadgen" net rr --target "$dst:7001" --secs "$SECS" --interval-us 0)
  jq -cn --argjson ip "$ip" --argjson rr "$rr" --arg arm "$3" --argjson round "$1" \
    --argjson pos "$2" --argjson load "$load" --argjson secs "$SECS" '{
      bench: "multinode", round: $round, pos: $pos, arm: $arm, secs: $secs, load1: $load,
      tcp_mbps: ($ip.end.sum_received.bits_per_second / 1e6),
      tcp_retransmits: $ip.end.sum_sent.retransmits,
      tcp_cpu_client_pct: $ip.end.cpu_utilization_percent.host_total,
      tcp_cpu_server_pct: $ip.end.cpu_utilization_percent.remote_total,
      rr_tps: ($rr.packets / $rr.secs),
      rr_p50_us: $rr.rtt_us.p50, rr_p99_us: $rr.rtt_us.p99}' | tee -a "$OUT"
}

# eBPF time on the pod veths of arm $1 while it runs one TCP and one RR
# measurement (kernel.bpf_stats_enabled on only for this)
attribute() { # arm
  local a=${1:0:1} ids=() dst=${DST[$1]}
  for k in 1 2; do
    for dev in $(ip -n ${P}${a}n$k -j link show type veth | jq -r '.[].ifname' | grep -v '^ul0$'); do
      mapfile -t -O "${#ids[@]}" ids < <(ip netns exec ${P}${a}n$k bpftool -j net show dev "$dev" |
        jq -r '.[] | (.tc // []) + (.tcx // []) | .[] | .prog_id // .id')
    done
  done
  [ ${#ids[@]} -gt 0 ] || { echo "multinode.sh: no programs found on arm $1's pod veths" >&2; exit 1; }
  snap() { local c=0 t=0; for i in "${ids[@]}"; do
    read -r rc rt < <(bpftool -j prog show id "$i" | jq -r '"\(.run_cnt // 0) \(.run_time_ns // 0)"')
    c=$((c + rc)); t=$((t + rt)); done; echo "$c $t"; }
  STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled)
  sysctl -qw kernel.bpf_stats_enabled=1
  local s0 s1 s2 ip rr
  s0=$(snap)
  ip=$(cli ${P}${a}p1 iperf3 -c "$dst" -p 5201 -t "$SECS" -J)
  s1=$(snap)
  rr=$(cli ${P}${a}p1 "$REL/corral-loadgen" net rr --target "$dst:7001" --secs "$SECS" --interval-us 0)
  s2=$(snap)
  sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS"; STATS_WAS=
  jq -cn --argjson ip "$ip" --argjson rr "$rr" --arg arm "$1" --arg progs "${ids[*]}" \
    --arg s0 "$s0" --arg s1 "$s1" --arg s2 "$s2" '
    ($s0 | split(" ") | map(tonumber)) as $a | ($s1 | split(" ") | map(tonumber)) as $b |
    ($s2 | split(" ") | map(tonumber)) as $c | {
      bench: "multinode-ebpf", arm: $arm, progs: $progs,
      tcp_bytes: $ip.end.sum_received.bytes, tcp_prog_runs: ($b[0] - $a[0]),
      tcp_prog_ns: ($b[1] - $a[1]),
      tcp_prog_ns_per_mb: (($b[1] - $a[1]) / ($ip.end.sum_received.bytes / 1e6)),
      tcp_cpu_ns_per_mb: (($ip.end.cpu_utilization_percent.host_total + $ip.end.cpu_utilization_percent.remote_total)
        / 100 * $ip.end.sum_received.seconds * 1e9 / ($ip.end.sum_received.bytes / 1e6)),
      rr_transactions: $rr.packets, rr_prog_runs: ($c[0] - $b[0]),
      rr_prog_runs_per_transaction: (($c[0] - $b[0]) / $rr.packets),
      rr_prog_ns_per_run: (($c[1] - $b[1]) / ([($c[0] - $b[0]), 1] | max)),
      rr_prog_ns_per_transaction: (($c[1] - $b[1]) / $rr.packets),
      rr_p50_us: $rr.rtt_us.p50}' | tee -a "$OUT"
}

PERMS=("0 1 2" "1 2 0" "2 0 1" "0 2 1" "2 1 0" "1 0 2")
for arm in "${ARMS[@]}"; do build "$arm"; done
echo "# multinode: $ROUNDS rounds x ${#ARMS[@]} arms x (${SECS} s TCP + ${SECS} s RR), client CPU $CLIENT_CPU, server CPU $SERVER_CPU, nice $NICE" >&2
for r in $(seq "$ROUNDS"); do
  pos=0
  for i in ${PERMS[$(( (r - 1) % 6 ))]}; do
    measure "$r" $pos "${ARMS[$i]}"
    pos=$((pos + 1))
  done
done
if [ "$ATTRIBUTE" = 1 ]; then
  for arm in native vxlan; do attribute $arm; done
fi
python3 "$ROOT/dataplane/bench/paired.py" "$OUT"
