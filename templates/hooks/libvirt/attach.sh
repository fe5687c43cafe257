# After the namespace is linked (linux-nvme/attach.sh): installs the qemu hook that reports VM events,
# defines the desktop's domain from the rendered XML and starts it. Safe to run again.
have virsh || die "virsh is not installed on this host"
virt() { virsh -q -c "$THICKET_LIBVIRT_URI" "$@"; }
mkdir -p "$THICKET_LIBVIRT_HOOK_DIR" "$THICKET_STATE_DIR/domains"
hook="$THICKET_LIBVIRT_HOOK_DIR/thicket"
if [ ! -f "$hook" ] || [ "$(cat "$hook")" != "$THICKET_QEMU_HOOK" ]; then
  # The script holds this host's token: never readable by others, not even while it is written.
  umask 077
  printf '%s\n' "$THICKET_QEMU_HOOK" >"$hook.tmp"
  chmod 0700 "$hook.tmp"
  mv -f "$hook.tmp" "$hook"
  log "installed $hook (libvirtd picks up new hook scripts when it restarts)"
fi
xml="$THICKET_STATE_DIR/domains/$THICKET_DOMAIN.xml"
printf '%s\n' "$THICKET_DOMAIN_XML" >"$xml"
if ! virt dominfo "$THICKET_DOMAIN" >/dev/null 2>&1; then
  out=$(virt define "$xml" 2>&1) || die "virsh define failed: $out"
fi
case "$(virt domstate "$THICKET_DOMAIN" 2>/dev/null || true)" in
  running | paused | "in shutdown") ;;
  *) out=$(virt start "$THICKET_DOMAIN" 2>&1) || die "virsh start $THICKET_DOMAIN failed: $out" ;;
esac
echo "domain $THICKET_DOMAIN running"
