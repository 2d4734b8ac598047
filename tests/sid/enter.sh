#!/usr/bin/env bash
# Runs a command with Debian sid's engines: in a private mount namespace, with the sid tree
# (tests/sid/tree.sh) as its root. The repository and cargo's target directory keep their
# paths inside, so test binaries built on the host run there unchanged.
#
#   bash tests/sid/enter.sh COMMAND [ARG...]
#
# A plain chroot is not enough: creating a user namespace is refused inside one, and dockerd
# wants `/` to be a mount point. So: bind the tree onto itself, rbind /proc /sys /dev in,
# fresh tmpfs /run and /tmp, then pivot_root into it.
set -euo pipefail

if [ "${1:-}" != --inside ]; then
  repo=$(cd "$(dirname "$0")/../.." && pwd)
  tree=$(bash "$repo/tests/sid/tree.sh")
  target=$(cd "$repo" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
  exec unshare --mount --fork -- bash "$repo/tests/sid/enter.sh" --inside "$tree" "$repo" "$target" "$@"
fi
shift
tree=$1 repo=$2 target=$3
shift 3

# Nothing done here may reach the host's mount table.
mount --make-rprivate /
mount --bind "$tree" "$tree"
mount --rbind /proc "$tree/proc"
mount --rbind /sys "$tree/sys"
mount --rbind /dev "$tree/dev"
mount -t tmpfs -o mode=755 tmpfs "$tree/run"
mount -t tmpfs -o mode=1777 tmpfs "$tree/tmp"
for dir in "$repo" "$target"; do
  mkdir -p "$tree$dir"
  mount --rbind "$dir" "$tree$dir"
done
# The fixtures live under /var/tmp: the tree's own (same filesystem as the host's).
old=.old-root.$$
cd "$tree"
mkdir "$old"
pivot_root . "$old"
umount -l "/$old"
rmdir "/$old"
cd "$repo"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
exec "$@"
