#!/usr/bin/env bash
# Scheduler throughput through the CLI on corral-loadgen workloads (release build).
# Prints a markdown table: workload, nodes, pods, pods/s, p50/p99 decision latency.
# Usage: bash benches/scheduler-cli.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/corral-bench}
cargo build --release -q -p corral-scheduler -p corral-loadgen
L=target/release/corral-loadgen
S=target/release/corral-scheduler
run() { # name profile nodes pods running
  local d="$OUT/$1"
  [ -d "$d" ] || $L cluster --profile "$2" --nodes "$3" --pods "$4" --running "$5" --seed 1 --out "$d" >/dev/null
  $S simulate "$d" --output json --seed 1 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin); s = d["stats"]; l = s["decision_latency_us"]
row = [sys.argv[1], s["nodes"], s["pods"], len(d["placements"]), "%.0f" % s["pods_per_second"],
       "%.2f" % (l["p50"] / 1000), "%.2f" % (l["p99"] / 1000), s["conflicts"]]
print("| " + " | ".join(str(x) for x in row) + " |")' "$1"
}
echo "| workload | nodes | pending pods | placed | pods/s | p50 ms | p99 ms | conflicts |"
echo "|---|---|---|---|---|---|---|---|"
run basic-500 basic 500 1000 0
run basic-5000 basic 5000 10000 0
run basic-15000 basic 15000 10000 0
run affinity-5000 affinity 5000 5000 0
run spread-5000 spread 5000 5000 0
run mixed-1000 mixed 1000 2000 4000
