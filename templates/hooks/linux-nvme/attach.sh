# Connects the host to the desktop's subsystem (once: a connected subsystem is left as it is, and a
# second connect racing this one is fine), waits for the namespace by its UUID and links it as
# $THICKET_LINK_DIR/<desktop>. Safe to run again.
have nvme || die "nvme-cli is not installed on this host"
[ -e /dev/nvme-fabrics ] || modprobe nvme-tcp >/dev/null 2>&1 || true
[ -e /dev/nvme-fabrics ] || die "the NVMe/TCP initiator is not available (modprobe nvme-tcp failed; /dev/nvme-fabrics is missing)"
take_lock
if ! subsys_connected; then
  if ! out=$(nvme connect -t tcp -a "$THICKET_TARGET_ADDRESS" -s "$THICKET_TARGET_PORT" -n "$THICKET_SUBSYSTEM_NQN" \
    --hostnqn="$THICKET_HOST_NQN" --reconnect-delay="$THICKET_RECONNECT_DELAY" --ctrl-loss-tmo="$THICKET_CTRL_LOSS_TMO" 2>&1); then
    subsys_connected || tempfail "nvme connect to $THICKET_SUBSYSTEM_NQN at $THICKET_TARGET_ADDRESS:$THICKET_TARGET_PORT failed: $out"
  fi
fi
release_lock
dev=""
i=0
while [ "$i" -lt $((THICKET_WAIT_SECONDS * 4)) ]; do
  dev=$(ns_dev "$THICKET_NS_UUID") && break
  dev=""
  sleep 0.25
  i=$((i + 1))
done
[ -n "$dev" ] || tempfail "namespace $THICKET_NS_UUID of $THICKET_SUBSYSTEM_NQN did not appear within $THICKET_WAIT_SECONDS s"
# Linking under the lock: a detach counts links to decide whether to disconnect the subsystem.
take_lock
subsys_connected || tempfail "$THICKET_SUBSYSTEM_NQN was disconnected while this hook waited for its namespace"
mkdir -p "$THICKET_LINK_DIR"
link="$THICKET_LINK_DIR/$THICKET_DESKTOP"
if [ -L "$link" ] && [ -e "$link" ]; then
  other=$(dev_uuid "$link")
  [ -z "$other" ] || [ "$other" = "$THICKET_NS_UUID" ] || die "$link already belongs to namespace $other (another pool's desktop of the same name?)"
fi
ln -sfn "$dev" "$link"
release_lock
echo "linked $link -> $dev"
