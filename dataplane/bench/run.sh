#!/usr/bin/env bash
# Corral data plane benchmarks (BENCHMARKS.md "## Data plane").
# Run as root from the repository root, after
#   cargo build --release -p corral-dataplane -p corral-loadgen
# Usage: bash dataplane/bench/run.sh [overhead|tbf|policy|all]
# Needs: iproute2, iperf3, jq, iptables, containernetworking-plugins.
# Creates only network namespaces (named ${NS_PREFIX:-cb}n<id>*, addresses from
# 198.18.0.0/15) and removes them on exit.
set -euo pipefail
WHAT=${1:-all}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
AGENT=$ROOT/target/release/corral-agent
LG=$ROOT/target/release/corral-loadgen
SECS=${SECS:-5}
ID=$(( $$ % 4096 ))
NODE=${NS_PREFIX:-cb}n$ID
TMP=$(mktemp -d)
PIN=/sys/fs/bpf/corral-bench-$ID
AGENT_PID=

cleanup() {
  [ -n "$AGENT_PID" ] && kill -9 "$AGENT_PID" 2>/dev/null || true
  for n in $(ip netns list | awk '{print $1}' | grep "^$NODE" || true); do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$n" || true
  done
  rm -rf "$PIN" "$TMP"
}
trap cleanup EXIT

nx() { ip netns exec "$NODE" "$@"; }

# pod N: netns ${NODE}pN, host veth cbv${ID}pN, 198.18.N.2 behind 198.18.N.1
setup() {
  ip netns add "$NODE"
  nx ip link set lo up
  nx sysctl -qw net.ipv4.ip_forward=1
  for n in 1 2; do
    ip netns add "${NODE}p$n"
    ip -n "${NODE}p$n" link set lo up
    wire $n
  done
}

# (re)creates pod N's veth pair, as a new pod's CNI ADD would: an arm
# never inherits qdiscs/filters an earlier arm left on the host veth (the
# bandwidth plugin's DEL leaves its TBF and a mirred filter to the deleted
# ifb behind)
wire() { # n
  local n=$1 p=${NODE}p$1 h=cbv${ID}p$1
  nx ip link del "$h" 2>/dev/null || true
  nx ip link add "$h" type veth peer name cbt$n
  nx ip link set cbt$n netns "$p"
  nx ip addr add 198.18.$n.1/24 dev "$h"
  nx ip link set "$h" up
  ip -n "$p" link set cbt$n name eth0
  ip -n "$p" addr add 198.18.$n.2/24 dev eth0
  ip -n "$p" link set eth0 up
  ip -n "$p" route add default via 198.18.$n.1
}

# fails the run when pod N's host veth carries anything but the default
# qdisc (a leftover of an earlier arm)
assert_fresh() { # n
  local h=cbv${ID}p$1
  if nx tc filter show dev "$h" ingress | grep -q . || nx tc qdisc show dev "$h" | grep -qE 'tbf|ingress|clsact'; then
    echo "pod $1's veth $h still carries an earlier arm's qdisc/filter" >&2
    nx tc qdisc show dev "$h" >&2
    exit 1
  fi
}

start_agent() {
  mkdir -p "$TMP/man"; rm -f "$TMP/a.sock"
  nsenter --net=/var/run/netns/$NODE "$AGENT" --socket "$TMP/a.sock" --pin-dir "$PIN" \
    --state-dir "$TMP/state" --manifests "$TMP/man" >/dev/null 2>"$TMP/agent.log" &
  AGENT_PID=$!
  for _ in $(seq 100); do [ -S "$TMP/a.sock" ] && break; sleep 0.1; done
}

stop_agent() {
  kill -9 "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=
  rm -rf "$PIN" "$TMP/state"
}

call() { "$AGENT" call --socket "$TMP/a.sock" "$1" >/dev/null; }

register() { # n extra-json
  call "{\"op\":\"register\",\"endpoint\":{\"ifname\":\"cbv${ID}p$1\",\"namespace\":\"x\",\"name\":\"p$1\",\"labels\":{\"app\":\"p$1\"},\"ips\":[\"198.18.$1.2\"]$2}}"
}

server() { # netns port
  ip netns exec "$1" "$LG" net server --listen "0.0.0.0:$2" --max-secs 600 >/dev/null 2>&1 &
  sleep 0.3
}

lg() { local ns=$1; shift; ip netns exec "$ns" "$LG" net "$@"; }

