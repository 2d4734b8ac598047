#!/usr/bin/env bash
# Runs the whole test suite on Debian as root, installing the engines it needs first.
# End-to-end tests start their own runc, podman, containerd and dockerd with private roots,
# sockets and temp dirs; here they are required: a missing engine fails, it never skips.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "tests/run.sh: cargo (Rust >= 1.85) is needed: install it with rustup" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "tests/run.sh: run as root: the tests chown, mount and start engines" >&2; exit 1; }

packages=(runc podman busybox-static docker.io containerd jq rpm man-db buildah python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The Kubernetes tests (tests/e2e_cri.rs): a CRI client (grpcio from PyPI, in a venv under
# target/) and the node installer image (static binaries, buildah), both made idempotently.
bash tests/cri/setup.sh >/dev/null
bash deploy/kubernetes/build-image.sh

# Debian sid's engines (runc 1.3, containerd 2.1, Docker 28, podman 5) in a debootstrap tree,
# built once and cached under /var/tmp (about 6 minutes the first time): the idmapped-mount
# tests (runc 1.3), containerd 2.1's registration checks and the sid stage below use it.
OCI_VOLUME_HOOK_SID_TREE=$(bash tests/sid/tree.sh)
export OCI_VOLUME_HOOK_SID_TREE

export OCI_VOLUME_HOOK_REQUIRE_E2E=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --all-targets -- --test-threads="${TEST_THREADS:-2}" 2>&1 | tee "$log"

# The end-to-end tests again on Debian sid's engines (runc 1.3, containerd 2.1, Docker 28,
# podman 5), in a debootstrap tree built once and cached under /var/tmp (about 6 minutes the
# first time, then 4-5 minutes a run). OCI_VOLUME_HOOK_ENGINES=debian12 leaves this stage out.
if [ "${OCI_VOLUME_HOOK_ENGINES:-debian12 sid}" != debian12 ]; then
  OCI_VOLUME_HOOK_ENGINES=sid bash tests/e2e.sh 2>&1 | tee -a "$log"
fi

# runc's own integration suite, with plain runc and through the wrapper (about 4 minutes;
# RUNC_SUITE=0 skips it): fails when a test passing with runc does not through the wrapper.
if [ "${RUNC_SUITE:-1}" != 0 ]; then
  bash tests/runc-suite.sh
  # The same with sid's runc 1.3.6, in the sid tree (its Go helpers and bats installed there
  # the first time, about 1 minute more): 2.5-4.5 minutes here; RUNC_SUITE_SID=0 skips it.
  if [ "${RUNC_SUITE_SID:-1}" != 0 ]; then
    bash tests/sid/enter.sh bash tests/runc-suite.sh
  fi
fi

# The packages: built, compared, installed, tested against real engines, purged.
bash tests/package.sh 2>&1 | tee -a "$log"

# Fuzzing, bounded: kept regression inputs, then FUZZ_SECONDS per target (0 skips it).
if [ "${FUZZ_SECONDS:-10}" != 0 ]; then
  bash fuzz/run.sh
fi

# One closing line for the whole suite.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
