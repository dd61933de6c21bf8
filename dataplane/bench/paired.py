#!/usr/bin/env python3
"""Paired-round summary of dataplane/bench/multinode.sh results.

Usage: python3 dataplane/bench/paired.py RESULTS.jsonl [--reference ARM] [--seed N]

Input: JSON lines {"bench":"multinode","round":R,"arm":A,<metrics>} (other
lines are ignored; "multinode-ebpf" lines are printed as they are). Every
round measured every arm once, back to back, so load that drifts over
seconds to minutes hits all arms of a round alike. For each metric and arm:
the median over rounds with its interquartile range, and the per-round
ratio arm / reference (same round) summarised by its median, interquartile
range and a percentile-bootstrap 95 % confidence interval of that median
(rounds resampled with replacement, 10,000 resamples, fixed seed: the
output is reproducible). A round missing an arm is left out of the ratios.
Exit 1 on unreadable input, 2 on bad usage.
"""
import json
import random
import statistics
import sys

# metric, label, unit, higher is better
METRICS = [
    ("tcp_mbps", "TCP throughput", "Mbit/s", True),
    ("tcp_cpu_us_per_mb", "TCP CPU time per MB (client+server process)", "us/MB", False),
    ("rr_tps", "RR transactions/s (64 B, back to back)", "1/s", True),
    ("rr_p50_us", "RR p50", "us", False),
    ("rr_p99_us", "RR p99", "us", False),
]


def quantile(xs, q):
    s = sorted(xs)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def bootstrap_median_ci(xs, rng, n=10_000):
    k = len(xs)
    meds = sorted(statistics.median(rng.choices(xs, k=k)) for _ in range(n))
    return meds[int(0.025 * n)], meds[int(0.975 * n) - 1]


def derived(row):
    c, s, mbps = row.get("tcp_cpu_client_pct"), row.get("tcp_cpu_server_pct"), row.get("tcp_mbps")
    if None not in (c, s, mbps) and mbps > 0:
        row["tcp_cpu_us_per_mb"] = (c + s) / 100 * 1e6 / (mbps / 8)
    return row


class UsageError(Exception):
    """Bad command line (exit 2)."""


def parse_options(argv, prog):
    """(reference arm, seed, other arguments) from argv[1:]."""
    args = list(argv[1:])
    ref, seed, rest = "reference", 1, []
    while args:
        a = args.pop(0)
        if a in ("--reference", "--seed"):
            if not args:
                raise UsageError(f"{prog}: {a} needs a value")
            v = args.pop(0)
            if a == "--reference":
                ref = v
            else:
                try:
                    seed = int(v)
                except ValueError:
                    raise UsageError(f"{prog}: --seed {v}: not an integer") from None
        else:
            rest.append(a)
    return ref, seed, rest


def read_rows(path):
    """The JSON rows of a results file (lines not starting with "{" skipped), each
    (line number, row); "multinode" rows must have "round" and "arm". Raises
    OSError or ValueError naming the file and line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: {e}") from e
            if row.get("bench") == "multinode":
                for key in ("round", "arm"):
                    if key not in row:
                        raise ValueError(f"{path}:{i}: field {key!r} missing")
            out.append(row)
    return out


def ratio_summary(rounds, arm, ref, key, rng):
    """Per-round ratio arm / reference of `key` over `rounds` (round -> arm -> row):
    median, quartiles, bootstrap 95 % CI of the median and count; None without
    a paired round."""
    ratios = [rs[arm][key] / rs[ref][key] for rs in rounds.values()
              if arm in rs and ref in rs and rs[arm].get(key) is not None and rs[ref].get(key)]
    if not ratios:
        return None
    lo, hi = bootstrap_median_ci(ratios, rng)
    return {"median": statistics.median(ratios), "q1": quantile(ratios, 0.25),
            "q3": quantile(ratios, 0.75), "lo": lo, "hi": hi, "n": len(ratios)}


def main(argv):
    try:
        ref, seed, files = parse_options(argv, "paired.py")
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
    if not files:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    rounds = {}  # round -> arm -> row
    arms = []
    for f in files:
        try:
            rows = read_rows(f)
        except (OSError, ValueError) as e:
            print(f"paired.py: {e}", file=sys.stderr)
            return 1
        for row in rows:
            if row.get("bench") == "multinode-ebpf":
                print("ebpf", json.dumps(row))
                continue
            if row.get("bench") != "multinode":
                continue
            arm = row["arm"]
            if arm not in arms:
                arms.append(arm)
            rounds.setdefault((f, row["round"]), {})[arm] = derived(row)
    if ref not in arms:
        print(f"paired.py: no rows of the reference arm {ref!r} (arms: {arms})", file=sys.stderr)
        return 1
    rng = random.Random(seed)
    loads = [r["load1"] for rs in rounds.values() for r in rs.values() if "load1" in r]
    print(f"rounds={len(rounds)} arms={','.join(arms)} reference={ref}"
          + (f" load1 median={statistics.median(loads):.1f} range={min(loads):.1f}-{max(loads):.1f}" if loads else ""))
    for key, label, unit, higher in METRICS:
        print(f"\n{label} [{unit}] ({'higher' if higher else 'lower'} is better)")
        for arm in arms:
            xs = [rs[arm][key] for rs in rounds.values() if arm in rs and rs[arm].get(key) is not None]
            if not xs:
                continue
            line = (f"  {arm:<10} median {statistics.median(xs):10.1f}"
                    f"  IQR {quantile(xs, 0.25):.1f}-{quantile(xs, 0.75):.1f}"
                    f"  min-max {min(xs):.1f}-{max(xs):.1f}  n={len(xs)}")
            if arm != ref:
                r = ratio_summary(rounds, arm, ref, key, rng)
                if r:
                    line += (f"\n  {'':<10} {arm}/{ref} per round: median {r['median']:.3f}"
                             f"  IQR {r['q1']:.3f}-{r['q3']:.3f}"
                             f"  95% CI {r['lo']:.3f}-{r['hi']:.3f}  n={r['n']}")
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
