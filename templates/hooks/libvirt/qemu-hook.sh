# libvirt qemu hook (installed as <hooks>/qemu.d/thicket): tells Thicket when a desktop VM it defined
# starts or stops. libvirtd waits for hooks, so the report runs in the background and never blocks it.
# Arguments: domain name, operation; the domain XML comes on stdin. A stop Thicket caused itself (around
# a reset, a restart or a detach) left a marker: it is not reported, or a late report could reset the
# disk under the VM Thicket has started again meanwhile.
case "${2:-}" in
  started) event=vm-started ;;
  stopped) event=vm-stopped ;;
  *) exit 0 ;;
esac
case "${1:-}" in *[!A-Za-z0-9._+-]* | '') exit 0 ;; esac
marker="$THICKET_STATE_DIR/domains/$1.thicket-stop"
if [ "$event" = vm-stopped ] && [ -f "$marker" ]; then
  rm -f "$marker"
  exit 0
fi
meta=$(sed -n "s/.*<thicket:desktop[^>]* pool=[\"']\([0-9a-f-]*\)[\"'][^>]* name=[\"']\([A-Za-z0-9._-]*\)[\"'].*/\\1 \\2/p" | head -n 1)
[ -n "$meta" ] || exit 0
pool=${meta% *}
desktop=${meta#* }
url="$THICKET_API_URL/api/v1/desktop-pools/$pool/desktops/$desktop/state"
body="{\"event\":\"$event\"}"
(
  i=0
  while [ $i -lt 5 ]; do
    if command -v curl >/dev/null 2>&1; then
      code=$(curl -sS -m 10 -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $THICKET_HOST_TOKEN" -H 'Content-Type: application/json' -d "$body" "$url" 2>/dev/null)
      # 2xx: reported. 4xx: Thicket refused this report (the desktop is busy or gone); retrying later
      # would deliver a stale event. Anything else (no answer, 5xx) is worth another try.
      case "$code" in 2??|4??) exit 0 ;; esac
    else
      wget -q -T 10 -O /dev/null --header="Authorization: Bearer $THICKET_HOST_TOKEN" --header='Content-Type: application/json' --post-data="$body" "$url" && exit 0
    fi
    i=$((i + 1))
    sleep $((i * 2))
  done
) </dev/null >/dev/null 2>&1 &
exit 0
