#!/usr/bin/env bash
# The end-to-end tests against one set of engines, picked by OCI_VOLUME_HOOK_ENGINES:
#   debian12  the host's (Debian 12: runc 1.1.5, containerd 1.6, Docker 20.10, podman 4.3);
#   sid       Debian sid's (runc 1.3.6, containerd 2.1, Docker 28.5, podman 5.8), run in the
#             tree tests/sid/tree.sh builds (once; cached), entered by tests/sid/enter.sh.
# Engines missing fail the tests (OCI_VOLUME_HOOK_REQUIRE_E2E); a missing tree is built.
set -euo pipefail
cd "$(dirname "$0")/.."
export OCI_VOLUME_HOOK_REQUIRE_E2E=1
threads=${TEST_THREADS:-2}

engines=${OCI_VOLUME_HOOK_ENGINES:-debian12}
# The tests hold the engines to what this stage names (sid: runc >= 1.2 with idmapped
# mounts, containerd 2.x).
export OCI_VOLUME_HOOK_ENGINES=$engines
tests=(e2e_runc wrapper runc_argv e2e_docker e2e_docker_harden e2e_pinning e2e_podman e2e_failsafe)
skip=()
case $engines in
  debian12)
    tests+=(e2e_cri)
    enter=()
    ;;
  sid)
    # containerd 2.1's CRI (config version 3, tests/common/cri.rs): the same scenarios, a
    # user-namespaced pod, and the registration proof through it.
    tests+=(e2e_cri e2e_registration)
    # podman 5 with a user namespace hands the precreate hook an empty intermediate mount
    # point as root.path: the hook cannot see the image's types there, so these two cases
    # cannot pass on podman 5 (the wrapper as podman's runtime does them: e2e_podman).
    skip=(podman_precreate_repairs_an_engine_made_directory_under_a_user_namespace
          a_podman_refusal_is_findable_without_journald_or_syslog)
    enter=(bash tests/sid/enter.sh)
    bash tests/sid/tree.sh >/dev/null
    ;;
  *)
    echo "tests/e2e.sh: OCI_VOLUME_HOOK_ENGINES is debian12 or sid, not $engines" >&2
    exit 1
    ;;
esac

args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
mapfile -t bins < <(cargo test --locked --no-run --message-format=json "${args[@]}" 2>/dev/null |
  jq -r 'select(.executable != null and .target.kind[0] == "test") | .executable')
[ "${#bins[@]}" = "${#tests[@]}" ] || { echo "tests/e2e.sh: built ${#bins[@]} of ${#tests[@]} test binaries" >&2; exit 1; }

filters=(--test-threads="$threads")
for s in "${skip[@]}"; do filters+=(--skip "$s"); done
# Every binary runs, the stage fails if one failed.
"${enter[@]}" bash -c '
  failed=0
  n=$1; shift
  filters=("${@:1:n}"); shift "$n"
  for bin; do
    echo "tests/e2e.sh: $(basename "$bin") on '"$engines"'"
    start=$SECONDS
    "$bin" "${filters[@]}" || failed=1
    echo "tests/e2e.sh: $(basename "$bin"): $((SECONDS - start)) s"
  done
  exit $failed' e2e "${#filters[@]}" "${filters[@]}" "${bins[@]}"
