#!/usr/bin/env bash
# Batch-session cost A/B in instructions (valgrind --tool=callgrind): `simulate` of a
# gen_running_gangs.py workload with 1 and with 5 sessions (`--cycles`), so that
# (Ir(5) - Ir(1)) / 4 is the cost of one warm session (nothing pending after the
# first; the running index carried). YAML loading is excluded (--zero-before the
# health attachment `simulate` runs right after loading).
#
# Usage: bash benches/gang-session/callgrind-ab.sh WORKLOAD.yaml BIN_DIR...
#   prints per BIN_DIR: Ir with 1 and 5 sessions, Ir per warm session, and the
#   inclusive Ir of corral_batch::run_sessions_with and RunningIndex::refresh.
set -euo pipefail
W=${1:?usage: callgrind-ab.sh WORKLOAD.yaml BIN_DIR...}
shift
D=$(mktemp -d /tmp/corral-gang-cg.XXXXXX)
trap 'rm -rf "$D"' EXIT
ir() { # FILE SYMBOL-REGEX: inclusive Ir (PROGRAM TOTALS for "TOTAL"); awk reads all of
  # callgrind_annotate's output (an early exit would SIGPIPE it and, with pipefail, stop the script)
  callgrind_annotate --inclusive=yes "$1" 2>/dev/null | awk -v s="$2" '
    s == "TOTAL" && /PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }
    s != "TOTAL" && $0 ~ s && /\]$/ { gsub(",", "", $1); t += $1 } END { if (s != "TOTAL") print t + 0 }'
}
printf '| build | Ir, 1 session | Ir, 5 sessions | Ir per warm session | run_sessions_with 1 / 5 | RunningIndex::refresh 1 / 5 |\n|---|---:|---:|---:|---:|---:|\n'
for B in "$@"; do
  for c in 1 5; do
    valgrind --tool=callgrind --callgrind-out-file="$D/cg.$c" \
      --zero-before=corral_scheduler::health::attach_static_view \
      "$B/corral-scheduler" simulate "$W" --cycles $c -o json >"$D/out.$c.json" 2>"$D/err.$c"
  done
  t1=$(ir "$D/cg.1" TOTAL); t5=$(ir "$D/cg.5" TOTAL)
  r1=$(ir "$D/cg.1" 'corral_batch::run_sessions_with \['); r5=$(ir "$D/cg.5" 'corral_batch::run_sessions_with \[')
  x1=$(ir "$D/cg.1" 'RunningIndex::refresh \['); x5=$(ir "$D/cg.5" 'RunningIndex::refresh \[')
  printf '| %s | %s | %s | %s | %s / %s | %s / %s |\n' "$B" "$t1" "$t5" $(( (t5 - t1) / 4 )) "$r1" "$r5" "$x1" "$x5"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d.pop("stats",None); print(json.dumps(d,sort_keys=True))' "$D/out.5.json" > "$D/decisions.$(echo "$B" | md5sum | cut -c1-8)"
done
n=$(cat "$D"/decisions.* | sort -u | wc -l)
echo "decisions (placements, unschedulable, podgroups, queues) identical across builds: $([ "$n" = 1 ] && echo yes || echo NO)"
