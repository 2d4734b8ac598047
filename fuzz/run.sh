#!/usr/bin/env bash
# Replays the kept regression inputs of every fuzz target, then fuzzes each for
# ${FUZZ_SECONDS:-10} seconds. A crash fails the run; libFuzzer leaves the input in
# fuzz/artifacts/<target>/: once fixed, copy it into fuzz/regressions/<target>/.
# cargo-fuzz needs unstable rustc flags: RUSTC_BOOTSTRAP lets the stable toolchain take them.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  echo "fuzz: $target: replaying regressions"
  cargo fuzz run -O "$target" "regressions/$target" -- -runs=0 >/dev/null 2>&1 ||
    { cargo fuzz run -O "$target" "regressions/$target" -- -runs=0; exit 1; }
  echo "fuzz: $target: ${FUZZ_SECONDS:-10}s"
  if ! cargo fuzz run -O "$target" "corpus/$target" "regressions/$target" -- \
    -max_total_time="${FUZZ_SECONDS:-10}" >"corpus/$target.log" 2>&1; then
    tail -n 40 "corpus/$target.log"
    echo "fuzz: $target: crashed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E "^Done" "corpus/$target.log" || true
done
