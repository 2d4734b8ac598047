# $1 is 0 when the package is erased (not upgraded).
if [ "$1" = 0 ]; then
  # The wrapper prerm kept aside for containers created through it (the package's files are
  # gone; this script must stand alone): back where their engines call it.
  kept=/var/lib/oci-volume-hook/oci-volume-runtime.kept
  if [ -e "$kept" ] && [ ! -e /usr/bin/oci-volume-runtime ]; then
    mv "$kept" /usr/bin/oci-volume-runtime
    rmdir /var/lib/oci-volume-hook 2>/dev/null || true
    echo "oci-volume-hook: /usr/bin/oci-volume-runtime kept for the containers created through it; delete it once they are gone"
  fi
  rmdir /etc/oci-volume-hook 2>/dev/null || true
fi
