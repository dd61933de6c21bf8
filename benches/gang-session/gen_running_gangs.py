# Many running gang members + plain pods, a few pending gangs (Volcano PodGroups), as
# one YAML stream for `corral-scheduler simulate` (BENCHMARKS.md, "Gang path through
# the API — batch session open").
# Usage: gen_running_gangs.py [NODES GANGS SIZE PLAIN PACK [PENDING]]
#   PACK: consecutive gang members per node (1: every member alone with its gang).
#   PENDING: pending gangs of 8 (default 4); with many, the second session refreshes
#   the running index for every node the first one placed on.
import sys
args = [int(a) for a in sys.argv[1:]] or [500, 300, 32, 1000, 1]
NODES, GANGS, SIZE, PLAIN, PACK = args[:5]
PENDING = args[5] if len(args) > 5 else 4
out = []
out.append("""apiVersion: scheduling.volcano.sh/v1beta1
kind: Queue
metadata: {name: q1}
spec: {weight: 1}""")
for i in range(NODES):
    out.append(f"""apiVersion: v1
kind: Node
metadata: {{name: n{i}, labels: {{kubernetes.io/hostname: n{i}}}}}
status:
  allocatable: {{cpu: "64", memory: 256Gi, pods: "110"}}
  capacity: {{cpu: "64", memory: 256Gi, pods: "110"}}""")
def pod(name, ns, node, group, queue=None):
    ann = {}
    if group: ann["scheduling.k8s.io/group-name"] = group
    if queue: ann["volcano.sh/queue-name"] = queue
    a = ("\n  annotations: {" + ", ".join(f'{k}: "{v}"' for k, v in ann.items()) + "}") if ann else ""
    nn = f"\n  nodeName: {node}" if node else ""
    st = "\nstatus: {phase: Running}" if node else ""
    return f"""apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}{a}
spec:
  schedulerName: corral{nn}
  containers:
  - name: main
    image: x
    resources:
      requests: {{cpu: "1", memory: 1Gi}}{st}"""
k = 0
for g in range(GANGS):
    ns = f"team{g % 10}"
    out.append(f"""apiVersion: scheduling.volcano.sh/v1beta1
kind: PodGroup
metadata: {{name: g{g}, namespace: {ns}}}
spec: {{minMember: {SIZE}, queue: q1}}
status: {{phase: Running}}""")
    for m in range(SIZE):
        out.append(pod(f"g{g}-{m}", ns, f"n{(k // PACK) % NODES}", f"g{g}")); k += 1
for p in range(PLAIN):
    out.append(pod(f"plain-{p}", "default", f"n{k % NODES}", None, "q1")); k += 1
for g in range(PENDING):
    out.append(f"""apiVersion: scheduling.volcano.sh/v1beta1
kind: PodGroup
metadata: {{name: new{g}, namespace: default}}
spec: {{minMember: 8, queue: q1}}""")
    for m in range(8):
        out.append(pod(f"new{g}-{m}", "default", None, f"new{g}"))
print("\n---\n".join(out))