# iperf3 client on CLIENT_CPU, server on SERVER_CPU, both at nice NICE in an
# autogroup of their own (with kernel.sched_autogroup_enabled=1 a plain nice
# does not count against other sessions; see multinode.sh)
CLIENT_CPU=${CLIENT_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
NICE=${NICE:-0}
prio() { # cpu netns cmd...
  setsid --wait sh -c '[ ! -w /proc/self/autogroup ] || echo "$1" >/proc/self/autogroup || exit 1
    n=$1 c=$2 ns=$3; shift 3; exec ip netns exec "$ns" nice -n "$n" taskset -c "$c" "$@"' sh "$NICE" "$@"
}

iperf_tcp() { # client-ns server-ns ip port [extra]
  prio "$SERVER_CPU" "$2" iperf3 -s -1 -p "$4" >/dev/null 2>&1 &
  sleep 0.3
  prio "$CLIENT_CPU" "$1" iperf3 -c "$3" -p "$4" -t "$SECS" -O 1 -J ${5:-} | jq '.end.sum_received.bits_per_second / 1e6'
}

iperf_udp_pps() { # client-ns server-ns ip port
  prio "$SERVER_CPU" "$2" iperf3 -s -1 -p "$4" >/dev/null 2>&1 &
  sleep 0.3
  prio "$CLIENT_CPU" "$1" iperf3 -c "$3" -p "$4" -u -b 0 -l 64 -t "$SECS" -O 1 -J \
    | jq '(.end.sum.packets - .end.sum.lost_packets) / .end.sum.seconds | floor'
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

overhead() {
  local rounds=${ROUNDS:-3}
  echo "### overhead (no limits): programs attached vs none, $rounds alternating rounds of $SECS s"
  local p1=${NODE}p1 port=6000
  start_agent
  : >"$TMP/t0"; : >"$TMP/t1"; : >"$TMP/u0"; : >"$TMP/u1"
  for _ in $(seq "$rounds"); do
    port=$((port + 2))
    iperf_tcp "$p1" "$NODE" 198.18.1.1 $port >>"$TMP/t0"
    iperf_udp_pps "$p1" "$NODE" 198.18.1.1 $((port + 1)) >>"$TMP/u0"
    register 1 ""
    port=$((port + 2))
    iperf_tcp "$p1" "$NODE" 198.18.1.1 $port >>"$TMP/t1"
    iperf_udp_pps "$p1" "$NODE" 198.18.1.1 $((port + 1)) >>"$TMP/u1"
    call "{\"op\":\"deregister\",\"ifname\":\"cbv${ID}p1\"}"
  done
  stop_agent
  local t0 t1 u0 u1
  t0=$(median <"$TMP/t0"); t1=$(median <"$TMP/t1"); u0=$(median <"$TMP/u0"); u1=$(median <"$TMP/u1")
  echo "tcp_mbps samples none=[$(tr '\n' ' ' <"$TMP/t0")] corral=[$(tr '\n' ' ' <"$TMP/t1")]"
  echo "udp64_pps samples none=[$(tr '\n' ' ' <"$TMP/u0")] corral=[$(tr '\n' ' ' <"$TMP/u1")]"
  echo "tcp_mbps median none=$t0 corral=$t1 ratio=$(echo "scale=3; $t1/$t0" | bc)"
  echo "udp64_pps median none=$u0 corral=$u1 ratio=$(echo "scale=3; $u1/$u0" | bc)"
}

# pod 1 egress limited to RATE; bulk TCP pod1->node saturates it while a
# request/response flow pod1->node measures RTT
latency_run() { # label
  local p1=${NODE}p1
  server "$NODE" 7001
  local alone
  alone=$(lg "$p1" tcp --target 198.18.1.1:7001 --secs "$SECS" | jq '.bits_per_second / 1e6')
  lg "$p1" tcp --target 198.18.1.1:7001 --secs $((SECS + 2)) >/dev/null &
  local bulk=$!
  sleep 1
  local rr
  rr=$(lg "$p1" rr --target 198.18.1.1:7001 --secs "$SECS" --interval-us 2000)
  wait $bulk
  echo "$1 rate_alone_mbps=$alone rr_p50_us=$(jq .rtt_us.p50 <<<"$rr") rr_p99_us=$(jq .rtt_us.p99 <<<"$rr") rr_count=$(jq .rtt_us.count <<<"$rr")"
}

tbf() {
  local rate=${RATE:-100000000}
  echo "### accuracy and latency at pod egress limit $((rate / 1000000)) Mbit/s"
  latency_run "none"
  # reference CNI bandwidth plugin (TBF + ifb for pod egress)
  local burst=$((rate / 8 * 3 / 10 * 8)) # same bucket depth as Corral (300 ms), in bits
  local conf
  conf=$(cat <<JSON
{"cniVersion":"1.0.0","name":"bench","type":"bandwidth",
 "runtimeConfig":{"bandwidth":{"egressRate":$rate,"egressBurst":$burst,"ingressRate":$rate,"ingressBurst":$burst}},
 "prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"cbv${ID}p1"},{"name":"eth0","sandbox":"/var/run/netns/${NODE}p1"}],
   "ips":[{"address":"198.18.1.2/24","interface":1}]}}
JSON
)
  echo "$conf" | nx env CNI_COMMAND=ADD CNI_CONTAINERID=bench$ID CNI_NETNS=/var/run/netns/${NODE}p1 \
    CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni /usr/lib/cni/bandwidth >/dev/null
  latency_run "bandwidth-cni(tbf)"
  echo "$conf" | nx env CNI_COMMAND=DEL CNI_CONTAINERID=bench$ID CNI_NETNS=/var/run/netns/${NODE}p1 \
    CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni /usr/lib/cni/bandwidth >/dev/null || true
  # a real pod's veth goes away with the pod: the next arm gets a new one
  wire 1
  assert_fresh 1
  start_agent
  register 1 ",\"egress\":{\"rate_bps\":$rate},\"ingress\":{\"rate_bps\":$rate}"
  latency_run "corral"
  stop_agent
}

policy_yaml() { # n rules
  local n=$1
  echo "apiVersion: networking.k8s.io/v1"
  echo "kind: NetworkPolicy"
  echo "metadata: {name: scale, namespace: x}"
  echo "spec:"
  echo "  podSelector: {matchLabels: {app: p2}}"
  echo "  ingress:"
  for i in $(seq 0 $((n - 2))); do
    echo "  - from: [{ipBlock: {cidr: 198.19.$((i / 250)).$((i % 250))/32}}]"
    echo "    ports: [{port: $((1000 + i % 60000))}]"
  done
  echo "  - from: [{ipBlock: {cidr: 198.18.1.0/24}}]"
  echo "    ports: [{port: 6100, endPort: 6200}]"
}

policy() {
  local rounds=${ROUNDS:-3}
  echo "### policy scale: TCP pod1 -> pod2 throughput (median of $rounds x $SECS s), ingress policy on pod2 with N rules"
  local p1=${NODE}p1 p2=${NODE}p2 port=6100
  for n in 10 1000 10000; do
    start_agent
    register 1 ""
    register 2 ""
    policy_yaml $n >"$TMP/man/p.yaml"
    local t0 t1
    t0=$(date +%s.%N)
    call '{"op":"reconcile"}'
    t1=$(date +%s.%N)
    : >"$TMP/c"; : >"$TMP/i"
    for _ in $(seq "$rounds"); do
      port=$((port + 1))
      iperf_tcp "$p1" "$p2" 198.18.2.2 $port >>"$TMP/c"
    done
    # a port outside the policy must be refused
    local denied=yes
    if ip netns exec "$p1" timeout 2 bash -c "exec 3<>/dev/tcp/198.18.2.2/6300" 2>/dev/null; then denied=NO; fi
    stop_agent
    # same rules in iptables (nft backend), FORWARD chain, linear match
    {
      echo "*filter"
      echo ":FORWARD DROP [0:0]"
      for i in $(seq 0 $((n - 2))); do
        echo "-A FORWARD -d 198.18.2.2 -s 198.19.$((i / 250)).$((i % 250))/32 -p tcp --dport $((1000 + i % 60000)) -j ACCEPT"
      done
      echo "-A FORWARD -d 198.18.2.2 -s 198.18.1.0/24 -p tcp --dport 6100:6200 -j ACCEPT"
      echo "-A FORWARD -s 198.18.2.2 -j ACCEPT"
      echo "COMMIT"
    } | nx iptables-restore
    for _ in $(seq "$rounds"); do
      port=$((port + 1))
      iperf_tcp "$p1" "$p2" 198.18.2.2 $port >>"$TMP/i"
    done
    nx iptables -F FORWARD
    nx iptables -P FORWARD ACCEPT
    echo "rules=$n corral_mbps=$(median <"$TMP/c") [$(tr '\n' ' ' <"$TMP/c")] corral_compile_apply_s=$(echo "$t1 - $t0" | bc) other_port_denied=$denied iptables_mbps=$(median <"$TMP/i") [$(tr '\n' ' ' <"$TMP/i")]"
  done
}

if [ "$WHAT" = all ]; then
  # each benchmark on a fresh node
  for b in overhead tbf policy; do bash "$0" "$b"; done
  exit 0
fi
setup
case $WHAT in
  overhead) overhead ;;
  tbf) tbf ;;
  policy) policy ;;
  *) echo "unknown benchmark $WHAT" >&2; exit 2 ;;
esac
