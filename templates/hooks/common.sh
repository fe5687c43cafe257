# Helpers shared by every hook. Exit codes: 0 done, 75 (EX_TEMPFAIL) worth a retry, anything else failed;
# stderr is what the operator sees on a failed desktop.
log() { echo "thicket: $*" >&2; }
die() { echo "thicket: $*" >&2; exit 1; }
tempfail() { echo "thicket: $*" >&2; exit 75; }
have() { command -v "$1" >/dev/null 2>&1; }

# One hook at a time per host for the steps that connect and disconnect subsystems and change links
# (flock when present). Held only around those steps: waiting for a namespace or starting a VM under it
# would make a host's hooks run one after another.
take_lock() {
  mkdir -p "$THICKET_STATE_DIR"
  if have flock; then
    exec 9>"$THICKET_STATE_DIR/lock"
    flock -w 120 9 || tempfail "another hook holds $THICKET_STATE_DIR/lock"
  fi
}
release_lock() {
  exec 9>&-
}

# Whether a controller of the desktop's subsystem exists (live or reconnecting).
subsys_connected() {
  for f in /sys/class/nvme/nvme*/subsysnqn; do
    [ -r "$f" ] || continue
    [ "$(cat "$f")" = "$THICKET_SUBSYSTEM_NQN" ] && return 0
  done
  return 1
}

# The block device whose namespace UUID is $1: udev's by-id link, else a scan of sysfs (hosts without udev).
ns_dev() {
  if [ -e "/dev/disk/by-id/nvme-uuid.$1" ]; then
    echo "/dev/disk/by-id/nvme-uuid.$1"
    return 0
  fi
  for d in /sys/block/nvme*; do
    [ -e "$d" ] || continue
    n=${d##*/}
    case $n in *c*) continue ;; esac # hidden per-path devices of native multipath (nvme0c1n1)
    [ -r "$d/uuid" ] && [ "$(cat "$d/uuid")" = "$1" ] && { echo "/dev/$n"; return 0; }
  done
  return 1
}

# The subsystem NQN of block device $1 (nvmeXnY: X is the subsystem instance with native multipath, the
# controller instance without).
dev_subsys() {
  n=$(basename "$(readlink -f "$1")")
  if [ -r "/sys/block/$n/device/subsysnqn" ]; then cat "/sys/block/$n/device/subsysnqn"; return 0; fi
  x=${n#nvme}
  x=${x%%n*}
  if [ "$(cat /sys/module/nvme_core/parameters/multipath 2>/dev/null || echo N)" = Y ] && [ -r "/sys/class/nvme-subsystem/nvme-subsys$x/subsysnqn" ]; then
    cat "/sys/class/nvme-subsystem/nvme-subsys$x/subsysnqn"
  elif [ -r "/sys/class/nvme/nvme$x/subsysnqn" ]; then
    cat "/sys/class/nvme/nvme$x/subsysnqn"
  fi
}

# The namespace UUID of block device $1, or nothing.
dev_uuid() {
  n=$(basename "$(readlink -f "$1")")
  cat "/sys/block/$n/uuid" 2>/dev/null || true
}
