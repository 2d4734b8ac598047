# $1 is 0 when the package is erased (not upgraded).
if [ "$1" = 0 ]; then
  rmdir /etc/oci-volume-hook 2>/dev/null || true
fi
