# Powers the desktop's VM off before its clone is reset; prints "was-running" when it ran.
have virsh || die "virsh is not installed on this host"
virt() { virsh -q -c "$THICKET_LIBVIRT_URI" "$@"; }
case "$(virt domstate "$THICKET_DOMAIN" 2>/dev/null || echo missing)" in
  running | paused | "in shutdown")
    out=$(virt destroy "$THICKET_DOMAIN" 2>&1) || die "virsh destroy $THICKET_DOMAIN failed: $out"
    echo "was-running"
    ;;
esac
