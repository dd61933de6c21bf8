#!/usr/bin/env python3
"""Generates the health example: 50 nodes, a pod template, health series.

node-07 degrades linearly from CPU 40 % to 95 % over 5 minutes (from t=5m), stays
at 95 % for 10 minutes, then recovers to 40 %. node-23 flaps around the 80 %
threshold (75 % / 85 %, switching every 20 s). Run: python3 gen.py
"""

N = 50
with open("nodes.yaml", "w") as f:
    for i in range(N):
        f.write(f"""---
apiVersion: v1
kind: Node
metadata:
  name: node-{i:02d}
  labels:
    kubernetes.io/hostname: node-{i:02d}
    topology.kubernetes.io/zone: zone-{i % 3}
status:
  allocatable: {{cpu: "64", memory: 256Gi, pods: "250"}}
  capacity: {{cpu: "64", memory: 256Gi, pods: "250"}}
""")

rows = ["time,node,signal,value"]
for t in range(0, 1501, 10):
    if t < 300:
        v = 40.0
    elif t < 600:
        v = 40.0 + 55.0 * (t - 300) / 300.0
    elif t < 1200:
        v = 95.0
    else:
        v = 40.0
    rows.append(f"{t},node-07,cpu,{v:.1f}")
for t in range(0, 1501, 10):
    v = 85.0 if (t // 20) % 2 == 0 else 75.0
    rows.append(f"{t},node-23,cpu,{v:.1f}")
with open("health.csv", "w") as f:
    f.write("\n".join(rows) + "\n")
