#!/usr/bin/env bash
# The CRI client's Python: a venv under target/ with grpcio and grpcio-tools from PyPI
# (Debian 12's python3-grpc-tools 1.14 is from 2018), one per Python version since the host
# and the sid tree (tests/sid/tree.sh) share target/. Where that venv is missing and the
# system's Python has Debian's python3-grpcio and python3-grpc-tools (the sid tree, where pip
# cannot reach PyPI), that Python. Idempotent; prints the Python to use.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=/usr/bin/python3
[ -x "$py" ] || py=python3
version=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv=target/cri-venv-$version
works() { "$1" -c 'import grpc, grpc_tools' 2>/dev/null; }
if works "$venv/bin/python"; then
  echo "$PWD/$venv/bin/python"
elif works "$py"; then
  command -v "$py"
else
  "$py" -m venv "$venv" >&2 || { echo "tests/cri/setup.sh: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
  "$venv/bin/pip" install -q --disable-pip-version-check grpcio grpcio-tools >&2
  echo "$PWD/$venv/bin/python"
fi
