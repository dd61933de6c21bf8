#!/bin/sh
# Run one benchmark command with the noise discipline of run.sh and
# multinode.sh: in a session of its own whose autogroup carries nice NICE
# (the kernel runs with sched_autogroup_enabled=1, so a plain `nice` does
# nothing against other sessions' builds), pinned to CPUS with taskset.
#   NICE=-20 CPUS=0 sh dataplane/bench/pinned.sh target/debug/examples/lb_bench 5
# CPUS empty: no pinning (e.g. a test whose sender and receiver threads
# must not share one CPU). Root for negative NICE. Exit status: the command's.
set -eu
NICE=${NICE:--20}
CPUS=${CPUS-0}
[ $# -gt 0 ] || { echo "usage: [NICE=-20] [CPUS=0] $0 COMMAND [ARGS...]" >&2; exit 2; }
exec setsid --wait sh -c '
  n=$1 c=$2; shift 2
  if [ -w /proc/self/autogroup ]; then
    echo "$n" >/proc/self/autogroup || { echo "pinned.sh: cannot set autogroup nice $n (root?)" >&2; exit 1; }
  fi
  if [ -n "$c" ]; then exec nice -n "$n" taskset -c "$c" "$@"; fi
  exec nice -n "$n" "$@"' sh "$NICE" "$CPUS" "$@"
