#!/usr/bin/env bash
# Builds (once, then from a cache) the small QEMU guest that test/system/ drives: Debian's cloud kernel
# plus an uncompressed initramfs with busybox, nvme-cli, fio, e2fsprogs, blkdiscard, kmod and the
# NVMe/TCP modules, whose /init starts a command agent on a virtio-serial port (see guest.ts).
#
# Usage: build-guest.sh            builds if needed, then prints KERNEL=, INITRD=, KVER=, KEY= lines
#        build-guest.sh --force    rebuilds even when the cache has this build
#
# Cache: $THICKET_GUEST_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/thicket-guest. A build is keyed by
# the Debian versions of every package it takes files from and by this script's own text, so a package
# upgrade or an edit here makes a new build. Never commit what lands there.
#
# Needs root for apt-get (installs only what is missing: qemu-system-x86, fio, nvme-cli, kmod, cpio,
# e2fsprogs, util-linux). The kernel and busybox-static are not installed on the host: their .debs are
# downloaded with `apt-get download` and unpacked into the cache.
set -euo pipefail
export LC_ALL=C DEBIAN_FRONTEND=noninteractive
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

force=0
[[ "${1:-}" == "--force" ]] && force=1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
self="$here/$(basename "${BASH_SOURCE[0]}")"
cache="${THICKET_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/thicket-guest}"
mkdir -p "$cache"
log() { echo "build-guest: $*" >&2; }

# One build at a time (test files may start in parallel workers).
exec 9>"$cache/.lock"
flock -w 1200 9 || { log "timed out waiting for $cache/.lock"; exit 1; }

# --- host tools -------------------------------------------------------------------------------------
host_pkgs=(qemu-system-x86 fio nvme-cli kmod cpio e2fsprogs util-linux dropbear-bin)
apt_updated=0
apt_update_once() {
  if [[ $apt_updated == 0 ]]; then
    log "apt-get update"
    apt-get update -qq >&2
    apt_updated=1
  fi
}
missing=()
for p in "${host_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  apt_update_once
  log "apt-get install ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# --- what to build from -------------------------------------------------------------------------------
# apt-cache is slow here (seconds a call), so what it says is remembered for as long as apt's lists
# stay the same.
lists_id() { { ls -l --time-style=+%s /var/lib/apt/lists/ 2>/dev/null; echo "$self"; } | sha256sum | cut -c1-16; }
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ && !n++ { print $2 }'; }
resolve() {
  local meta
  meta="$(candidate linux-image-cloud-amd64)"
  if [[ -z "$meta" || "$meta" == "(none)" ]]; then
    apt_update_once
    meta="$(candidate linux-image-cloud-amd64)"
  fi
  [[ -n "$meta" && "$meta" != "(none)" ]] || { log "linux-image-cloud-amd64 is not in apt's lists"; exit 1; }
  kernel_pkg="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ && !n++ { print $2 }')"
  [[ -n "$kernel_pkg" ]] || { log "cannot tell which kernel linux-image-cloud-amd64 depends on"; exit 1; }
  kernel_version="$(candidate "$kernel_pkg")"
  busybox_version="$(candidate busybox-static)"
  [[ -n "$kernel_version" && -n "$busybox_version" ]] || { log "cannot resolve package versions"; exit 1; }
}
resolved="$cache/resolved-$(lists_id)"
if [[ -f "$resolved" ]]; then
  read -r kernel_pkg kernel_version busybox_version <"$resolved"
else
  resolve
  rm -f "$cache"/resolved-*
  echo "$kernel_pkg $kernel_version $busybox_version" >"$resolved"
fi

installed() { dpkg-query -W -f='${Version}' "$1"; }
manifest="kernel=$kernel_pkg=$kernel_version
busybox-static=$busybox_version
fio=$(installed fio)
nvme-cli=$(installed nvme-cli)
libnvme1=$(installed libnvme1 2>/dev/null || true)
e2fsprogs=$(installed e2fsprogs)
util-linux=$(installed util-linux)
kmod=$(installed kmod)
dropbear-bin=$(installed dropbear-bin)
libc6=$(installed libc6)
script=$(sha256sum "$self" | cut -c1-16)"
key="$(printf '%s\n' "$manifest" | sha256sum | cut -c1-16)"
out="$cache/builds/$key"

