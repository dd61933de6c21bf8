#!/usr/bin/env python3
"""Validates deploy/: every manifest with kubernetes-validate (strict, Kubernetes
1.33 schemas, CRDs included), the example custom resources against the CRDs'
openAPIV3Schema, and that the kustomizations reference every manifest."""
import glob, os, subprocess, sys
import jsonschema, yaml

K8S = os.environ.get("CORRAL_K8S_SCHEMA_VERSION", "1.33.0")
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy")
os.chdir(root)
failed = 0
manifests = sorted(
    p for p in glob.glob("**/*.yaml", recursive=True)
    if os.path.basename(p) != "kustomization.yaml"
    and not p.startswith("extender/") and not p.startswith("examples/")
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
