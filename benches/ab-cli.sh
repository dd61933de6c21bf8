#!/usr/bin/env bash
# Same-run A/B of two corral-scheduler binaries on the same workload directories:
# runs A and B alternately (R rounds), prints per workload the median pods/s with
# min–max and the median p99 decision latency, checks that both binaries place every
# pod on the same node (`--seed 1`), and (with CALLGRIND=1) the total instruction
# count of one `simulate` per binary (valgrind --tool=callgrind; repeatable whatever
# else the machine does).
# Usage: bash benches/ab-cli.sh BIN_A BIN_B ROUNDS WORKLOAD_DIR...
# Workload dirs: `corral-loadgen cluster --profile P --nodes N --pods M --seed 1 --out DIR`
# (or any simulate input, e.g. Volcano PodGroups + pods).
set -euo pipefail
A=$1 B=$2 R=$3
shift 3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "| workload | A pods/s median [min–max] | B pods/s median [min–max] | B/A | A p99 ms | B p99 ms | same placements |"
echo "|---|---|---|---|---|---|---|"
for d in "$@"; do
  w=$(basename "$d")
  for i in $(seq "$R"); do
    for x in A B; do
      bin=$A; [ "$x" = B ] && bin=$B
      "$bin" simulate "$d" --output json --seed 1 2>/dev/null >"$TMP/$w.$x.$i.json"
    done
  done
  python3 - "$TMP" "$w" "$R" <<'EOF'
import json, statistics, sys
tmp, w, r = sys.argv[1], sys.argv[2], int(sys.argv[3])
def load(x, i):
    return json.load(open(f"{tmp}/{w}.{x}.{i}.json"))
res = {}
for x in "AB":
    runs = [load(x, i) for i in range(1, r + 1)]
    pps = [d["stats"]["pods_per_second"] for d in runs]
    p99 = [d["stats"]["decision_latency_us"]["p99"] / 1000 for d in runs]
    res[x] = (pps, p99, sorted((p["pod"], p["node"]) for p in runs[0]["placements"]))
same = "yes" if res["A"][2] == res["B"][2] else "NO"
ma, mb = statistics.median(res["A"][0]), statistics.median(res["B"][0])
fmt = lambda v: f"{statistics.median(v):,.0f} [{min(v):,.0f}–{max(v):,.0f}]"
print(f"| {w} | {fmt(res['A'][0])} | {fmt(res['B'][0])} | {mb / ma:.2f} | "
      f"{statistics.median(res['A'][1]):.2f} | {statistics.median(res['B'][1]):.2f} | {same} |")
EOF
done
if [ "${CALLGRIND:-0}" = 1 ]; then
  echo
  echo "| workload | A instructions | B instructions | B/A |"
  echo "|---|---|---|---|"
  for d in "$@"; do
    w=$(basename "$d")
    for x in A B; do
      bin=$A; [ "$x" = B ] && bin=$B
      valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.$x" "$bin" simulate "$d" \
        --output json --seed 1 >/dev/null 2>"$TMP/cg.$x.err"
      grep -o 'Collected : [0-9]*' "$TMP/cg.$x.err" | awk '{print $3}' >"$TMP/ir.$x"
    done
    python3 -c "import sys; a, b = int(open('$TMP/ir.A').read()), int(open('$TMP/ir.B').read()); print(f'| $w | {a:,} | {b:,} | {b / a:.4f} |')"
  done
fi
