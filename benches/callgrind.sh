#!/usr/bin/env bash
# Instructions per scheduled pod (valgrind --tool=callgrind), for regressions below the
# wall-clock noise of a shared machine: instruction counts are repeatable whatever
# else the machine does.
#
# Usage: bash benches/callgrind.sh [BIN_DIR] [WORKLOAD...]
#   BIN_DIR   directory holding corral-scheduler and corral-loadgen (release build;
#             default target/release)
#   WORKLOAD  any of basic affinity spread mixed gang (default: basic affinity
#             spread gang)
# Env: NODES (default 2000), PODS (default 2000; basic uses 2x), GANG (gang size,
#      default 8), WORK (workload cache, default /tmp/corral-callgrind), JSON=FILE
#      (also write the results as JSON), SIMARGS (extra `simulate` arguments, e.g.
#      `--batch-size 64`: under valgrind the default latency budget measures every
#      batch as slow and keeps batches at their minimum).
#
# Workloads (generated once per size with `corral-loadgen cluster --seed 1`):
#   basic     SchedulingBasic: NODES nodes, 2*PODS identical pods
#   affinity  70 % required hostname anti-affinity, 30 % preferred variants
#   spread    zone DoNotSchedule + hostname ScheduleAnyway, groups of 30
#   mixed     loadgen's production mix (node pools, a tainted AI pool, web, batch,
#             data, AI and system pods, PriorityClasses)
#   gang      the basic nodes + PODS pods in Volcano PodGroups of GANG (minMember
#             GANG, queue default): the batch-session path
# Counted: everything after the snapshot is built (`--zero-before` the health
# attachment that `simulate` runs right after loading), i.e. scheduling, the session
# layer and writing the JSON report; YAML loading is excluded. Per pod = instructions
# / placed pods.
set -euo pipefail
BIN=${1:-target/release}
shift || true
WORKLOADS=("$@")
[ ${#WORKLOADS[@]} -eq 0 ] && WORKLOADS=(basic affinity spread gang)
NODES=${NODES:-2000}
PODS=${PODS:-2000}
GANG=${GANG:-8}
WORK=${WORK:-/tmp/corral-callgrind}
command -v valgrind >/dev/null || { echo "valgrind not found" >&2; exit 1; }
for b in corral-scheduler corral-loadgen; do
  [ -x "$BIN/$b" ] || { echo "$BIN/$b not found (cargo build --release -p corral-scheduler -p corral-loadgen)" >&2; exit 1; }
done
# The zeroing point must exist as a function (not inlined) in this build.
nm -C "$BIN/corral-scheduler" | grep ' T corral_scheduler::health::attach_static_view$' >/dev/null || {
  echo "corral_scheduler::health::attach_static_view not found in $BIN/corral-scheduler" >&2
  exit 1
}
mkdir -p "$WORK"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

gen() { # profile nodes pods dir
  [ -s "$4/pods.yaml" ] || "$BIN/corral-loadgen" cluster --profile "$1" --nodes "$2" --pods "$3" --seed 1 --out "$4" >/dev/null
}

dir_for() {
  local w=$1
  case $w in
    basic) d="$WORK/basic-$NODES-$((2 * PODS))"; gen basic "$NODES" $((2 * PODS)) "$d" ;;
    affinity | spread | mixed) d="$WORK/$w-$NODES-$PODS"; gen "$w" "$NODES" "$PODS" "$d" ;;
    gang)
      d="$WORK/gang-$NODES-$PODS-$GANG"
      if [ ! -s "$d/podgroups.yaml" ]; then
        gen basic "$NODES" "$PODS" "$d.src"
        mkdir -p "$d"
        cp "$d.src/nodes.yaml" "$d.src/namespaces.yaml" "$d/"
        python3 - "$d.src/pods.yaml" "$d" "$GANG" <<'EOF'
import sys, yaml
src, out, g = sys.argv[1], sys.argv[2], int(sys.argv[3])
pods = [p for p in yaml.safe_load_all(open(src)) if p]
groups = []
for i, p in enumerate(pods):
    name = f"gang-{i // g}"
    p["metadata"].setdefault("annotations", {})["scheduling.k8s.io/group-name"] = name
    if i % g == 0:
        groups.append({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
                       "metadata": {"name": name, "namespace": p["metadata"]["namespace"]},
                       "spec": {"minMember": min(g, len(pods) - i), "queue": "default"}})
yaml.safe_dump_all(pods, open(f"{out}/pods.yaml", "w"))
yaml.safe_dump_all(groups, open(f"{out}/podgroups.yaml", "w"))
EOF
        rm -rf "$d.src"
      fi
      ;;
    *) echo "unknown workload $w (basic affinity spread mixed gang)" >&2; exit 1 ;;
  esac
  echo "$d"
}

echo "| workload | nodes | pods placed | instructions (after load) | instructions / pod |"
echo "|---|---|---|---|---|"
: >"$TMP/rows"
for w in "${WORKLOADS[@]}"; do
  d=$(dir_for "$w")
  valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" \
    --zero-before='corral_scheduler::health::attach_static_view' \
    "$BIN/corral-scheduler" simulate "$d" --output json --seed 1 ${SIMARGS:-} >"$TMP/out.json" 2>"$TMP/cg.err" || {
    cat "$TMP/cg.err" >&2
    exit 1
  }
  python3 - "$TMP" "$w" "$NODES" <<'EOF' | tee -a "$TMP/rows"
import json, re, sys
tmp, w, nodes = sys.argv[1], sys.argv[2], int(sys.argv[3])
rep = json.load(open(f"{tmp}/out.json"))
placed = len(rep.get("placements", []))
total = None
for line in open(f"{tmp}/cg.out"):
    m = re.match(r"(?:totals|summary):\s+(\d+)", line)
    if m:
        total = int(m.group(1))
if total is None or placed == 0:
    sys.exit(f"{w}: no totals or no placements")
print(f"| {w} | {nodes:,} | {placed:,} | {total:,} | {total // placed:,} |")
EOF
done
if [ -n "${JSON:-}" ]; then
  python3 - "$TMP/rows" "$JSON" <<'EOF'
import json, sys
rows = []
for line in open(sys.argv[1]):
    c = [x.strip().replace(",", "") for x in line.strip().strip("|").split("|")]
    rows.append({"workload": c[0], "nodes": int(c[1]), "placed": int(c[2]),
                 "instructions": int(c[3]), "per_pod": int(c[4])})
json.dump(rows, open(sys.argv[2], "w"), indent=1)
EOF
fi
