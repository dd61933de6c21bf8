#!/usr/bin/env python3
"""Simulate inputs for the batch A/B (`benches/ab-cli.sh`), shaped like the
criterion cases of benches/batch.rs: 5,000 nodes (32 CPU / 128 Gi / 110 pods, 3
zones); pods request 1 CPU / 2 Gi.

  gang-5000       20 Volcano PodGroups x 500 pods (minMember 500, queue default)
  queues-1000x10  1,000 queues x 10 PodGroups x 5 pods (minMember 5)
  running150k     150,000 running pods (30 per node: 120,000 plain 500m / 1 Gi in
                  4 queues x 10 namespaces, 300 running gangs of 100) + a
                  20 x 500 gang burst
  hypernodes-5000 3 tiers of HyperNodes (100 racks of 50 nodes, 10 spines of 10
                  racks, 1 zone) + 100 hard gangs x 32 pods (8 CPU each,
                  highestTierAllowed 1: each inside one rack)
  hypernodes-5000-flat  the same gangs without HyperNodes / networkTopology

Usage: python3 benches/batch-workloads.py OUT_DIR
"""
import json
import os
import sys

out = sys.argv[1]
NODES = 5000


def node(i):
    name = f"node-{i}"
    labels = {"kubernetes.io/hostname": name,
              "topology.kubernetes.io/zone": f"zone-{i % 3}",
              "rack": f"rack-{i // 50}"}
    alloc = {"cpu": "32", "memory": "128Gi", "pods": "110"}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "status": {"allocatable": alloc, "capacity": alloc}}


def pod(ns, name, cpu="1", mem="2Gi", group=None, node_name=None, queue=None, created=0):
    ann = {}
    if group:
        ann["scheduling.k8s.io/group-name"] = group
    if queue:
        ann["scheduling.volcano.sh/queue-name"] = queue
    p = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": name, "namespace": ns, "annotations": ann,
                      "creationTimestamp": f"2026-01-01T00:{created // 60 % 60:02d}:{created % 60:02d}Z"},
         "spec": {"schedulerName": "corral",
                  "containers": [{"name": "c", "image": "img",
                                  "resources": {"requests": {"cpu": cpu, "memory": mem}}}]},
         "status": {"phase": "Pending"}}
    if node_name:
        p["spec"]["nodeName"] = node_name
        p["status"] = {"phase": "Running", "startTime": "2026-01-01T00:00:00Z"}
    return p


def group(ns, name, min_member, queue="default", phase=None, topology=None):
    g = {"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
         "metadata": {"name": name, "namespace": ns},
         "spec": {"minMember": min_member, "queue": queue}}
    if phase:
        g["status"] = {"phase": phase}
    if topology:
        g["spec"]["networkTopology"] = topology
    return g


def queue(name):
    return {"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "Queue",
            "metadata": {"name": name}, "spec": {"weight": 1}}


def write(d, objs):
    os.makedirs(os.path.join(out, d), exist_ok=True)
    with open(os.path.join(out, d, "cluster.yaml"), "w") as f:
        for o in objs:
            f.write("---\n")
            f.write(json.dumps(o, separators=(",", ":")))
            f.write("\n")


nodes = [node(i) for i in range(NODES)]
default_q = [queue("default")]

burst = []
for g in range(20):
    burst.append(group("default", f"gang-{g}", 500))
    burst += [pod("default", f"gang-{g}-{k}", group=f"gang-{g}") for k in range(500)]
write("gang-5000", nodes + default_q + burst)

objs = list(nodes) + default_q
for q in range(1000):
    objs.append(queue(f"q{q}"))
    for j in range(10):
        g = f"q{q}-j{j}"
        objs.append(group("default", g, 5, queue=f"q{q}"))
        objs += [pod("default", f"{g}-{k}", group=g) for k in range(5)]
write("queues-1000x10", objs)

objs = list(nodes) + default_q + [queue(f"rq{q}") for q in range(4)]
namespaces = [f"ns{n}" for n in range(10)]
for ns in namespaces:
    objs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
slot = 0
for i in range(120000):
    n = i // 24  # 24 plain pods per node
    objs.append(pod(namespaces[i % 10], f"plain-{i}", cpu="500m", mem="1Gi",
                    node_name=f"node-{n}", queue=f"rq{i % 4}"))
for g in range(300):
    name = f"run-{g}"
    objs.append(group(namespaces[g % 10], name, 100, queue=f"rq{g % 4}", phase="Running"))
    for k in range(100):
        m = g * 100 + k
        objs.append(pod(namespaces[g % 10], f"{name}-{k}", cpu="500m", mem="1Gi", group=name,
                        node_name=f"node-{m // 6}"))  # 6 gang members per node
write("running150k", objs + burst)

objs = list(nodes) + default_q
for r in range(NODES // 50):
    objs.append({"apiVersion": "topology.volcano.sh/v1alpha1", "kind": "HyperNode",
                 "metadata": {"name": f"rack-{r}"},
                 "spec": {"tier": 1, "members": [
                     {"type": "Node", "selector": {"labelMatch": {"matchLabels": {"rack": f"rack-{r}"}}}}]}})
for s in range(NODES // 500):
    objs.append({"apiVersion": "topology.volcano.sh/v1alpha1", "kind": "HyperNode",
                 "metadata": {"name": f"spine-{s}"},
                 "spec": {"tier": 2, "members": [
                     {"type": "HyperNode", "selector": {"exactMatch": {"name": f"rack-{r}"}}}
                     for r in range(s * 10, s * 10 + 10)]}})
objs.append({"apiVersion": "topology.volcano.sh/v1alpha1", "kind": "HyperNode",
             "metadata": {"name": "zone"},
             "spec": {"tier": 3, "members": [
                 {"type": "HyperNode", "selector": {"regexMatch": {"pattern": "^spine-"}}}]}})
for g in range(100):
    name = f"train-{g}"
    objs.append(group("default", name, 32, topology={"mode": "hard", "highestTierAllowed": 1}))
    objs += [pod("default", f"{name}-{k}", cpu="8", mem="16Gi", group=name) for k in range(32)]
write("hypernodes-5000", objs)
# The same gangs without networkTopology (and no HyperNodes): the topology's cost.
flat = [o for o in objs if o["kind"] != "HyperNode"]
for o in flat:
    if o["kind"] == "PodGroup":
        o["spec"].pop("networkTopology", None)
write("hypernodes-5000-flat", flat)
