#!/usr/bin/env python3
"""SVG plot of the paired ratios of dataplane/bench/multinode.sh results.

Usage: python3 dataplane/bench/plot_paired.py OUT.svg LABEL=RESULTS.jsonl...
           [--reference ARM] [--seed N]

For every results file (one run) and every arm other than the reference:
the per-round ratio arm / reference (same round) of TCP throughput and of
RR p50, drawn as its median (dot), interquartile range (thick bar) and
percentile-bootstrap 95 % confidence interval of the median (thin line),
computed exactly as paired.py prints them (same helpers, same seed), with
the 0.95-1.05 band of the "within 5 %" target shaded. Plain SVG written by
hand (no plotting dependency). Exit 1 on unreadable input, 2 on bad usage.
"""
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paired import (METRICS, UsageError, derived, parse_options,  # noqa: E402
                    ratio_summary, read_rows)

PANELS = [
    ("tcp_mbps", "TCP throughput: arm / reference (higher is better)"),
    ("rr_p50_us", "RR p50 latency: arm / reference (lower is better)"),
]
COLORS = {"native": "#1f77b4", "vxlan": "#d62728"}


def load(path):
    rounds = {}
    for row in read_rows(path):
        if row.get("bench") == "multinode":
            rounds.setdefault(row["round"], {})[row["arm"]] = row
    return rounds


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg(rows, ref):
    # rows: [(label, arm, {key: summary})]
    left, panel_w, gap, top, row_h = 170, 300, 130, 60, 26
    width = left + len(PANELS) * (panel_w + gap)
    height = top + len(rows) * row_h + 70
    vals = [s[k] for _, _, ss in rows for s in ss.values() if s for k in ("lo", "hi", "q1", "q3")]
    xmin = min([0.9] + vals) - 0.02
    xmax = max([1.1] + vals) + 0.02
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="15">'
           f'Multi-node pod to pod: per-round ratio arm / {esc(ref)} (median, IQR, 95 % CI)</text>']
    for p, (key, title) in enumerate(PANELS):
        x0 = left + p * (panel_w + gap)

        def X(v, x0=x0):
            return x0 + (v - xmin) / (xmax - xmin) * panel_w

        y_end = top + len(rows) * row_h
        out.append(f'<text x="{x0 + panel_w / 2}" y="{top - 22}" text-anchor="middle">{esc(title)}</text>')
        out.append(f'<rect x="{X(0.95):.1f}" y="{top - 8}" width="{X(1.05) - X(0.95):.1f}" '
                   f'height="{y_end - top + 8}" fill="#2ca02c" fill-opacity="0.12"/>')
        out.append(f'<rect x="{x0}" y="{top - 8}" width="{panel_w}" height="{y_end - top + 8}" '
                   f'fill="none" stroke="#888"/>')
        # ticks every 0.05
        t = round(xmin / 0.05 + 0.4999) * 0.05
        while t <= xmax + 1e-9:
            xt = X(t)
            out.append(f'<line x1="{xt:.1f}" y1="{top - 8}" x2="{xt:.1f}" y2="{y_end}" '
                       f'stroke="#ddd" stroke-width="{1.5 if abs(t - 1) < 1e-9 else 0.7}"/>')
            out.append(f'<text x="{xt:.1f}" y="{y_end + 16}" text-anchor="middle" '
                       f'font-size="10">{t:.2f}</text>')
            t += 0.05
        out.append(f'<line x1="{X(1.0):.1f}" y1="{top - 8}" x2="{X(1.0):.1f}" y2="{y_end}" stroke="#333"/>')
        out.append(f'<text x="{x0 + panel_w + 6}" y="{top - 8}" font-size="10" fill="#444">'
                   f'median [95 % CI]</text>')
        for r, (label, arm, ss) in enumerate(rows):
            y = top + r * row_h + row_h / 2 - 4
            if p == 0:
                out.append(f'<text x="{left - 8}" y="{y + 4}" text-anchor="end">{esc(label)}: '
                           f'{esc(arm)}</text>')
            s = ss.get(key)
            if not s:
                continue
            c = COLORS.get(arm, "#555")
            out.append(f'<line x1="{X(s["lo"]):.1f}" y1="{y}" x2="{X(s["hi"]):.1f}" y2="{y}" '
                       f'stroke="{c}" stroke-width="1.5"/>')
            for e in ("lo", "hi"):
                out.append(f'<line x1="{X(s[e]):.1f}" y1="{y - 5}" x2="{X(s[e]):.1f}" y2="{y + 5}" '
                           f'stroke="{c}" stroke-width="1.5"/>')
            out.append(f'<line x1="{X(s["q1"]):.1f}" y1="{y}" x2="{X(s["q3"]):.1f}" y2="{y}" '
                       f'stroke="{c}" stroke-width="6" stroke-opacity="0.35"/>')
            out.append(f'<circle cx="{X(s["median"]):.1f}" cy="{y}" r="4" fill="{c}">'
                       f'<title>{esc(label)} {esc(arm)}: median {s["median"]:.3f}, IQR '
                       f'{s["q1"]:.3f}-{s["q3"]:.3f}, 95 % CI {s["lo"]:.3f}-{s["hi"]:.3f}, '
                       f'n={s["n"]}</title></circle>')
            out.append(f'<text x="{x0 + panel_w + 6}" y="{y + 4}" font-size="10" '
                       f'fill="#444">{s["median"]:.3f} [{s["lo"]:.3f}-{s["hi"]:.3f}]</text>')
    ly = top + len(rows) * row_h + 40
    out.append(f'<text x="10" y="{ly}" font-size="11">dot = median of per-round ratios; thick bar = '
               f'IQR; whiskers = bootstrap 95 % CI of the median (10,000 resamples); green band = '
               f'0.95-1.05 (target: native within 5 %)</text>')
    out.append(f'<text x="10" y="{ly + 16}" font-size="11">generated by '
               f'dataplane/bench/plot_paired.py from benches/results/multinode-*.jsonl</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv):
    try:
        ref, seed, rest = parse_options(argv, "plot_paired.py")
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
    out, runs = (rest[0], rest[1:]) if rest else (None, [])
    for a in runs:
        if "=" not in a:
            print(f"plot_paired.py: {a}: expected LABEL=RESULTS.jsonl", file=sys.stderr)
            return 2
    runs = [tuple(a.split("=", 1)) for a in runs]
    if out is None or not runs:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    rows = []
    for label, path in runs:
        try:
            rounds = load(path)
        except (OSError, ValueError) as e:
            print(f"plot_paired.py: {e}", file=sys.stderr)
            return 1
        if not any(ref in rs for rs in rounds.values()):
            print(f"plot_paired.py: {path}: no rows of the reference arm {ref!r}", file=sys.stderr)
            return 1
        # paired.py draws every bootstrap from one generator (seeded per
        # invocation), metrics outer, arms in order of appearance inner:
        # replay the same draws so the figures equal its output for this file
        rng = random.Random(seed)
        file_arms = []
        for rs in rounds.values():
            for a in rs:
                if a not in file_arms:
                    file_arms.append(a)
            for row in rs.values():
                derived(row)
        panel_keys = dict(PANELS)
        for arm in file_arms:
            if arm != ref:
                rows.append((label, arm, {}))
        for key, _label, _unit, _higher in METRICS:
            for arm in file_arms:
                if arm == ref:
                    continue
                summary = ratio_summary(rounds, arm, ref, key, rng)
                if key in panel_keys:
                    next(ss for lab, a, ss in rows if lab == label and a == arm)[key] = summary
    with open(out, "w", encoding="utf-8") as f:
        f.write(svg(rows, ref))
    for label, arm, ss in rows:
        for key, s in ss.items():
            if s:
                print(f"{label} {arm} {key}: median {s['median']:.3f} IQR {s['q1']:.3f}-{s['q3']:.3f} "
                      f"95% CI {s['lo']:.3f}-{s['hi']:.3f} n={s['n']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