emit() {
  echo "KERNEL=$out/vmlinuz"
  echo "INITRD=$out/initramfs.cpio"
  echo "KVER=$(cat "$out/kver")"
  echo "KEY=$key"
  echo "CACHE=$cache"
}

if [[ $force == 0 && -f "$out/done" ]]; then
  emit
  exit 0
fi

start=$SECONDS
log "building guest $key"

# --- downloaded packages (not installed on the host) ---------------------------------------------------
debs="$cache/debs"
mkdir -p "$debs"
fetch_deb() { # name version -> path of the .deb
  local name="$1" version="$2" f
  f="$(ls "$debs/${name}_"*.deb 2>/dev/null | grep -F "_${version//:/%3a}_" | head -1 || true)"
  if [[ -z "$f" ]]; then
    log "apt-get download $name=$version"
    if ! (cd "$debs" && apt-get download -qq "$name=$version" 2>"$debs/.err"); then
      log "apt-get download failed, updating apt's lists and retrying"
      apt-get update -qq >&2
      (cd "$debs" && apt-get download -qq "$name=$version" 2>"$debs/.err") || { cat "$debs/.err" >&2; exit 1; }
    fi
    rm -f "$debs/.err"
    f="$(ls "$debs/${name}_"*.deb | grep -F "_${version//:/%3a}_" | head -1)"
  fi
  echo "$f"
}
kernel_deb="$(fetch_deb "$kernel_pkg" "$kernel_version")"
busybox_deb="$(fetch_deb busybox-static "$busybox_version")"

work="$cache/work-$key"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

kx="$work/kernel"
dpkg-deb -x "$kernel_deb" "$kx"
kver="$(ls "$kx/lib/modules" | head -1)"
[[ -n "$kver" && -f "$kx/boot/vmlinuz-$kver" ]] || { log "no kernel in $kernel_deb"; exit 1; }
depmod -b "$kx" "$kver"

bx="$work/busybox"
dpkg-deb -x "$busybox_deb" "$bx"

# --- the initramfs tree ---------------------------------------------------------------------------------
root="$work/root"
mkdir -p "$root"/usr/{bin,sbin,lib/x86_64-linux-gnu,lib64} "$root"/{dev,proc,sys,tmp,run,root,mnt,etc/nvme,var/tmp}
ln -s usr/bin "$root/bin"
ln -s usr/sbin "$root/sbin"
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
chmod 1777 "$root/tmp" "$root/var/tmp"

cp "$bx/bin/busybox" "$root/usr/bin/busybox"
for applet in $("$root/usr/bin/busybox" --list); do
  [[ "$applet" == busybox ]] || ln -sf busybox "$root/usr/bin/$applet"
done

# Copies a host file (following symlinks) to the same path in the tree.
put() {
  local src="$1" dst="$root$1"
  mkdir -p "$(dirname "$dst")"
  rm -f "$dst"
  cp -L "$src" "$dst"
}
# Copies a host binary and its whole ldd closure.
put_bin() {
  local bin lib
  bin="$(command -v "$1")" || { log "$1 is not on the host"; exit 1; }
  put "$bin"
  for lib in $(ldd "$bin" | grep -o '/[^ )]*' | sort -u); do
    [[ -e "$root$lib" ]] || put "$lib"
  done
  echo "$bin"
}
for tool in bash dd nvme fio kmod mke2fs e2fsck tune2fs dumpe2fs debugfs resize2fs blkdiscard lsblk blockdev wipefs fstrim flock dropbear dropbearkey; do
  put_bin "$tool" >/dev/null
done
for m in modprobe insmod rmmod lsmod modinfo depmod; do ln -sf ../bin/kmod "$root/usr/sbin/$m"; done
for m in mkfs.ext2 mkfs.ext3 mkfs.ext4; do ln -sf mke2fs "$root/usr/sbin/$m"; done
for m in fsck.ext2 fsck.ext3 fsck.ext4; do ln -sf e2fsck "$root/usr/sbin/$m"; done
# Commands from the tests run under bash, whose PATH (/usr/sbin first) finds these tools before
# busybox's applets of the same names. (busybox sh would run its own applets whatever PATH says.)
for t in blkdiscard blockdev fstrim mke2fs wipefs modprobe insmod rmmod lsmod modinfo depmod flock; do
  [[ -e "$root/usr/sbin/$t" || -L "$root/usr/sbin/$t" ]] && rm -f "$root/usr/bin/$t"
done
put /etc/mke2fs.conf

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
EOF
echo "/bin/sh" >"$root/etc/shells"
echo "thicket-guest" >"$root/etc/hostname"
echo "127.0.0.1 localhost thicket-guest" >"$root/etc/hosts"

# Kernel modules: every one these need, with its dependencies, found by kmod in the unpacked kernel.
modules=(
  nvme-tcp nvme-fabrics nvme-core
  nvmet nvmet-tcp null_blk loop
  crc32c_generic crc32c-intel libcrc32c crc32_generic crct10dif_generic crct10dif-pclmul crc64-rocksoft
  virtio_net virtio_pci virtio_blk virtio_console virtio-rng
  ext4 configfs
)
: >"$work/modfiles"
for m in "${modules[@]}"; do
  modprobe -d "$kx" -S "$kver" --show-depends "$m" 2>/dev/null | awk '$1 == "insmod" { print $2 }' >>"$work/modfiles" || true
done
while read -r f; do
  rel="${f#"$kx"}"
  mkdir -p "$root/usr$(dirname "$rel")"
  cp "$f" "$root/usr$rel"
done < <(sort -u "$work/modfiles")
for f in modules.order modules.builtin modules.builtin.modinfo; do
  [[ -f "$kx/lib/modules/$kver/$f" ]] && cp "$kx/lib/modules/$kver/$f" "$root/usr/lib/modules/$kver/"
done
depmod -b "$root/usr" "$kver"
printf '%s\n' "${modules[@]}" >"$root/etc/thicket-modules"

# --- /init and the agent ---------------------------------------------------------------------------------
cat >"$root/init" <<'EOF'
#!/bin/sh
# Thicket test guest. The kernel console is ttyS0; the command agent speaks on a virtio-serial port (or ttyS1).
export PATH=/usr/sbin:/usr/bin HOME=/root TERM=dumb
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
echo /usr/sbin/modprobe >/proc/sys/kernel/modprobe
hostname thicket-guest

say() { echo "thicket-init: $*"; }

for m in $(cat /etc/thicket-modules); do
  case "$m" in
    nvmet|nvmet-tcp|null_blk|virtio_blk) continue ;; # loaded on demand by tests
  esac
  /usr/sbin/modprobe "$m" 2>/dev/null || say "modprobe $m failed (built in or absent)"
done

mount -t configfs configfs /sys/kernel/config || say "cannot mount configfs"

hostnqn=""; hostid=""; agent_tty=/dev/ttyS1; sshkey=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    thicket.sshkey=*) sshkey="${arg#thicket.sshkey=}" ;;
    thicket.hostnqn=*) hostnqn="${arg#thicket.hostnqn=}" ;;
    thicket.hostid=*) hostid="${arg#thicket.hostid=}" ;;
    thicket.agent=*) agent_tty="/dev/${arg#thicket.agent=}" ;;
  esac
