#!/usr/bin/env bash
# VFIO test harness: boot a qemu guest with an emulated igb NIC behind an
# emulated Intel IOMMU, bind the NIC to vfio-pci in the guest, run a program
# there and bring its exit status back over the serial console.
#
#   scripts/vfio/harness.sh [OPTIONS] PROGRAM [ARGS...]
#   scripts/vfio/harness.sh --check
#
# PROGRAM (a static binary, e.g. built with RUSTFLAGS='-C target-feature=+crt-static'
# --target x86_64-unknown-linux-gnu, or a busybox `#!/bin/sh` script: the guest
# has no libc and no bash) is copied into the guest and run as
# `PROGRAM ARGS... BDF` (BDF = the igb's PCI address, e.g. 0000:00:03.0) with
# the environment RBYPASS_VFIO_BDF, RBYPASS_VFIO_GROUP, RBYPASS_VFIO_GUEST_IP,
# RBYPASS_VFIO_PEER_IP. The harness exits with PROGRAM's exit status, or 2 if
# the guest never reported one (setup failure, timeout, kernel panic), printing
# the end of the console log. PROGRAM's output is printed after the run.
#
# Options:
#   --check         run the built-in smoke program (check.sh + vfio_check.c):
#                   device bound to vfio-pci, /dev/vfio/vfio and the group node
#                   exist, the group holds only the NIC, then through VFIO:
#                   viable group, type1 IOMMU, DMA map, BAR0 mmap, igb link up.
#                   Also does --link first.
#   --link          before binding to vfio-pci, bring the NIC up with the guest
#                   kernel's igb driver and ping the host peer (proves the
#                   frame path igb <-> peer); the driver is then unbound.
#   --include FILE  also copy FILE into the guest's /harness/files/ (on PATH);
#                   repeatable.
#   -v, --verbose   stream the serial console while the guest runs.
#   -h, --help
#
# Environment: VFIO_TIMEOUT (s, default 300), VFIO_MEM (default 768M),
#   VFIO_SMP (default 2), VFIO_ACCEL (tcg|kvm|auto, default tcg: see below),
#   VFIO_KERNEL (linux-image-* flavour: amd64 (default, has igb for --link) or
#   cloud-amd64 (no igb driver: --link is skipped)), VFIO_CMDLINE (extra guest
#   kernel arguments), VFIO_CACHE (default target/vfio-cache),
#   VFIO_PEER_CMD (replace the default peer, see below), VFIO_REFRESH=1
#   (re-download the kernel and busybox), VFIO_LOGDIR (default
#   target/vfio-cache/last; give each of several concurrent runs its own).
#
# What it installs (as root, apt, non-interactive, only when missing):
#   qemu-system-x86 >= 8 (-device igb); on bookworm that is bookworm-backports
#   (10.0.2+ds-2+deb13u1~bpo12+1): the backports source is added to
#   /etc/apt/sources.list.d/bookworm-backports.sources if absent. Also cpio,
#   python3, and gcc + libc6-dev for --check's vfio_check (skipped without).
#   The guest kernel (linux-image-<flavour>'s current linux-image-6.x package)
#   and busybox-static are fetched with `apt-get download` and extracted
#   (dpkg-deb -x) into the cache, never installed on the host. Kernel modules
#   come from the package's own tree: moddeps.py reads the .ko's .modinfo
#   (the .deb has no modules.dep and kmod may be missing).
#
# The guest: q35 with kernel-irqchip=split, intel-iommu (intremap, caching
#   mode), igb at 00:03.0 (8086:10c9), cmdline `console=ttyS0 intel_iommu=on
#   iommu=nopt panic=-1`, busybox initramfs whose /init is init.sh.
#   KVM: this machine's /dev/kvm exists but a guest hangs right after the
#   bootloader (no earlyprintk output, one host core at 100% sys), with any
#   -cpu; so TCG is the default, VFIO_ACCEL=kvm (or auto: kvm when /dev/kvm
#   is usable) where KVM works. TCG: ~20 s for --check, ~10 s for a program.
#
# The network: the igb's netdev is `-netdev dgram` over two unix datagram
#   sockets in a private temporary directory, so nothing reaches any real
#   network (no slirp, no tap):
#     qemu  binds  $RUN/guest.sock  (local.path)  and sends to $RUN/peer.sock
#     peer  binds  $RUN/peer.sock   (remote.path) and sends to $RUN/guest.sock
#   Each datagram is one raw Ethernet frame (no FCS). The default peer is
#   `peer.py --sock $RUN/peer.sock --guest $RUN/guest.sock --ip 10.99.0.2`,
#   which answers ARP and ping for 10.99.0.2 (the guest side uses 10.99.0.1,
#   MAC 52:54:00:12:34:56) and logs every frame; import peer.Peer from Python
#   to send/receive frames yourself. VFIO_PEER_CMD replaces it: a shell command
#   run with PEER_SOCK and GUEST_SOCK exported, which must bind PEER_SOCK.
#   qemu also writes every frame both ways to a pcap (filter-dump).
#
# Logs of the last run: target/vfio-cache/last/{console.log,peer.log,igb.pcap}.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${VFIO_CACHE:-$ROOT/target/vfio-cache}
FLAVOUR=${VFIO_KERNEL:-amd64}
TIMEOUT=${VFIO_TIMEOUT:-300}
MEM=${VFIO_MEM:-768M}
SMP=${VFIO_SMP:-2}
ACCEL=${VFIO_ACCEL:-tcg}
NIC_VENDOR=0x8086
NIC_DEVICE=0x10c9
GUEST_MAC=52:54:00:12:34:56
GUEST_IP=10.99.0.1
PEER_IP=10.99.0.2

