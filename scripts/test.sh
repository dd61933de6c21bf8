#!/usr/bin/env bash
# Corral's one test command: installs what a fresh machine lacks, builds, and runs
# every check (format, lints, unit/integration/property tests, privileged data-plane
# tests when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages (Debian): eBPF toolchain and the real network peers used by tests.
PKGS=(clang-19 llvm-19 libbpf-dev linux-libc-dev iproute2 iperf3 util-linux containernetworking-plugins bpftool iptables nftables ethtool podman runc busybox-static kubectl ca-certificates)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

command -v cargo >/dev/null || { echo "error: cargo (Rust 1.95) is required" >&2; exit 1; }

# Deploy manifests: kubernetes-validate (PyPI) against the Kubernetes 1.33 schemas.
command -v kubernetes-validate >/dev/null || python3 -m pip install --quiet kubernetes-validate
python3 scripts/validate-manifests.py

# A full debug build + test of the workspace needs ~8 GB of target/; say so up front
# rather than failing mid-link with ENOSPC.
avail_kb=$(df -Pk . | awk 'NR==2 {print $4}')
echo "free disk for target/: $((avail_kb / 1024 / 1024)) GiB"
[ "$avail_kb" -ge $((8 * 1024 * 1024)) ] || echo "warning: less than 8 GiB free; the build may fail with ENOSPC" >&2

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# deploy/crds is generated from corral-api's CRD types (feature `crd`, off in the
# workspace build so kube-derive/schemars stay out of it): the sync test fails when
# a file differs from what the types generate.
cargo clippy -p corral-api --features crd --all-targets --locked -- -D warnings
cargo test -p corral-api --features crd --locked --test crds_in_sync
