#!/usr/bin/env bash
# Builds the .deb and the .rpm (statically linked binaries), checks they hold the same files,
# installs the .deb, runs the package tests and the end-to-end suite against the installed
# binaries, purges the package and checks that nothing is left. Debian, as root; called by
# tests/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/package
rm -rf "$out"
# Both packages, made as README's Install section makes them: one command.
built=$(bash packaging/build-packages "$out")
deb=$(echo "$built" | sed -n 1p)
rpm=$(echo "$built" | sed -n 2p)
command -v rpm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rpm >/dev/null
# The statically linked release binaries: the ones users get.
target=x86_64-unknown-linux-gnu
for b in oci-volume-hook oci-volume-runtime; do
  if readelf -l "target/$target/release/$b" | grep -q INTERP; then
    echo "package.sh: target/$target/release/$b is not statically linked" >&2
    exit 1
  fi
done
# The next version, for the upgrade test: the same files, a higher revision.
version=$(dpkg-deb -f "$deb" Version)
deb_next=$(cargo deb --no-build --target "$target" --deb-version "${version%-*}-99" --output "$out/next/" | tail -n 1)

# The same files in both (cargo-deb compresses man pages).
deb_files=$(dpkg-deb -c "$deb" | awk '{print $6}' | grep -v '/$' | sed -e 's|^\./|/|' -e 's|\.gz$||' | sort)
rpm_files=$(rpm -qlp "$rpm" | sort)
if [ "$deb_files" != "$rpm_files" ]; then
  diff <(echo "$deb_files") <(echo "$rpm_files") || true
  echo "package.sh: the .deb and the .rpm hold different files" >&2
  exit 1
fi
echo "package.sh: .deb and .rpm hold the same $(echo "$deb_files" | wc -l) files"

dpkg --purge oci-volume-hook >/dev/null 2>&1 || true
dpkg -i "$deb"
trap 'dpkg --purge oci-volume-hook >/dev/null 2>&1 || true' EXIT
export OCI_VOLUME_HOOK_REQUIRE_E2E=1
cargo test --locked --test package -- --ignored --test-threads=1
OCI_VOLUME_HOOK_BIN_DIR=/usr/bin cargo test --locked --test e2e_runc --test e2e_podman --test e2e_docker --test wrapper -- --test-threads=1

dpkg --purge oci-volume-hook
trap - EXIT
left=""
for f in $(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|'); do
  case "$f" in
    /usr/|/usr/share/|/usr/share/doc/|/usr/share/man/|/usr/share/man/man1/|/usr/share/man/man5/|/usr/bin/|/etc/|/etc/containers/) ;;
    *) [ ! -e "$f" ] || left="$left $f" ;;
  esac
done
[ ! -e /run/oci-volume-hook ] || left="$left /run/oci-volume-hook"
if [ -n "$left" ]; then
  echo "package.sh: left after purge:$left" >&2
  exit 1
fi
echo "package.sh: purged, nothing left"

# Install, register with Docker, upgrade, purge: Docker keeps running containers.
bash tests/lifecycle.sh "$deb" "$deb_next"
