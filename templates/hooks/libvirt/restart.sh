# Restarts the desktop's VM on its (reset) disk: a hard power cycle, as after a forced refresh.
have virsh || die "virsh is not installed on this host"
virt() { virsh -q -c "$THICKET_LIBVIRT_URI" "$@"; }
case "$(virt domstate "$THICKET_DOMAIN" 2>/dev/null || echo missing)" in
  running | paused | "in shutdown")
    mkdir -p "$THICKET_STATE_DIR/domains"
    : >"$THICKET_STATE_DIR/domains/$THICKET_DOMAIN.thicket-stop"
    out=$(virt destroy "$THICKET_DOMAIN" 2>&1) || die "virsh destroy $THICKET_DOMAIN failed: $out"
    ;;
esac
if ! virt dominfo "$THICKET_DOMAIN" >/dev/null 2>&1; then
  mkdir -p "$THICKET_STATE_DIR/domains"
  printf '%s\n' "$THICKET_DOMAIN_XML" >"$THICKET_STATE_DIR/domains/$THICKET_DOMAIN.xml"
  out=$(virt define "$THICKET_STATE_DIR/domains/$THICKET_DOMAIN.xml" 2>&1) || die "virsh define failed: $out"
fi
out=$(virt start "$THICKET_DOMAIN" 2>&1) || die "virsh start $THICKET_DOMAIN failed: $out"
echo "domain $THICKET_DOMAIN restarted"
