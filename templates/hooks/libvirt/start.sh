# Starts the desktop's VM (defining it again if it is gone).
have virsh || die "virsh is not installed on this host"
virt() { virsh -q -c "$THICKET_LIBVIRT_URI" "$@"; }
if ! virt dominfo "$THICKET_DOMAIN" >/dev/null 2>&1; then
  mkdir -p "$THICKET_STATE_DIR/domains"
  printf '%s\n' "$THICKET_DOMAIN_XML" >"$THICKET_STATE_DIR/domains/$THICKET_DOMAIN.xml"
  out=$(virt define "$THICKET_STATE_DIR/domains/$THICKET_DOMAIN.xml" 2>&1) || die "virsh define failed: $out"
fi
case "$(virt domstate "$THICKET_DOMAIN" 2>/dev/null || true)" in
  running | paused) ;;
  *) out=$(virt start "$THICKET_DOMAIN" 2>&1) || die "virsh start $THICKET_DOMAIN failed: $out" ;;
esac
rm -f "$THICKET_STATE_DIR/domains/$THICKET_DOMAIN.was-running"
echo "domain $THICKET_DOMAIN running"
