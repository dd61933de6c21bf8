#!/usr/bin/env bash
# Instructions per scheduled pod of the volume bench's two arms (benches/volumes.rs),
# counted by callgrind from the entry of `Scheduler::schedule_all` (all threads; the
# cluster and the volume objects are built before and not counted; the bench's
# placement check and teardown after it are): noise-free where wall clock is not.
#
# Usage: bash benches/callgrind-volumes.sh [BENCH_BIN] [NODES PODS]
#   BENCH_BIN  the release bench binary (default: the newest
#              target/release/deps/volumes-*; build it with
#              `cargo bench -p corral-benches --bench volumes --no-run`)
#   NODES PODS default 5000 10000
set -euo pipefail
BIN=${1:-$(ls -t target/release/deps/volumes-* 2>/dev/null | grep -v '\.d$' | head -1)}
NODES=${2:-5000}
PODS=${3:-10000}
[ -x "$BIN" ] || { echo "bench binary not found: $BIN" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind not found" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "| arm | nodes | pods placed | instructions from schedule_all | instructions / pod |"
echo "|---|---|---|---|---|"
for arm in plain claims; do
  CORRAL_BENCH_ARM=$arm valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" \
    --zero-before='corral_engine::scheduler::Scheduler::schedule_all' \
    "$BIN" 1 "$NODES" "$PODS" >"$TMP/out.txt" 2>"$TMP/cg.err" || { cat "$TMP/cg.err" >&2; exit 1; }
  python3 - "$TMP" "$arm" "$NODES" <<'PY'
import re, sys
tmp, arm, nodes = sys.argv[1], sys.argv[2], int(sys.argv[3])
placed = None
for line in open(f"{tmp}/out.txt"):
    m = re.search(r"placed\s+(\d+)/", line)
    if m:
        placed = int(m.group(1))
total = None
for line in open(f"{tmp}/cg.out"):
    m = re.match(r"(?:totals|summary):\s+(\d+)", line)
    if m:
        total = int(m.group(1))
if not total or not placed:
    sys.exit(f"{arm}: no totals or no placements")
print(f"| {'no claims' if arm == 'plain' else 'one claim per pod'} | {nodes:,} | {placed:,} | {total:,} | {total // placed:,} |")
PY
  cp "$TMP/cg.out" "/tmp/callgrind-volumes-$arm.out" 2>/dev/null || true
done
