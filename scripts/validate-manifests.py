#!/usr/bin/env python3
"""Validates deploy/: every manifest with kubernetes-validate (strict, Kubernetes
1.33 schemas, CRDs included), every kustomization (deploy/, its bases and the
deploy modes in deploy/overlays/) rendered by `kubectl kustomize` and validated the
same way, the images the rendered manifests use against the tags the Containerfiles
document, the example custom resources against the CRDs' openAPIV3Schema, and that
the kustomizations reference every manifest."""
import glob, json, os, re, subprocess, sys, tempfile
import jsonschema, yaml

K8S = os.environ.get("CORRAL_K8S_SCHEMA_VERSION", "1.33.0")
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy")
os.chdir(root)
failed = 0
manifests = sorted(
    p for p in glob.glob("**/*.yaml", recursive=True)
    if os.path.basename(p) != "kustomization.yaml"
    and p != "extender/kube-scheduler-config.yaml" and not p.startswith("examples/")
    and not p.startswith("monitoring/")
)
r = subprocess.run(["kubernetes-validate", "-k", K8S, "--strict", "--quiet", *manifests])
if r.returncode != 0:
    print(f"FAIL kubernetes-validate ({r.returncode})"); failed += 1
else:
    print(f"ok   kubernetes-validate {len(manifests)} files against {K8S}")

# Kustomizations cover every manifest.
listed = set()
for k in glob.glob("**/kustomization.yaml", recursive=True):
    d = os.path.dirname(k)
    for res in yaml.safe_load(open(k))["resources"]:
        p = os.path.normpath(os.path.join(d, res))
        if not os.path.exists(p):
            print(f"FAIL {k}: missing {res}"); failed += 1
        listed.add(p)
for m in manifests:
    if m not in listed:
        print(f"FAIL {m} is in no kustomization.yaml"); failed += 1

# Prometheus Operator objects: no schema in Kubernetes' own; check their shape here.
for p in sorted(glob.glob("monitoring/*.yaml")):
    if os.path.basename(p) == "kustomization.yaml":
        continue
    for d in yaml.safe_load_all(open(p)):
        ok = (d.get("apiVersion") == "monitoring.coreos.com/v1" and d.get("kind") in ("ServiceMonitor", "PodMonitor")
              and d["spec"]["selector"]["matchLabels"] and all("port" in e for e in d["spec"].get("endpoints", d["spec"].get("podMetricsEndpoints", []))))
        print(("ok   " if ok else "FAIL ") + f"{p} {d.get('kind')}")
        failed += 0 if ok else 1
dash = json.load(open("monitoring/corral-scheduler-dashboard.json"))
exprs = [t["expr"] for pnl in dash["panels"] for t in pnl["targets"]]
print(("ok   " if exprs else "FAIL ") + f"monitoring/corral-scheduler-dashboard.json: {len(exprs)} queries")
failed += 0 if exprs else 1

# Images the Containerfiles build (their documented `-t` tag).
built = set()
for cf in glob.glob("images/*.Containerfile"):
    built |= set(re.findall(r"build -f deploy/images/\S+ -t (\S+) \.", open(cf).read()))

# Every kustomization renders, its output validates, and it uses only built images.
kdirs = sorted({os.path.dirname(k) or "." for k in glob.glob("**/kustomization.yaml", recursive=True)})
for kd in kdirs:
    r = subprocess.run(["kubectl", "kustomize", kd], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"FAIL kubectl kustomize {kd}: {r.stderr.strip()}"); failed += 1; continue
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    images = set()
    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "image" and isinstance(v, str):
                    images.add(v)
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(docs)
    unknown = images - built
    if unknown:
        print(f"FAIL {kd}: images no Containerfile builds: {sorted(unknown)} (built: {sorted(built)})"); failed += 1
    core = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump_all(core, f)
    v = subprocess.run(["kubernetes-validate", "-k", K8S, "--strict", "--quiet", f.name])
    os.unlink(f.name)
    if v.returncode != 0:
        print(f"FAIL {kd}: rendered output does not validate"); failed += 1
    else:
        print(f"ok   kubectl kustomize {kd}: {len(docs)} objects, images {sorted(images) or '-'}")

def strip(s):
    if isinstance(s, dict):
        return {k: strip(v) for k, v in s.items() if not k.startswith("x-kubernetes") and k != "format"}
    if isinstance(s, list):
        return [strip(v) for v in s]
    return s

crds = {}
for p in glob.glob("crds/*.yaml"):
    for d in yaml.safe_load_all(open(p)):
        if d and d.get("kind") == "CustomResourceDefinition":
            for v in d["spec"]["versions"]:
                crds[(d["spec"]["group"] + "/" + v["name"], d["spec"]["names"]["kind"])] = strip(v["schema"]["openAPIV3Schema"])
for p in sorted(glob.glob("examples/*.yaml")):
    for d in yaml.safe_load_all(open(p)):
        if not d:
            continue
        key = (d["apiVersion"], d["kind"])
        if key not in crds:
            print(f"FAIL {p}: no CRD for {key}"); failed += 1; continue
        try:
            jsonschema.validate(d, crds[key])
            print(f"ok   {p} {d['kind']}/{d['metadata']['name']}")
        except jsonschema.ValidationError as e:
            print(f"FAIL {p} {d['kind']}/{d['metadata']['name']}: {e.message}"); failed += 1

# A wrong object must fail (the check can fail).
try:
    jsonschema.validate({"spec": {"minMember": "four"}}, crds[("scheduling.volcano.sh/v1beta1", "PodGroup")])
    print("FAIL schema accepted minMember: four"); failed += 1
except jsonschema.ValidationError:
    pass

print(f"manifests: {max(len(manifests) - failed, 0)} passed, {failed} failed")
sys.exit(1 if failed else 0)
