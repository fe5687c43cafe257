# Reports what the host has, one key=value a line (POST /api/v1/hosts/:id/test).
echo "hostnqn=$(cat /etc/nvme/hostnqn 2>/dev/null || true)"
if have nvme; then echo "nvme_cli=yes"; else echo "nvme_cli=no"; fi
if [ -d /sys/module/nvme_tcp ] || modinfo nvme_tcp >/dev/null 2>&1 || modprobe -n nvme-tcp >/dev/null 2>&1; then
  echo "nvme_tcp=yes"
else
  echo "nvme_tcp=no"
fi
if [ "$THICKET_HOOK_TYPE" = libvirt ]; then
  if have virsh && virsh -q -c "$THICKET_LIBVIRT_URI" version >/dev/null 2>&1; then echo "virsh=yes"; else echo "virsh=no"; fi
fi
echo "kernel=$(uname -r)"
