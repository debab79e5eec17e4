#!/bin/sh
# /init of the guest initramfs built by scripts/vfio/harness.sh (busybox sh).
#
# Loads the VFIO modules, finds the NIC (PCI vendor:device from
# /harness/conf), optionally checks its link with the kernel's igb driver
# against the host peer (LINKCHECK=1), binds it to vfio-pci, then runs
# /harness/prog with the arguments in /harness/args (one per line) and the
# NIC's BDF appended, prints `RBYPASS-VFIO-RESULT rc=N` and powers off.
# A failure before the program runs prints `RBYPASS-VFIO-SETUP-FAILED: why`
# and no result line (the harness then exits 2).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1
echo # the firmware leaves the cursor mid-line

. /harness/conf

up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "rbypass-vfio [$(up)]: $*"; }
off() {
	sync
	poweroff -f
	sleep 10
	echo o >/proc/sysrq-trigger
}
setup_failed() {
	echo "RBYPASS-VFIO-SETUP-FAILED: $*"
	echo "--- lspci"; lspci -nk 2>/dev/null || true
	echo "--- dmesg (last 40)"; dmesg | tail -40
	off
}
loadmods() {
	while read -r m; do
		[ -n "$m" ] || continue
		insmod "/lib/modules/$KVER/$m" || return 1
	done <"$1"
}

say "booted kernel $(uname -r), loading VFIO modules"
loadmods /harness/vfio.modules || setup_failed "loading the VFIO modules failed"

BDF=
for d in /sys/bus/pci/devices/*; do
	if [ "$(cat "$d/vendor")" = "$NIC_VENDOR" ] && [ "$(cat "$d/device")" = "$NIC_DEVICE" ]; then
		BDF=${d##*/}
		break
	fi
done
[ -n "$BDF" ] || setup_failed "no PCI device $NIC_VENDOR:$NIC_DEVICE"
DEV=/sys/bus/pci/devices/$BDF
say "NIC $NIC_VENDOR:$NIC_DEVICE at $BDF"

LINK_RESULT=skipped
if [ "$LINKCHECK" = 1 ]; then
	LINK_RESULT=fail
	if loadmods /harness/igb.modules; then
		i=0
		while ! ls "$DEV/net" >/dev/null 2>&1 && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
		IF=$(ls "$DEV/net" 2>/dev/null | head -1)
		if [ -n "$IF" ]; then
			ip link set "$IF" up
			ip addr add "$GUEST_IP/24" dev "$IF"
			i=0
			while [ "$(cat "/sys/class/net/$IF/carrier" 2>/dev/null)" != 1 ] && [ $i -lt 100 ]; do
				sleep 0.1
				i=$((i + 1))
			done
			say "kernel igb driver: $IF carrier $(cat "/sys/class/net/$IF/carrier" 2>/dev/null) after $((i * 100)) ms"
			if ping -c 3 -W 2 "$PEER_IP"; then LINK_RESULT=ok; fi
			ip link set "$IF" down
		else
			say "igb bound no netdev"
		fi
		[ -e "$DEV/driver" ] && echo "$BDF" >"$DEV/driver/unbind"
	else
		say "loading the igb modules failed"
	fi
	echo "RBYPASS-VFIO-LINKCHECK $LINK_RESULT"
fi

echo vfio-pci >"$DEV/driver_override"
[ -e "$DEV/driver" ] && echo "$BDF" >"$DEV/driver/unbind"
echo "$BDF" >/sys/bus/pci/drivers_probe
DRV=$(basename "$(readlink "$DEV/driver" 2>/dev/null)" 2>/dev/null)
[ "$DRV" = vfio-pci ] || setup_failed "$BDF is bound to '${DRV:-nothing}', not vfio-pci"
[ -e "$DEV/iommu_group" ] || setup_failed "$BDF has no IOMMU group (IOMMU off? cmdline: $(cat /proc/cmdline))"
GROUP=$(basename "$(readlink "$DEV/iommu_group")")
[ -c "/dev/vfio/$GROUP" ] || setup_failed "/dev/vfio/$GROUP missing"
say "$BDF bound to vfio-pci, IOMMU group $GROUP ($(ls "$DEV/iommu_group/devices" | tr '\n' ' '))"

set --
while IFS= read -r a; do set -- "$@" "$a"; done </harness/args
export RBYPASS_VFIO_BDF="$BDF" RBYPASS_VFIO_GROUP="$GROUP" RBYPASS_VFIO_LINKCHECK="$LINK_RESULT"
export RBYPASS_VFIO_GUEST_IP="$GUEST_IP" RBYPASS_VFIO_PEER_IP="$PEER_IP" PATH="/harness/files:$PATH"
cd /harness
say "running: prog${*:+ $*} $BDF"
echo "RBYPASS-VFIO-BEGIN"
./prog "$@" "$BDF"
rc=$?
echo "RBYPASS-VFIO-END"
echo "RBYPASS-VFIO-RESULT rc=$rc uptime=$(up)"
off