T0=$(date +%s.%N)
log() { echo "vfio-harness: $*" >&2; }
die() { log "error: $*"; exit 2; }
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

CHECK=0 LINK=0 VERBOSE=0
INCLUDES=()
while [ $# -gt 0 ]; do
	case "$1" in
	--check) CHECK=1 LINK=1; shift ;;
	--link) LINK=1; shift ;;
	--include) INCLUDES+=("$2"); shift 2 ;;
	-v | --verbose) VERBOSE=1; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; break ;;
	-*) die "unknown option $1 (see --help)" ;;
	*) break ;;
	esac
done
if [ $CHECK = 1 ]; then
	PROG=$HERE/check.sh
	[ $# -eq 0 ] || die "--check takes no program"
else
	[ $# -ge 1 ] || { usage; exit 2; }
	PROG=$1
	shift
fi
[ -f "$PROG" ] || die "$PROG: no such file"
for f in ${INCLUDES[@]+"${INCLUDES[@]}"}; do [ -f "$f" ] || die "$f: no such file"; done

# ---------------------------------------------------------------- host packages
APT_UPDATED=0
apt_update() {
	[ $APT_UPDATED = 1 ] && return 0
	log "apt-get update"
	apt-get update -q >/dev/null
	APT_UPDATED=1
}
apt_install() {
	[ "$(id -u)" = 0 ] || die "need root to install $* (or install it yourself)"
	apt_update
	log "installing $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}
major() { sed -e 's/^[0-9]*://' -e 's/[^0-9].*//'; } # "1:10.0.2+ds" -> 10

ensure_qemu() {
	local have=0
	if command -v qemu-system-x86_64 >/dev/null; then
		have=$(qemu-system-x86_64 --version | sed -n '1s/.*version \([0-9]*\).*/\1/p')
	fi
	[ "${have:-0}" -ge 8 ] && return 0
	[ "$(id -u)" = 0 ] || die "qemu-system-x86_64 >= 8 needed (have ${have:-none}); run as root to install it"
	apt_update
	local cand codename
	cand=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ { print $2 }' | major)
	if [ "${cand:-0}" -ge 8 ]; then
		apt_install qemu-system-x86
	else
		codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
		[ "$codename" = bookworm ] || die "qemu-system-x86 candidate is ${cand:-none} (< 8) on '$codename'; install qemu >= 8 yourself"
		if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
			log "adding bookworm-backports to /etc/apt/sources.list.d/bookworm-backports.sources"
			cat >/etc/apt/sources.list.d/bookworm-backports.sources <<-'EOF'
				Types: deb
				URIs: http://deb.debian.org/debian
				Suites: bookworm-backports
				Components: main
				Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
			EOF
		fi
		APT_UPDATED=0
		apt_update
		[ "$(id -u)" = 0 ] || die "need root"
		log "installing qemu-system-x86 from bookworm-backports"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			-t bookworm-backports qemu-system-x86 >/dev/null
	fi
	have=$(qemu-system-x86_64 --version | sed -n '1s/.*version \([0-9]*\).*/\1/p')
	[ "${have:-0}" -ge 8 ] || die "qemu-system-x86_64 is still version ${have:-none}"
}

ensure_tools() {
	local missing=()
	command -v cpio >/dev/null || missing+=(cpio)
	command -v python3 >/dev/null || missing+=(python3)
	command -v dpkg-deb >/dev/null || die "dpkg-deb missing: this harness needs a Debian-family host"
	command -v timeout >/dev/null || missing+=(coreutils)
	if [ $CHECK = 1 ] && ! { command -v gcc >/dev/null && [ -e /usr/include/linux/vfio.h ]; }; then
		if [ "$(id -u)" = 0 ]; then missing+=(gcc libc6-dev linux-libc-dev); fi
	fi
	[ ${#missing[@]} = 0 ] || apt_install "${missing[@]}"
}

# fetch PKG into $CACHE/debs (apt-get download; refreshes the lists once if needed)
fetch_deb() {
	local pkg=$1
	mkdir -p "$CACHE/debs"
	rm -f "$CACHE/debs/${pkg}_"*.deb
	if ! (cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null 2>&1); then
		APT_UPDATED=0
		[ "$(id -u)" = 0 ] && apt_update
		(cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null) ||
			die "apt-get download $pkg failed"
	fi
	ls "$CACHE/debs/${pkg}_"*.deb
}

# ---------------------------------------------------------------- guest kernel + busybox
KDIR=$CACHE/kernel-$FLAVOUR
ensure_kernel() {
	[ -f "$KDIR/vmlinuz" ] && [ -f "$KDIR/vfio.modules" ] && [ "${VFIO_REFRESH:-0}" != 1 ] && return 0
	local pkg deb tmp kver mods
	pkg=$(apt-cache depends "linux-image-$FLAVOUR" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	if [ -z "$pkg" ]; then
		[ "$(id -u)" = 0 ] && { APT_UPDATED=0; apt_update; }
		pkg=$(apt-cache depends "linux-image-$FLAVOUR" | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	fi
	[ -n "$pkg" ] || die "cannot resolve linux-image-$FLAVOUR to a kernel package"
	log "fetching guest kernel $pkg"
	deb=$(fetch_deb "$pkg")
	kver=${pkg#linux-image-}
	tmp=$CACHE/kernel-extract.$$
	rm -rf "$tmp" "$KDIR.new"
	dpkg-deb -x "$deb" "$tmp"
	mods=$tmp/lib/modules/$kver
	[ -d "$mods" ] || die "$deb has no lib/modules/$kver"
	mkdir -p "$KDIR.new"
	cp "$tmp/boot/vmlinuz-$kver" "$KDIR.new/vmlinuz"
	cp "$tmp/boot/config-$kver" "$KDIR.new/config"
	echo "$kver" >"$KDIR.new/kver"
	dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb" >"$KDIR.new/package"
	python3 "$HERE/moddeps.py" "$mods" vfio vfio_iommu_type1 vfio_pci >"$KDIR.new/vfio.modules" ||
		die "$pkg lacks VFIO modules"
	python3 "$HERE/moddeps.py" "$mods" igb >"$KDIR.new/igb.modules" 2>/dev/null || : >"$KDIR.new/igb.modules"
	cat "$KDIR.new/vfio.modules" "$KDIR.new/igb.modules" | while read -r m; do
		mkdir -p "$KDIR.new/modules/$(dirname "$m")"
		cp "$mods/$m" "$KDIR.new/modules/$m"
	done
	rm -rf "$tmp" "$KDIR" "$deb"
	mv "$KDIR.new" "$KDIR"
}

BBDIR=$CACHE/busybox
ensure_busybox() {
	[ -x "$BBDIR/busybox" ] && [ "${VFIO_REFRESH:-0}" != 1 ] && return 0
	log "fetching busybox-static"
	local deb tmp
	deb=$(fetch_deb busybox-static)
	tmp=$CACHE/busybox-extract.$$
	rm -rf "$tmp"
	dpkg-deb -x "$deb" "$tmp"
	mkdir -p "$BBDIR"
	cp "$tmp/bin/busybox" "$BBDIR/busybox"
	dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb" >"$BBDIR/package"
	"$BBDIR/busybox" --list-full >"$BBDIR/applets"
	rm -rf "$tmp" "$deb"
}

# the part of the initramfs that only changes with the kernel or busybox
build_base() {
	local base=$CACHE/base-$FLAVOUR.cpio stamp
	stamp="$(cat "$KDIR/package" "$BBDIR/package" | tr '\n' ' ')"
	if [ -f "$base" ] && [ "$(cat "$base.stamp" 2>/dev/null)" = "$stamp" ]; then
		echo "$base"
		return 0
	fi
	local st=$CACHE/base-stage.$$ kver
	kver=$(cat "$KDIR/kver")
	rm -rf "$st"
	mkdir -p "$st"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc,harness/files,lib/modules/"$kver"}
	cp "$BBDIR/busybox" "$st/bin/busybox"
	while read -r a; do
		[ "$a" = bin/busybox ] || [ -e "$st/$a" ] || ln -s /bin/busybox "$st/$a"
	done <"$BBDIR/applets"
	cp -r "$KDIR/modules/." "$st/lib/modules/$kver/"
	cp "$KDIR/vfio.modules" "$KDIR/igb.modules" "$st/harness/"
	(cd "$st" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$base.new"
	rm -rf "$st"
	mv "$base.new" "$base"
	echo "$stamp" >"$base.stamp"
	echo "$base"
}

# ---------------------------------------------------------------- run
ensure_qemu
ensure_tools
ensure_kernel
ensure_busybox
BASE=$(build_base)
KVER=$(cat "$KDIR/kver")
if [ $LINK = 1 ] && [ ! -s "$KDIR/igb.modules" ]; then
	log "linux-image-$FLAVOUR has no igb driver: skipping the kernel-driver link check"
	LINK=0
fi

RUN=$(mktemp -d "${TMPDIR:-/tmp}/rbypass-vfio.XXXXXX")
LAST=${VFIO_LOGDIR:-$CACHE/last}
rm -rf "$LAST"
mkdir -p "$LAST"
PEER_PID=
QEMU_STATUS=
cleanup() {
	if [ -n "$PEER_PID" ]; then
		kill "$PEER_PID" 2>/dev/null || true
		wait "$PEER_PID" 2>/dev/null || true
	fi
	rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# per-run layer: /init, config, the program and its arguments, included files
OV=$RUN/overlay
mkdir -p "$OV/harness/files"
install -m 755 "$HERE/init.sh" "$OV/init"
install -m 755 "$PROG" "$OV/harness/prog"
: >"$OV/harness/args"
for a in "$@"; do printf '%s\n' "$a" >>"$OV/harness/args"; done
cat >"$OV/harness/conf" <<EOF
KVER=$KVER
NIC_VENDOR=$NIC_VENDOR
NIC_DEVICE=$NIC_DEVICE
LINKCHECK=$LINK
GUEST_IP=$GUEST_IP
PEER_IP=$PEER_IP
EOF
for f in ${INCLUDES[@]+"${INCLUDES[@]}"}; do install -m 755 "$f" "$OV/harness/files/"; done
if [ $CHECK = 1 ]; then
	if command -v gcc >/dev/null && gcc -static -O2 -o "$OV/harness/files/vfio_check" "$HERE/vfio_check.c" 2>"$RUN/gcc.log"; then
		:
	else
		log "could not build vfio_check (static gcc): the check runs without it"
		cat "$RUN/gcc.log" >&2 2>/dev/null || true
	fi
fi
if command -v readelf >/dev/null && readelf -l "$OV/harness/prog" 2>/dev/null | grep -q 'Requesting program interpreter'; then
	log "warning: $PROG is dynamically linked; the guest has no libc (build it static)"
fi
INITRD=$RUN/initrd.cpio.gz
{
	cat "$BASE"
	(cd "$OV" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet)
} | gzip -1 >"$INITRD"

export PEER_SOCK=$RUN/peer.sock GUEST_SOCK=$RUN/guest.sock
if [ -n "${VFIO_PEER_CMD:-}" ]; then
	bash -c "$VFIO_PEER_CMD" >"$LAST/peer.log" 2>&1 &
else
	python3 "$HERE/peer.py" --sock "$PEER_SOCK" --guest "$GUEST_SOCK" --ip "$PEER_IP" >"$LAST/peer.log" 2>&1 &
fi
PEER_PID=$!
for _ in $(seq 100); do [ -S "$PEER_SOCK" ] && break; sleep 0.05; done
[ -S "$PEER_SOCK" ] || die "the peer did not create $PEER_SOCK: $(cat "$LAST/peer.log")"

if [ "$ACCEL" = auto ]; then
	if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then ACCEL=kvm; else ACCEL=tcg; fi
fi
case "$ACCEL" in
kvm) ACCEL_ARGS=(-accel kvm -cpu host) ;;
tcg) ACCEL_ARGS=(-accel tcg,thread=multi -cpu max) ;;
*) die "VFIO_ACCEL must be tcg, kvm or auto" ;;
esac
CMDLINE="console=ttyS0 panic=-1 intel_iommu=on iommu=nopt loglevel=4 ${VFIO_CMDLINE:-}"
QEMU=(qemu-system-x86_64
	-machine q35,kernel-irqchip=split "${ACCEL_ARGS[@]}" -smp "$SMP" -m "$MEM"
	-nodefaults -nographic -serial stdio -monitor none -no-reboot
	-device intel-iommu,intremap=on,caching-mode=on
	-netdev "dgram,id=n0,local.type=unix,local.path=$GUEST_SOCK,remote.type=unix,remote.path=$PEER_SOCK"
	-device "igb,netdev=n0,mac=$GUEST_MAC,bus=pcie.0,addr=0x3"
	-object "filter-dump,id=dump0,netdev=n0,file=$LAST/igb.pcap"
	-kernel "$KDIR/vmlinuz" -initrd "$INITRD" -append "$CMDLINE")
printf '%q ' "${QEMU[@]}" >"$LAST/qemu.cmd"
echo >>"$LAST/qemu.cmd"
log "booting $(cat "$KDIR/package") under ${ACCEL} (timeout ${TIMEOUT}s), program $(basename "$PROG") (setup took $(elapsed)s)"
set +e
if [ $VERBOSE = 1 ]; then
	timeout "$TIMEOUT" "${QEMU[@]}" </dev/null 2>&1 | tee "$LAST/console.log"
	QEMU_STATUS=${PIPESTATUS[0]}
else
	timeout "$TIMEOUT" "${QEMU[@]}" </dev/null >"$LAST/console.log" 2>&1
	QEMU_STATUS=$?
fi
set -e
kill "$PEER_PID" 2>/dev/null || true
wait "$PEER_PID" 2>/dev/null || true
PEER_PID=

CONSOLE=$(tr -d '\r' <"$LAST/console.log")
RESULT=$(printf '%s\n' "$CONSOLE" | grep -a -o 'RBYPASS-VFIO-RESULT rc=.*' | tail -1 || true)
if [ $VERBOSE = 0 ]; then
	printf '%s\n' "$CONSOLE" | grep -a -o -E '(rbypass-vfio |RBYPASS-VFIO-LINKCHECK|RBYPASS-VFIO-SETUP-FAILED).*' || true
	if printf '%s\n' "$CONSOLE" | grep -aq '^RBYPASS-VFIO-BEGIN'; then
		echo "---- guest program output"
		printf '%s\n' "$CONSOLE" | sed -n '/^RBYPASS-VFIO-BEGIN/,/^RBYPASS-VFIO-END/{/^RBYPASS-VFIO-\(BEGIN\|END\)/d;p}'
		echo "----"
	fi
fi
if [ -z "$RESULT" ]; then
	if [ "$QEMU_STATUS" = 124 ]; then why="timed out after ${TIMEOUT}s"; else why="qemu exited with status $QEMU_STATUS"; fi
	log "no result from the guest ($why); last console lines:"
	printf '%s\n' "$CONSOLE" | tail -40 >&2
	log "full log: $LAST/console.log; total $(elapsed)s"
	exit 2
fi
RC=$(printf '%s\n' "$RESULT" | sed -n 's/^RBYPASS-VFIO-RESULT rc=\([0-9]*\).*/\1/p')
UPTIME=$(printf '%s\n' "$RESULT" | sed -n 's/.*uptime=\([0-9.]*\).*/\1/p')
log "guest program exited with status $RC (guest uptime ${UPTIME:-?}s); total $(elapsed)s; logs in $LAST"
exit "$RC"
