#!/bin/bash
# NodeHealth overhead on SchedulingBasic (BENCHMARKS.md, "Overhead on SchedulingBasic"):
# alternates runs without and with the NodeHealth profile (order flipped every pair)
# and prints the median and best pods/s of each and the load average.
#
# Usage: examples/health/overhead.sh [REPS] [BINARY] [DIR]
#   DIR: the annotated cluster (default /tmp/basic5kh; see BENCHMARKS.md for how to
#   generate it with corral-loadgen and examples/health/annotate.py).
set -euo pipefail
reps=${1:-9}
bin=${2:-target/release/corral-scheduler}
dir=${3:-/tmp/basic5kh}
cfg=$(dirname "$0")/profile-with-health.yaml
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq 1 "$reps"); do
  if [ $((i % 2)) = 1 ]; then order="off on"; else order="on off"; fi
  for m in $order; do
    args=()
    if [ "$m" = on ]; then args=(--config "$cfg"); fi
    "$bin" simulate "$dir" "${args[@]}" -o json 2>/dev/null |
      python3 -c "import json,sys; print('$m', json.load(sys.stdin)['stats']['pods_per_second'])" >>"$out"
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" <<'PY'
import statistics, sys
runs = {"off": [], "on": []}
for line in open(sys.argv[1]):
    m, v = line.split()
    runs[m].append(float(v))
off, on = runs["off"], runs["on"]
mo, mn = statistics.median(off), statistics.median(on)
print(f"default profile: median {mo:.0f} best {max(off):.0f} pods/s  {sorted(round(x) for x in off)}")
print(f"+ NodeHealth:    median {mn:.0f} best {max(on):.0f} pods/s  {sorted(round(x) for x in on)}")
print(f"median delta {100 * (mn - mo) / mo:+.1f} %, best delta {100 * (max(on) - max(off)) / max(off):+.1f} %")
PY
