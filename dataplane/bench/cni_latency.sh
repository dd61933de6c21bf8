#!/usr/bin/env bash
# corral-cni ADD/DEL latency (BENCHMARKS.md, CNI section), side by side in one run:
#   corral-cni standalone (host-local IPAM)  vs  bridge + host-local
#   vs  bridge + host-local + corral-cni chained.
# Run as root from the repository root after
#   cargo build --release -p corral-dataplane
# (or BIN=target/debug). Usage: N=200 bash dataplane/bench/cni_latency.sh
# Needs: iproute2, containernetworking-plugins, util-linux nsenter.
# Creates only network namespaces (198.18.0.0/15) and removes them on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/target/release}
REF=/usr/lib/cni
N=${N:-200}
ID=$(( $$ % 4096 ))
NODE=ccb$ID
POD=ccb${ID}p
TMP=$(mktemp -d)
PIN=/sys/fs/bpf/corral-cnibench-$ID
AGENT_PID=
cleanup() {
  [ -n "$AGENT_PID" ] && kill -9 "$AGENT_PID" 2>/dev/null || true
  ip netns del "$POD" 2>/dev/null || true
  ip netns del "$NODE" 2>/dev/null || true
  rm -rf "$PIN" "$TMP"
}
trap cleanup EXIT
ip netns add "$NODE"; ip netns exec "$NODE" ip link set lo up
ip netns add "$POD"
nsenter --net=/var/run/netns/$NODE "$BIN/corral-agent" --socket "$TMP/agent.sock" \
  --pin-dir "$PIN" --state-dir "$TMP/state" 2>"$TMP/agent.log" &
AGENT_PID=$!
for _ in $(seq 100); do [ -S "$TMP/agent.sock" ] && break; sleep 0.1; done

IPAM4='"ipam":{"type":"host-local","dataDir":"'$TMP'/ipam","ranges":[[{"subnet":"198.18.0.0/24"}]]}'
CORRAL='{"cniVersion":"1.0.0","name":"bench","type":"corral-cni","agentSocket":"'$TMP'/agent.sock","dataDir":"'$TMP'/cni","logFile":"'$TMP'/cni.log",'$IPAM4'}'
BRIDGE='{"cniVersion":"1.0.0","name":"bench","type":"bridge","bridge":"ccbr0","isGateway":true,'$IPAM4'}'

# exec one plugin like a runtime; prints elapsed microseconds
call() { # plugin cmd cid conf
  local t0 t1 out
  t0=$(date +%s%N)
  out=$(echo "$4" | CNI_COMMAND=$2 CNI_CONTAINERID=$3 CNI_NETNS=/var/run/netns/$POD \
    CNI_IFNAME=eth0 CNI_PATH=$REF:$BIN nsenter --net=/var/run/netns/$NODE "$1") \
    || { echo "$1 $2 failed: $out" >&2; exit 1; }
  t1=$(date +%s%N)
  printf "%s" "$out" >"$TMP/last"
  echo $(( (t1 - t0) / 1000 ))
}
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int(NR*p/100); if (i<1) i=1; if (i>NR) i=NR; printf "%.1f", a[i]/1000}'; }

: >"$TMP/sa" ; : >"$TMP/sd"; : >"$TMP/ba"; : >"$TMP/bd"; : >"$TMP/ca"; : >"$TMP/cd"
for i in $(seq "$N"); do
  call "$BIN/corral-cni" ADD s$i "$CORRAL" >>"$TMP/sa"
  call "$BIN/corral-cni" DEL s$i "$CORRAL" >>"$TMP/sd"
  call "$REF/bridge" ADD b$i "$BRIDGE" >>"$TMP/ba"
  call "$REF/bridge" DEL b$i "$BRIDGE" >>"$TMP/bd"
  # chained: bridge then corral-cni with prevResult (a runtime's chain)
  a=$(call "$REF/bridge" ADD c$i "$BRIDGE"); prev=$(tr -d "\n" <"$TMP/last")
  CH='{"cniVersion":"1.0.0","name":"bench","type":"corral-cni","agentSocket":"'$TMP'/agent.sock","dataDir":"'$TMP'/cni","logFile":"'$TMP'/cni.log","prevResult":'$prev'}'
  b=$(call "$BIN/corral-cni" ADD c$i "$CH"); echo $(( a + b )) >>"$TMP/ca"
  a=$(call "$BIN/corral-cni" DEL c$i "$CH"); b=$(call "$REF/bridge" DEL c$i "$BRIDGE")
  echo $(( a + b )) >>"$TMP/cd"
done
echo "| plugin (N=$N, $(nproc) CPUs) | ADD p50 ms | ADD p99 ms | DEL p50 ms | DEL p99 ms |"
echo "|---|---|---|---|---|"
for k in "corral-cni standalone:s" "bridge + host-local:b" "bridge + host-local + corral-cni chained:c"; do
  n=${k%%:*}; f=${k##*:}
  echo "| $n | $(pct 50 <"$TMP/${f}a") | $(pct 99 <"$TMP/${f}a") | $(pct 50 <"$TMP/${f}d") | $(pct 99 <"$TMP/${f}d") |"
done
