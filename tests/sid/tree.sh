#!/usr/bin/env bash
# Builds (once) a Debian sid tree holding current engines: runc 1.3, containerd 2.1,
# Docker 28, podman 5, crun, conmon. They need a newer glibc than the host's, so they live
# in a debootstrap tree and never in the host's dpkg. Cached under $OCI_VOLUME_HOOK_SID_TREE; a tree
# without its `.ready` marker (written last) is incomplete and built again from scratch; one
# whose marker lacks packages of this list gets them added (the marker then names both).
# Prints the tree's path on stdout.
set -euo pipefail

tree=${OCI_VOLUME_HOOK_SID_TREE:-/var/tmp/oci-volume-hook-sid}
# gcc and libc6-dev: tests/e2e_pinning.rs builds a static helper for its race containers.
packages=runc,containerd,docker.io,docker-cli,podman,crun,conmon,iptables,busybox-static,jq,ca-certificates,gcc,libc6-dev
# Installed with apt once debootstrap is done: python3-grpcio depends on a virtual package
# (libre2-11-absl*), which debootstrap's resolver cannot follow. python3-grpcio and
# python3-grpc-tools: the CRI client (tests/cri/cri.py; pip cannot reach PyPI from the
# tree); containernetworking-plugins: the pod network of user-namespaced pods (e2e_cri).
apt_packages=python3-grpcio,python3-grpc-tools,containernetworking-plugins

# Installs packages (one word each) with the tree's apt and names them in the marker, which
# keeps the packages it named (another checkout's list may have added others).
add_packages() {
  echo "tests/sid/tree.sh: adding $* to $tree" >&2
  chroot "$tree" apt-get -qq -o Acquire::Check-Valid-Until=false update >&2
  DEBIAN_FRONTEND=noninteractive chroot "$tree" apt-get install -y -qq \
    -o Acquire::Check-Valid-Until=false "$@" >&2
  local have added
  have=$(cat "$tree/.ready" 2>/dev/null || true)
  added=$(IFS=,; echo "$*")
  echo "${have:+$have,}$added" > "$tree/.ready.new"
  mv "$tree/.ready.new" "$tree/.ready"
}

if [ -e "$tree/.ready" ]; then
  have=$(cat "$tree/.ready")
  missing=()
  for p in ${packages//,/ } ${apt_packages//,/ }; do
    case ",$have," in *",$p,"*) ;; *) missing+=("$p") ;; esac
  done
  [ "${#missing[@]}" = 0 ] || add_packages "${missing[@]}"
  echo "$tree"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "tests/sid/tree.sh: run as root: debootstrap needs it" >&2; exit 1; }
command -v debootstrap >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

# The Debian mirror the host's apt already uses (deb822 sources or a one-line list);
# never a host of our own choosing.
mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    awk '/^URIs:/ { u = $2 } /^Suites:/ { if ($0 !~ /security/ && u ~ /debian/) { print u; exit } }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -e "$f" ] || continue
    awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\// && $i ~ /debian/) { print $i; exit } }' "$f"
  done
}
url=$(mirror | head -n1)
[ -n "$url" ] || { echo "tests/sid/tree.sh: no Debian mirror in /etc/apt/sources.list*" >&2; exit 1; }

# An interrupted build may have left mounts or a half tree: start clean.
if [ -d "$tree" ]; then
  # (grep finds none in the usual case: not a failure under pipefail.)
  { grep -F " $tree/" /proc/self/mounts || true; } | awk '{ print $2 }' | sort -r | xargs -r -n1 umount -l
  rm -rf --one-file-system "$tree"
fi
mkdir -p "$tree"
echo "tests/sid/tree.sh: debootstrap sid from $url into $tree" >&2
debootstrap --variant=minbase --include="$packages" sid "$tree" "$url" >&2

# sid's Release file may be past its Valid-Until on this clock: say so once, for apt inside.
echo 'Acquire::Check-Valid-Until "false";' > "$tree/etc/apt/apt.conf.d/99oci-volume-hook"
# The engines ran post-install scripts in a chroot: nothing may keep running from there.
chroot "$tree" dpkg-query -W runc containerd docker.io podman crun conmon >&2
# The marker is written last (add_packages writes it): a tree without it is built again.
# shellcheck disable=SC2086 # one word per package
add_packages ${packages//,/ } ${apt_packages//,/ }
echo "$tree"