done
[ -n "$hostnqn" ] && echo "$hostnqn" >/etc/nvme/hostnqn
[ -n "$hostid" ] && echo "$hostid" >/etc/nvme/hostid

# QEMU user networking: the guest is 10.0.2.15, the host (its loopback too) is 10.0.2.2.
ip link set lo up
dev=""
i=0
while [ $i -lt 100 ]; do
  for d in /sys/class/net/*; do
    n="${d##*/}"
    [ "$n" = lo ] || { dev="$n"; break; }
  done
  [ -n "$dev" ] && break
  i=$((i + 1)); sleep 0.1
done
if [ -n "$dev" ]; then
  ip link set "$dev" up
  ip addr add 10.0.2.15/24 dev "$dev"
  ip route add default via 10.0.2.2
  say "network on $dev"
else
  say "no network interface"
fi

# An SSH server (dropbear) for hook tests when the kernel command line carries an authorized key
# (thicket.sshkey=<base64 of an OpenSSH public key line>); QEMU forwards a host loopback port to it.
if [ -n "$sshkey" ]; then
  mkdir -p /root/.ssh /etc/dropbear /var/log
  chmod 700 /root /root/.ssh
  echo "$sshkey" | base64 -d >/root/.ssh/authorized_keys
  chmod 600 /root/.ssh/authorized_keys
  dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key >/dev/null 2>&1
  dropbear -s -r /etc/dropbear/dropbear_ed25519_host_key -p 22 && say "dropbear listening on 22" || say "dropbear failed"
