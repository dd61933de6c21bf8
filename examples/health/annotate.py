#!/usr/bin/env python3
"""Adds corral.io/health.* annotations (seeded random cpu/memory/disk_latency) to the
Nodes of a corral-loadgen manifest, for the NodeHealth overhead benchmark.

Usage: python3 annotate.py IN/nodes.yaml OUT/nodes.yaml
"""
import random
import sys

random.seed(1)
out = []
with open(sys.argv[1]) as f:
    for line in f:
        out.append(line)
        if line == "metadata:\n":
            out.append(
                "  annotations:\n"
                f"    corral.io/health.cpu: '{random.uniform(20, 95):.1f}'\n"
                f"    corral.io/health.memory: '{random.uniform(30, 92):.1f}'\n"
                f"    corral.io/health.disk_latency: '{random.uniform(1, 60):.1f}'\n"
            )
with open(sys.argv[2], "w") as f:
    f.write("".join(out))
