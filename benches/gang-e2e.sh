#!/usr/bin/env bash
# Gang path through the API, end to end with three processes (release binaries):
# `corral-test-apiserver` with NODES nodes and RUNNING running pods (and LATENCY_MS
# added to every request), `corral-scheduler run` against it, and `corral-loadgen k8s`
# creating PODS pods at RATE/s in gangs of GANG (1 = plain pods). Appends the loadgen
# report (latency CDF, created/bound timeline) plus the run's parameters and the
# scheduler's peak RSS as one JSON line to RESULTS (input of the `plots` bin) and
# prints a markdown row.
#
# Usage: bash benches/gang-e2e.sh RESULTS.jsonl BIN_DIR GANG LATENCY_MS [NODES] [RUNNING] [PODS] [RATE]
#   defaults: 5000 nodes, 150000 running, 20000 pods at 4000/s.
#   PERF_RECORD=FILE: record the scheduler with `perf record -g` into FILE.
#   LABEL=...: free text stored in the JSON line (e.g. the build: base / branch).
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${1:?usage: gang-e2e.sh RESULTS.jsonl BIN_DIR GANG LATENCY_MS [NODES] [RUNNING] [PODS] [RATE]}
BIN=${2:?BIN_DIR}
GANG=${3:?GANG}
LAT=${4:?LATENCY_MS}
NODES=${5:-5000}
RUNNING=${6:-150000}
PODS=${7:-20000}
RATE=${8:-4000}
LABEL=${LABEL:-}
# Whole gangs only: a last gang short of its minMember would never be bound.
PODS=$(( PODS / GANG * GANG ))
for b in corral-test-apiserver corral-scheduler corral-loadgen; do
  [ -x "$BIN/$b" ] || { echo "gang-e2e.sh: $BIN/$b missing (build it first)" >&2; exit 1; }
done
D=$(mktemp -d /tmp/corral-gang-e2e.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$D"
}
trap cleanup EXIT

"$BIN/corral-test-apiserver" --kubeconfig-out "$D/kc" --nodes "$NODES" --running "$RUNNING" \
  --latency-ms "$LAT" 2>"$D/apiserver.log" &
PIDS+=($!)
for _ in $(seq 600); do [ -s "$D/kc" ] && break; sleep 0.2; done
[ -s "$D/kc" ] || { echo "gang-e2e.sh: API server did not start" >&2; cat "$D/apiserver.log" >&2; exit 1; }

PORT=$(( 20000 + RANDOM % 20000 ))
SCHED=("$BIN/corral-scheduler" run --kubeconfig "$D/kc" --listen "127.0.0.1:$PORT" --leader-elect=false)
/usr/bin/time -v -o "$D/time.txt" "${SCHED[@]}" 2>"$D/sched.log" &
PIDS=($! "${PIDS[@]}")
t0=$(date +%s.%N)
for _ in $(seq 1200); do
  curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null || { echo "gang-e2e.sh: scheduler not ready" >&2; tail "$D/sched.log" >&2; exit 1; }
ready_s=$(echo "$(date +%s.%N) - $t0" | bc)
load=$(cut -d' ' -f1 /proc/loadavg)
if [ -n "${PERF_RECORD:-}" ]; then
  # Profile the scheduler during the load phase only.
  perf record -g -o "$PERF_RECORD" -p "$(pgrep -P "${PIDS[0]}")" 2>"$D/perf.log" &
  PERF=$!
fi
"$BIN/corral-loadgen" k8s --kubeconfig "$D/kc" --pods "$PODS" --rate "$RATE" --gang-size "$GANG" \
  --concurrency 256 --timeout-seconds 180 >"$D/report.json" 2>"$D/loadgen.log" || true
if [ -n "${PERF:-}" ]; then kill -INT "$PERF"; wait "$PERF" || true; fi
metrics=$(curl -fs "http://127.0.0.1:$PORT/metrics" || true)
algo=$(printf '%s\n' "$metrics" | awk '/^corral_scheduler_scheduling_algorithm_seconds_total /{print $2}')
# Stop the scheduler (SIGTERM to the child of `time`) to get its peak RSS.
pkill -TERM -P "${PIDS[0]}" 2>/dev/null || true
wait "${PIDS[0]}" 2>/dev/null || true
rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$D/time.txt")
# The scheduler's CPU time (user + system, whole run incl. the initial sync): on a
# shared machine the wall-clock rates depend on how much CPU it was given.
cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {print s + 0}' "$D/time.txt")
python3 - "$D/report.json" "$RESULTS" "$NODES" "$RUNNING" "$RATE" "$GANG" "$LAT" "${rss:-0}" "$load" "${cpu:-0}" "${algo:-0}" "$ready_s" "$LABEL" <<'EOF'
import json, sys, time
rep, results, nodes, running, rate, gang, lat, rss, load, cpu, algo, ready, label = sys.argv[1:]
try:
    r = json.load(open(rep))
except Exception as e:
    sys.exit("gang-e2e.sh: no loadgen report (%s)" % e)
r.update({"bench": "e2e", "build": "release", "procs": 3, "nodes": int(nodes),
          "running": int(running), "rate": float(rate), "gang": int(gang),
          "api_latency_ms": float(lat), "sched_peak_rss_mb": int(rss) / 1024,
          "load": float(load), **({"variant": label} if label else {}), "sched_algorithm_s_total": float(algo or 0),
          "sched_ready_s": float(ready), "sched_cpu_s": float(cpu), "unix_time": int(time.time())})
open(results, "a").write(json.dumps(r) + "\n")
c = r["creation_to_bind_ms"]
print("| %s | %s | %s | %.0f | %.0f | %.0f %% | %.0f / %.0f / %.0f | %.0f | %.1f | %s%s |" % (
    label, gang, lat, r["created_per_second"], r["bound_per_second"],
    100 * r["bound_per_second"] / max(r["created_per_second"], 1), c["p50"], c["p99"], c["max"],
    int(rss) / 1024, float(cpu), load, " TIMED OUT" if r["timed_out"] else ""))
EOF
