#!/usr/bin/env bash
# How cost grows with cluster size: every loadgen workload through `simulate` at
# several cluster sizes (release build), with pods/s, p99 decision latency and the
# process's peak RSS (GNU time). Appends one JSON line per run to RESULTS (the input
# of `cargo run -p corral-benches --bin plots`) and prints a markdown row.
#
# Usage: bash benches/scaling.sh RESULTS.jsonl [BIN_DIR] [REPEATS] [SIZES...]
#   BIN_DIR: where corral-scheduler and corral-loadgen are (default target/release;
#            not built here: build them first, one release build at a time).
#   SIZES:   node counts (default 500 5000 15000); pending pods = 2 × nodes capped at
#            10,000 (basic/mixed) or 5,000 (affinity/spread), as scheduler_perf's
#            5,000-node workloads; WORKLOADS=... overrides the workload list, PODS=N
#            the pending pods of every run (workloads then go to DIR/W-NODES-N).
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${1:?usage: scaling.sh RESULTS.jsonl [BIN_DIR] [REPEATS] [SIZES...]}
BIN=${2:-target/release}
REPEATS=${3:-3}
shift $(( $# >= 3 ? 3 : $# ))
SIZES=${*:-500 5000 15000}
WORKLOADS=${WORKLOADS:-basic affinity spread mixed}
L=$BIN/corral-loadgen
S=$BIN/corral-scheduler
[ -x "$L" ] && [ -x "$S" ] || { echo "scaling.sh: $L or $S missing (build them first)" >&2; exit 1; }
OUT=${SCALING_DIR:-/tmp/corral-scaling}
mkdir -p "$OUT"
echo "| workload | nodes | pending | pods/s | p99 ms | peak RSS MB | process CPU s | load |"
echo "|---|---|---|---|---|---|---|---|"
for w in $WORKLOADS; do
  for n in $SIZES; do
    cap=10000
    case $w in affinity|spread) cap=5000 ;; esac
    pods=$(( n * 2 < cap ? n * 2 : cap ))
    d="$OUT/$w-$n"
    if [ -n "${PODS:-}" ]; then
      pods=$PODS
      d="$OUT/$w-$n-$pods"
    fi
    [ -d "$d" ] || "$L" cluster --profile "$w" --nodes "$n" --pods "$pods" --seed 1 --out "$d" >/dev/null
    for _ in $(seq "$REPEATS"); do
      load=$(cut -d' ' -f1 /proc/loadavg)
      /usr/bin/time -v -o "$OUT/time.txt" "$S" simulate "$d" --output json --seed 1 2>/dev/null >"$OUT/sim.json"
      rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$OUT/time.txt")
      # CPU time (user + system) of the whole process, loading included: on a shared
      # machine the wall-clock pods/s depend on how much CPU the run was given.
      cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {print s + 0}' "$OUT/time.txt")
      python3 - "$w" "$n" "$rss" "$load" "$OUT/sim.json" "$RESULTS" "$cpu" <<'EOF'
import json, sys
w, n, rss, load, sim, results, cpu = sys.argv[1:]
d = json.load(open(sim)); s = d["stats"]; l = s["decision_latency_us"]
line = {"bench": "cluster", "workload": w, "nodes": int(n), "pods": s["pods"],
        "placed": len(d["placements"]), "pods_per_second": s["pods_per_second"],
        "p99_ms": l["p99"] / 1000, "peak_rss_mb": int(rss) / 1024, "load": float(load),
        "process_cpu_s": float(cpu)}
open(results, "a").write(json.dumps(line) + "\n")
print("| %s | %s | %s | %.0f | %.2f | %.0f | %.2f | %s |" % (w, n, s["pods"], s["pods_per_second"],
      l["p99"] / 1000, int(rss) / 1024, float(cpu), load))
EOF
    done
  done
done
