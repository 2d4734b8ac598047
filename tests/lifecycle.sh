#!/usr/bin/env bash
# The operator's life with the package, on real dpkg and a real Docker: install version N,
# `configure docker --default`, run; upgrade to N+1 (the edited config and the registration
# stay); purge (the registration goes, Docker runs containers again after its restart, no
# staging mount and nothing of the package is left). Called by tests/package.sh with the two
# .debs; as root, on Debian.
set -euo pipefail
deb1=$1 deb2=$2
t=$(mktemp -d /var/tmp/ovh-lifecycle-XXXXXX)
dj=/etc/docker/daemon.json
saved=""
if [ -e "$dj" ]; then saved="$t/daemon.json.orig"; cp -a "$dj" "$saved"; fi
cleanup() {
  stop_docker
  if [ -n "$saved" ]; then cp -a "$saved" "$dj"; else rm -f "$dj" "$dj.oci-volume-hook.bak"; fi
  dpkg --purge oci-volume-hook >/dev/null 2>&1 || true
  for m in $(awk -v d="$t" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do umount -l "$m" || true; done
  rm -rf "$t"
}
fail() { echo "lifecycle.sh: $*" >&2; exit 1; }

export DOCKER_HOST="unix://$t/docker.sock" DOCKER_CONFIG="$t/client"
start_docker() {
  mkdir -p "$t/ctd"
  printf 'version = 2\nroot = "%s/ctd/root"\nstate = "%s/ctd/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\naddress = "%s/ctd/sock"\n' "$t" "$t" "$t" >"$t/containerd.toml"
  containerd --config "$t/containerd.toml" >"$t/containerd.log" 2>&1 &
  echo $! >"$t/containerd.pid"
  for _ in $(seq 100); do [ -S "$t/ctd/sock" ] && break; sleep 0.2; done
  # The machine's daemon.json, as a restarted dockerd would read it.
  dockerd --config-file "$dj" --containerd="$t/ctd/sock" --data-root="$t/docker" \
    --exec-root="$t/dexec" --pidfile="$t/dockerd.pid" -H "$DOCKER_HOST" --iptables=false \
    --ip6tables=false --bridge=none --storage-driver=vfs >"$t/dockerd.log" 2>&1 &
  for _ in $(seq 150); do docker version >/dev/null 2>&1 && return 0; sleep 0.2; done
  tail -n 20 "$t/dockerd.log" >&2
  fail "dockerd did not start"
}
stop_docker() {
  for p in dockerd containerd; do
    if [ -s "$t/$p.pid" ]; then kill "$(cat "$t/$p.pid")" 2>/dev/null || true; fi
  done
  for _ in $(seq 100); do
    { [ -s "$t/dockerd.pid" ] && kill -0 "$(cat "$t/dockerd.pid")" 2>/dev/null; } || break
    sleep 0.2
  done
  sleep 1
  rm -f "$t/dockerd.pid" "$t/containerd.pid"
}
trap cleanup EXIT

mkdir -p "$t/rootfs/bin" "$t/containerdata/user-lc"
install -m 0755 /bin/busybox "$t/rootfs/bin/busybox" && ln -s busybox "$t/rootfs/bin/sh"
mkdir -p "$t/rootfs/etc" && echo "TZif-image" >"$t/rootfs/etc/localtime"

dpkg -i "$deb1" >/dev/null
# The operator edits the configuration: the tenants live in the test directory.
echo "chroots = [\"$t/containerdata/*\"]" >>/etc/oci-volume-hook/config.toml
oci-volume-hook configure docker --default >/dev/null
grep -q '"default-runtime": "oci-volume"' "$dj" || fail "configure docker --default did not register"

run_app() {
  docker run --rm --network none -v "$t/containerdata/user-lc/etc/localtime:/etc/localtime" \
    lc-test:latest /bin/sh -c 'test -f /etc/localtime && echo lifecycle-ok'
}
start_docker
tar -C "$t/rootfs" -c . | docker import - lc-test:latest >/dev/null
[ "$(run_app)" = lifecycle-ok ] || fail "version N: docker run through the default runtime"

dpkg -i "$deb2" >/dev/null
grep -q "^chroots = \[\"$t/containerdata/\*\"\]" /etc/oci-volume-hook/config.toml ||
  fail "the upgrade lost the edited configuration"
grep -q '"oci-volume"' "$dj" || fail "the upgrade lost the Docker registration"
[ "$(run_app)" = lifecycle-ok ] || fail "version N+1: docker run"
echo "lifecycle.sh: upgrade $(dpkg-deb -f "$deb1" Version) -> $(dpkg-deb -f "$deb2" Version) kept the configuration and the registration"

# A staging mount a killed precreate left behind, for the purge to take away.
mkdir -p /run/oci-volume-hook/precreate-lc-1/0 "$t/leftover"
mount --bind "$t/leftover" /run/oci-volume-hook/precreate-lc-1/0
# The runtime's features as ownership = idmap keeps them (not empty: the purge must take it).
mkdir -m 0700 /run/oci-volume-hook/@runtime-features
echo '{"linux": {}}' > /run/oci-volume-hook/@runtime-features/0123456789abcdef
dpkg --purge oci-volume-hook >"$t/purge.log" 2>&1 || { cat "$t/purge.log"; fail "purge failed"; }
grep -q "oci-volume" "$dj" && fail "purge left Docker registered: $(cat "$dj")"
awk '{print $5}' /proc/self/mountinfo | grep -q '^/run/oci-volume-hook' && fail "purge left staging mounts"
[ ! -e /run/oci-volume-hook ] || fail "purge left /run/oci-volume-hook"
[ ! -e /usr/bin/oci-volume-runtime ] || fail "purge left the wrapper"
stop_docker
start_docker
[ "$(docker run --rm --network none lc-test:latest /bin/sh -c 'echo still-runs')" = still-runs ] ||
  fail "Docker cannot run containers after the purge and its restart"
echo "lifecycle.sh: purge unregistered Docker, took staging away; Docker runs containers after its restart"

# Removal while a container created through the wrapper runs: the removal goes through, the
# wrapper stays where the shim calls it, and the container can still be stopped and deleted.
dpkg -i "$deb1" >/dev/null
ns=ovh-lifecycle-keep
ctr_() { ctr --address "$t/ctd/sock" -n "$ns" "$@"; }
ctr_ run -d --runc-binary /usr/bin/oci-volume-runtime --rootfs "$t/rootfs" keep1 /bin/busybox sleep 1000 >/dev/null ||
  fail "ctr run through the wrapper"
dpkg -r oci-volume-hook >"$t/remove.log" 2>&1 || { cat "$t/remove.log"; fail "removal failed"; }
grep -q "containers created through /usr/bin/oci-volume-runtime still exist: keep1" "$t/remove.log" ||
  fail "removal did not say it keeps the wrapper: $(cat "$t/remove.log")"
[ -x /usr/bin/oci-volume-runtime ] || fail "removal took the wrapper a running container needs"
dpkg -s oci-volume-hook 2>/dev/null | grep -q '^Status: .* installed' && fail "the package is still installed"
ctr_ task kill -s KILL keep1 || fail "the container cannot be stopped after the removal"
for _ in $(seq 50); do ctr_ task ls | grep -q 'keep1.*STOPPED' && break; sleep 0.2; done
ctr_ task rm keep1 >/dev/null || fail "the container's task cannot be deleted after the removal"
ctr_ container rm keep1 || fail "the container cannot be deleted after the removal"
rmdir "/run/containerd/runc/$ns" 2>/dev/null || true
rm -f /usr/bin/oci-volume-runtime
dpkg --purge oci-volume-hook >/dev/null
[ ! -e /var/lib/oci-volume-hook ] || fail "left /var/lib/oci-volume-hook"
echo "lifecycle.sh: removed with a container running through the wrapper; it was stopped and deleted after"
