#!/usr/bin/env bash
# The CRI client's Python environment: a venv under target/ with grpcio and grpcio-tools
# from PyPI (Debian 12's python3-grpc-tools 1.14 is from 2018). Idempotent; prints the
# venv's python.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/cri-venv
if ! "$venv/bin/python" -c 'import grpc, grpc_tools' 2>/dev/null; then
  py=/usr/bin/python3
  [ -x "$py" ] || py=python3
  "$py" -m venv "$venv" >&2 || { echo "tests/cri/setup.sh: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
  "$venv/bin/pip" install -q --disable-pip-version-check grpcio grpcio-tools >&2
fi
echo "$PWD/$venv/bin/python"
