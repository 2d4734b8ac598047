# $1 is 0 when the package is erased (not upgraded).
if [ "$1" = 0 ]; then
  if [ -d /run/oci-volume-hook ]; then
    umount /run/oci-volume-hook 2>/dev/null || true
    rmdir /run/oci-volume-hook 2>/dev/null || true
  fi
fi
