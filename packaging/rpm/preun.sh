# $1 is 0 when the package is erased (not upgraded): take back engine registrations and the
# staging mounts while the binaries are still there; the wrapper is kept aside while containers
# created through it exist (postun puts it back).
if [ "$1" = 0 ]; then
  sh /usr/share/oci-volume-hook/keep-runtime || exit 1
  sh /usr/share/oci-volume-hook/unregister || exit 1
  sh /usr/share/oci-volume-hook/sweep-staging || exit 1
fi
