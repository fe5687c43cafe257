# Powers the desktop's VM off before its clone is reset; prints "was-running" when it ran. The fact is kept
# in a marker file until start.sh, so a retried run (the first one's output lost with its connection)
# still reports it.
have virsh || die "virsh is not installed on this host"
virt() { virsh -q -c "$THICKET_LIBVIRT_URI" "$@"; }
mkdir -p "$THICKET_STATE_DIR/domains"
was="$THICKET_STATE_DIR/domains/$THICKET_DOMAIN.was-running"
case "$(virt domstate "$THICKET_DOMAIN" 2>/dev/null || echo missing)" in
  running | paused | "in shutdown")
    : >"$was"
    : >"$THICKET_STATE_DIR/domains/$THICKET_DOMAIN.thicket-stop"
    out=$(virt destroy "$THICKET_DOMAIN" 2>&1) || die "virsh destroy $THICKET_DOMAIN failed: $out"
    ;;
esac
[ -f "$was" ] && echo "was-running"
exit 0
