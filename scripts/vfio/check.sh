#!/bin/sh
# The harness's built-in smoke program (`harness.sh --check`), run in the
# guest by busybox sh with the NIC's BDF as its last argument: the device is
# bound to vfio-pci, /dev/vfio/vfio and the group node exist, the group holds
# only this device; then (if present) vfio_check opens it all through VFIO,
# maps DMA and BAR0 and brings the igb link up.
eval "bdf=\${$#}"
dev=/sys/bus/pci/devices/$bdf
fails=0
ok() { echo "check: ok   $*"; }
bad() { echo "check: FAIL $*"; fails=$((fails + 1)); }

drv=$(basename "$(readlink "$dev/driver" 2>/dev/null)" 2>/dev/null)
[ "$drv" = vfio-pci ] && ok "$bdf bound to vfio-pci" || bad "$bdf bound to '${drv:-nothing}'"
[ -c /dev/vfio/vfio ] && ok "/dev/vfio/vfio exists" || bad "/dev/vfio/vfio missing"
group=$(basename "$(readlink "$dev/iommu_group" 2>/dev/null)" 2>/dev/null)
[ -n "$group" ] && [ -c "/dev/vfio/$group" ] && ok "/dev/vfio/$group exists" || bad "group node for '$group' missing"
members=$(ls "$dev/iommu_group/devices" 2>/dev/null)
[ "$members" = "$bdf" ] && ok "group $group holds only $bdf (viable)" || bad "group $group holds: $members"
case "${RBYPASS_VFIO_LINKCHECK:-skipped}" in
ok) ok "kernel igb driver: link up, pinged the host peer $RBYPASS_VFIO_PEER_IP" ;;
skipped) echo "check: skip kernel igb link check" ;;
*) bad "kernel igb driver link check: $RBYPASS_VFIO_LINKCHECK" ;;
esac
if [ -x /harness/files/vfio_check ]; then
	/harness/files/vfio_check --link "$bdf" && ok "vfio_check" || bad "vfio_check"
else
	echo "check: skip vfio_check (not built: no gcc/static libc on the host)"
fi
[ $fails = 0 ] && echo "check: all passed" || echo "check: $fails failed"
exit $fails
