# Destroys and undefines the desktop's domain (then linux-nvme/detach.sh unlinks the namespace).
have virsh || die "virsh is not installed on this host"
virt() { virsh -q -c "$THICKET_LIBVIRT_URI" "$@"; }
if virt dominfo "$THICKET_DOMAIN" >/dev/null 2>&1; then
  case "$(virt domstate "$THICKET_DOMAIN" 2>/dev/null || true)" in
    "shut off" | crashed) ;;
    *)
      mkdir -p "$THICKET_STATE_DIR/domains"
      : >"$THICKET_STATE_DIR/domains/$THICKET_DOMAIN.thicket-stop"
      out=$(virt destroy "$THICKET_DOMAIN" 2>&1) || die "virsh destroy $THICKET_DOMAIN failed: $out"
      ;;
  esac
  out=$(virt undefine "$THICKET_DOMAIN" 2>&1) || die "virsh undefine $THICKET_DOMAIN failed: $out"
fi
rm -f "$THICKET_STATE_DIR/domains/$THICKET_DOMAIN.xml" "$THICKET_STATE_DIR/domains/$THICKET_DOMAIN.was-running"
echo "domain $THICKET_DOMAIN removed"