fi

# The agent, on a virtio-serial port (thicket.agent=vport) or ttyS1. Requests are one line each:
# "<id> <timeout seconds> <base64 of a bash script>".
# Replies: "@@THICKET-BEGIN <id>", base64 of stdout, "@@THICKET-STDERR <id>", base64 of stderr,
# "@@THICKET-END <id> <exit code>". The script runs under bash in its own session and is killed (its
# whole process group) after the timeout; it then exits 137.
agent() {
  tty=$agent_tty
  i=0
  while [ $i -lt 100 ]; do
    if [ "$tty" = /dev/vport ]; then
      for p in /dev/vport*p1; do [ -e "$p" ] && tty=$p; done
    fi
    [ -e "$tty" ] && break
    i=$((i + 1)); sleep 0.1
  done
  [ -e "$tty" ] || say "no agent port $tty"
  case "$tty" in
    /dev/tty*|/dev/hvc*) stty -F $tty raw -echo 2>/dev/null ;;
  esac
  exec <>"$tty" >&0 # one open: a virtio port allows only one
  mkdir -p /run/agent
  cd /root
  echo "@@THICKET-READY $(uname -r)"
  while IFS= read -r line; do
    set -- $line
    id="$1"; tmo="$2"; b64="$3"
    [ -n "$id" ] || continue
    if [ "$id" = ping ]; then echo "@@THICKET-PONG"; continue; fi
    echo "$b64" | base64 -d >/run/agent/cmd.sh 2>/dev/console
    setsid bash /run/agent/cmd.sh </dev/null >/run/agent/out 2>/run/agent/err &
    pid=$!
    ( sleep "${tmo:-60}"; kill -KILL -- "-$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null ) </dev/null >/dev/null 2>&1 &
    watchdog=$!
    wait $pid
    code=$?
    kill $watchdog 2>/dev/null
    echo "@@THICKET-BEGIN $id"
    base64 /run/agent/out
    echo "@@THICKET-STDERR $id"
    base64 /run/agent/err
    echo "@@THICKET-END $id $code"
  done
}
say "ready"
agent 2>/dev/console
say "agent stopped"
poweroff -f
EOF
chmod 755 "$root/init"
# A console node for the kernel's first open, when mknod is allowed here (/init copes without it).
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true

# --- pack --------------------------------------------------------------------------------------------------
mkdir -p "$out.tmp"
cp "$kx/boot/vmlinuz-$kver" "$out.tmp/vmlinuz"
(cd "$root" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --quiet) >"$out.tmp/initramfs.cpio"
echo "$kver" >"$out.tmp/kver"
printf '%s\n' "$manifest" >"$out.tmp/manifest"
rm -rf "$out"
mv "$out.tmp" "$out"
touch "$out/done"
log "built $key in $((SECONDS - start)) s: $(du -h "$out/initramfs.cpio" | cut -f1) initramfs, kernel $kver"

# A new build probes KVM afresh (guest.ts remembers a stalled KVM boot per build).
rm -f "$cache"/kvm-stalls-*
# Keep the two newest builds; drop older ones and .debs no build uses any more.
ls -1dt "$cache"/builds/*/ 2>/dev/null | tail -n +3 | xargs -r rm -rf
for f in "$debs"/*.deb; do
  [[ "$f" == "$kernel_deb" || "$f" == "$busybox_deb" ]] || rm -f "$f"
done
emit
