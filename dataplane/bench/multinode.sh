#!/usr/bin/env bash
# Cross-node pod-to-pod benchmark (BENCHMARKS.md "Multi-node"): two node
# netns on an underlay bridge (MTU 1500), one pod each; per arm TCP
# throughput (iperf3) and request/response RTT (corral-loadgen net rr):
#   reference: bridge + host-local per node, static routes to the other
#              node's pod subnet via its underlay address
#   native:    corral-cni + corral-agent --routing native (routes from Node
#              objects)
#   vxlan:     corral-cni + corral-agent --routing vxlan
# Arms alternate per round on fresh nodes. Run as root from the repository
# root after `cargo build --release -p corral-dataplane -p corral-loadgen`.
# Usage: ROUNDS=3 SECS=5 bash dataplane/bench/multinode.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
REL=${REL:-$ROOT/target/release}
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}
ID=$(( $$ % 4096 ))
P=cbm$ID
TMP=$(mktemp -d)
PIDS=()

cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  for n in $(ip netns list | awk '{print $1}' | grep "^$P" || true); do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$n" || true
  done
  rm -rf /sys/fs/bpf/corral-bench-$ID-* "$TMP"
}
trap cleanup EXIT

ul() { ip netns exec ${P}u "$@"; }

underlay() {
  ip netns add ${P}u
  ul ip link add br0 type bridge
  ul ip link set br0 up
  for k in 1 2; do
    ip netns add ${P}n$k
    ip -n ${P}n$k link set lo up
    ip netns exec ${P}n$k sysctl -qw net.ipv4.ip_forward=1
    ip -n ${P}n$k link add ul0 type veth peer name ulp$k
    ip -n ${P}n$k link set ulp$k netns ${P}u
    ul ip link set ulp$k master br0
    ul ip link set ulp$k up
    ip -n ${P}n$k addr add 192.0.2.$k/24 dev ul0
    ip -n ${P}n$k link set ul0 up
    ip netns add ${P}p$k
  done
}

teardown() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  PIDS=()
  for n in $(ip netns list | awk '{print $1}' | grep "^$P" || true); do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$n"
  done
  rm -rf /sys/fs/bpf/corral-bench-$ID-* "$TMP"/n* "$TMP"/ipam*
}

cni() { # node plugin-binary conf
  echo "$3" | ip netns exec ${P}n$1 env CNI_COMMAND=ADD CNI_CONTAINERID=bench$1 \
    CNI_NETNS=/var/run/netns/${P}p$1 CNI_IFNAME=eth0 CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=b;K8S_POD_NAME=p$1" \
    CNI_PATH=/usr/lib/cni:$REL "$2"
}

arm_reference() {
  for k in 1 2; do
    local o=$(( 3 - k ))
    cni $k /usr/lib/cni/bridge "{\"cniVersion\":\"1.0.0\",\"name\":\"ref\",\"type\":\"bridge\",\"bridge\":\"cbr0\",\"isGateway\":true,
      \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$TMP/ipam$k\",\"ranges\":[[{\"subnet\":\"198.19.$k.0/24\"}]],\"routes\":[{\"dst\":\"0.0.0.0/0\"}]}}" >/dev/null
    ip -n ${P}n$k route add 198.19.$o.0/24 via 192.0.2.$o
  done
}

arm_corral() { # mode
  local nodes=""
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
    local d=$TMP/n$k
    mkdir -p "$d/man"
    echo "$nodes" >"$d/man/nodes.yaml"
    echo "{\"cniVersion\":\"1.0.0\",\"name\":\"corral\",\"plugins\":[{\"type\":\"corral-cni\",\"mtu\":1500,
      \"agentSocket\":\"$d/a.sock\",\"dataDir\":\"$d/cni\",\"logFile\":\"$d/cni.log\",
      \"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$d/ipam\",\"ranges\":[[{\"subnet\":\"198.18.0.0/24\"}]]}}]}" >"$d/tpl.conflist"
    nsenter --net=/var/run/netns/${P}n$k "$REL/corral-agent" --socket "$d/a.sock" \
      --pin-dir /sys/fs/bpf/corral-bench-$ID-$k --state-dir "$d/state" --manifests "$d/man" \
      --node-name n$k --routing "$1" --cni-conf "$d/10-corral.conflist" \
      --cni-conf-template "$d/tpl.conflist" >/dev/null 2>"$d/agent.log" &
    PIDS+=($!)
  done
  for k in 1 2; do
    local d=$TMP/n$k
    for _ in $(seq 100); do [ -S "$d/a.sock" ] && [ -f "$d/10-corral.conflist" ] && break; sleep 0.1; done
    local conf
    conf=$(jq -c '.plugins[0] + {cniVersion: .cniVersion, name: .name}' "$d/10-corral.conflist")
    cni $k "$REL/corral-cni" "$conf" >/dev/null
  done
}

pod_ip() { ip -n ${P}p$1 -j addr show dev eth0 | jq -r '.[0].addr_info[] | select(.family=="inet") | .local'; }

measure() { # label
  local dst; dst=$(pod_ip 2)
  ip netns exec ${P}p2 iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
  ip netns exec ${P}p2 "$REL/corral-loadgen" net server --listen 0.0.0.0:7001 --max-secs 120 >/dev/null 2>&1 &
  PIDS+=($!)
  sleep 0.5
  local mbps rr
  mbps=$(ip netns exec ${P}p1 iperf3 -c "$dst" -p 5201 -t "$SECS" -O 1 -J | jq '.end.sum_received.bits_per_second / 1e6 | floor')
  rr=$(ip netns exec ${P}p1 "$REL/corral-loadgen" net rr --target "$dst:7001" --secs "$SECS" --interval-us 1000)
  echo "$1 $mbps $(jq .rtt_us.p50 <<<"$rr") $(jq .rtt_us.p99 <<<"$rr")" >>"$TMP/results"
  echo "round: $1 tcp_mbps=$mbps rr_p50_us=$(jq .rtt_us.p50 <<<"$rr") rr_p99_us=$(jq .rtt_us.p99 <<<"$rr")"
}

: >"$TMP/results.keep"
for r in $(seq "$ROUNDS"); do
  for arm in reference native vxlan; do
    underlay
    case $arm in
      reference) arm_reference ;;
      *) arm_corral $arm ;;
    esac
    : >"$TMP/results"
    measure $arm
    cat "$TMP/results" >>"$TMP/results.keep"
    teardown
  done
done
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "### cross-node pod to pod, $ROUNDS rounds x $SECS s (median [samples])"
for arm in reference native vxlan; do
  t=$(awk -v a=$arm '$1==a {print $2}' "$TMP/results.keep")
  p50=$(awk -v a=$arm '$1==a {print $3}' "$TMP/results.keep")
  p99=$(awk -v a=$arm '$1==a {print $4}' "$TMP/results.keep")
  echo "$arm tcp_mbps=$(median <<<"$t") [$(echo $t)] rr_p50_us=$(median <<<"$p50") [$(echo $p50)] rr_p99_us=$(median <<<"$p99") [$(echo $p99)]"
done
