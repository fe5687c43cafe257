# Removes the desktop's link and disconnects the subsystem when no link on this host still points into it.
take_lock
link="$THICKET_LINK_DIR/$THICKET_DESKTOP"
if [ -L "$link" ]; then
  other=$(dev_uuid "$link")
  [ -z "$other" ] || [ "$other" = "$THICKET_NS_UUID" ] || die "$link belongs to namespace $other, not to this desktop; left in place"
  rm -f "$link"
fi
still=0
for l in "$THICKET_LINK_DIR"/*; do
  [ -L "$l" ] && [ -e "$l" ] || continue
  [ "$(dev_subsys "$l")" = "$THICKET_SUBSYSTEM_NQN" ] && still=$((still + 1))
done
if [ "$still" -eq 0 ] && subsys_connected; then
  out=$(nvme disconnect -n "$THICKET_SUBSYSTEM_NQN" 2>&1) || die "nvme disconnect -n $THICKET_SUBSYSTEM_NQN failed: $out"
  echo "disconnected $THICKET_SUBSYSTEM_NQN"
fi
echo "detached $THICKET_DESKTOP"
