#!/usr/bin/env bash
# Builds the node installer image with buildah from deploy/kubernetes/Containerfile:
# statically linked release binaries, FROM scratch. Writes target/oci-volume-hook-node.tar
# (docker-archive, tagged oci-volume-hook-node:VERSION): `ctr -n k8s.io images import` it
# on a node, or `skopeo copy docker-archive:... docker://REGISTRY/...` to a registry.
# buildah's storage is private to this run: the machine's image store is not touched.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v buildah >/dev/null || { echo "build-image.sh: buildah is needed (apt-get install buildah)" >&2; exit 1; }

RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu
bins=target/x86_64-unknown-linux-gnu/release
for b in oci-volume-hook oci-volume-runtime; do
  if ldd "$bins/$b" 2>&1 | grep -q '=>'; then echo "build-image.sh: $bins/$b is not static" >&2; exit 1; fi
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
tag="oci-volume-hook-node:$version"
out=target/oci-volume-hook-node.tar
work=$(mktemp -d /var/tmp/ovh-image.XXXXXX)
trap 'buildah --root "$work/root" --runroot "$work/run" --storage-driver vfs rm -a >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
mkdir "$work/context"
cp "$bins/oci-volume-hook" "$bins/oci-volume-runtime" "$work/context/"
b=(buildah --root "$work/root" --runroot "$work/run" --storage-driver vfs)
"${b[@]}" bud --quiet --isolation chroot -f deploy/kubernetes/Containerfile -t "$tag" "$work/context" >/dev/null
rm -f "$out"
"${b[@]}" push --quiet "$tag" "docker-archive:$out:$tag"
echo "$out ($tag)"
