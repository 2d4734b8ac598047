#!/usr/bin/env bash
# The main job, end to end on the real runc (Debian, as root): a tenant chroot whose volume
# sources are wrong for the image, plain runc failing on them, then the same bundle started
# through oci-volume-runtime. Installs runc and busybox-static if missing; leaves nothing
# behind but the build in target/.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root" >&2; exit 1; }
command -v cargo >/dev/null || { echo "demo.sh: cargo (Rust >= 1.85) is needed: install it with rustup" >&2; exit 1; }
for p in runc busybox-static; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="${missing:-} $p"
done
if [ -n "${missing:-}" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
cargo build --release --bins --quiet
bin=$PWD/target/release

D=$(mktemp -d /var/tmp/oci-volume-hook-demo.XXXXXX)
chmod 755 "$D"
cleanup() {
  # Staging mounts live under $D too (staging_dir below): take them away first.
  awk -v d="$D" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l
  rm -rf "$D"
}
trap cleanup EXIT
tenant=$D/containerdata/user-toto
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# The image: busybox, with /etc/localtime a symlink to a zoneinfo file.
rootfs=$D/bundle/rootfs
mkdir -p "$rootfs"/{bin,etc,proc,dev,sys,data,usr/share/zoneinfo}
cp /bin/busybox "$rootfs/bin/" && ln -s busybox "$rootfs/bin/sh"
printf 'TZif-image\n' >"$rootfs/usr/share/zoneinfo/UTC"
ln -s /usr/share/zoneinfo/UTC "$rootfs/etc/localtime"

# The tenant's chroot, as the platform and the engine left it: an empty directory where the
# image has a file, and a root-owned data directory.
mkdir -p "$tenant/etc/localtime" "$tenant/data"

cat >"$D/config.toml" <<TOML
chroots = ["$D/containerdata/*"]
owner = "container-root"
runtime = "runc"
staging_dir = "$D/staging"
[log]
target = "stderr"
level = "info"
TOML
export OCI_VOLUME_HOOK_CONFIG=$D/config.toml

# A user-namespaced container (root = host uid 100000) mounting both.
cat >"$D/bundle/config.json" <<JSON
{
  "ociVersion": "1.0.2",
  "process": {
    "terminal": false, "user": {"uid": 0, "gid": 0}, "cwd": "/", "env": ["PATH=/bin"],
    "args": ["/bin/sh", "-c", "echo \"localtime: \$(cat /etc/localtime)\"; echo hello >/data/hello && echo 'wrote /data/hello'"],
    "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"]}
  },
  "root": {"path": "rootfs"},
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
    {"destination": "/etc/localtime", "type": "bind", "source": "$tenant/etc/localtime", "options": ["rbind", "ro"]},
    {"destination": "/data", "type": "bind", "source": "$tenant/data", "options": ["rbind", "rw"]}
  ],
  "linux": {
    "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"}, {"type": "user"}],
    "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
    "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]
  }
}
JSON
cd "$D/bundle"

step "Plain runc: the engine's empty directory meets the image's file"
runc --root "$D/state" run demo-plain 2>&1 | sed 's/^/    /' || true

step "What oci-volume-hook would do (dry run: oci-volume-hook plan --bundle .)"
"$bin/oci-volume-hook" plan --bundle . | grep -v 'not a bind mount' | sed 's/^/    /' || true

step "The same bundle through oci-volume-runtime (which then runs runc)"
"$bin/oci-volume-runtime" --root "$D/state" run demo-wrapped 2>&1 | sed 's/^/    /'

step "On the host, inside the chroot"
ls -ln "$tenant/etc/localtime" "$tenant/data/hello" | sed 's/^/    /'
[ -f "$tenant/etc/localtime" ] && [ "$(stat -c %u "$tenant/data")" = 100000 ] && [ "$(cat "$tenant/data/hello")" = hello ]
step "OK: a regular file for /etc/localtime, and a volume the remapped root (uid 100000) owns"
