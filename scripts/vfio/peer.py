#!/usr/bin/env python3
"""Host-side network peer of the guest's igb, over qemu's `-netdev dgram` unix sockets.

qemu runs `-netdev dgram,id=n0,local.type=unix,local.path=GUEST_SOCK,
remote.type=unix,remote.path=PEER_SOCK`: every frame the igb transmits arrives
here as one datagram on PEER_SOCK (a raw Ethernet frame, no FCS, no header),
and every datagram sent to GUEST_SOCK is received by the igb. Nothing leaves
the machine.

As a program (harness.sh starts it before qemu):

    peer.py --sock PEER_SOCK --guest GUEST_SOCK [--ip 10.99.0.2] [--log FILE]

answers ARP requests for --ip and ICMP echo requests to it (so a guest can
`ping` it), and logs a one-line summary of every frame both ways. SIGTERM or
SIGINT stops it, printing the frame counts.

As a library (for tests that drive the rbypass VFIO driver):

    from peer import Peer
    p = Peer(peer_sock, guest_sock)
    p.send(frame_bytes)           # the guest's igb receives it
    frame = p.recv(timeout=1.0)   # next frame the guest sent, or None
"""
import argparse
import os
import select
import signal
import socket
import struct
import sys
import time

PEER_MAC = bytes.fromhex("525400aa0002")


class Peer:
    def __init__(self, sock_path, guest_path):
        self.guest_path = guest_path
        if os.path.exists(sock_path):
            os.unlink(sock_path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(sock_path)
        self.sock_path = sock_path
        self.rx = self.tx = 0

    def send(self, frame):
        """Deliver one Ethernet frame to the guest's NIC. False if qemu is not listening."""
        try:
            self.sock.sendto(frame, self.guest_path)
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        self.tx += 1
        return True

    def recv(self, timeout=None):
        """The next frame the guest transmitted, or None after timeout seconds."""
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return None
        self.rx += 1
        return self.sock.recv(65536)

    def close(self):
        self.sock.close()
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def mac(b):
    return ":".join("%02x" % x for x in b)


def summary(frame):
    if len(frame) < 14:
        return "runt %d bytes" % len(frame)
    dst, src, ethertype = frame[0:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]
    s = "%s > %s len %d" % (mac(src), mac(dst), len(frame))
    if ethertype == 0x0806 and len(frame) >= 42:
        op = struct.unpack("!H", frame[20:22])[0]
        s += " ARP %s %s -> %s" % ("request" if op == 1 else "reply", socket.inet_ntoa(frame[28:32]),
                                   socket.inet_ntoa(frame[38:42]))
    elif ethertype == 0x0800 and len(frame) >= 34:
        proto = frame[23]
        s += " IPv4 %s > %s proto %d" % (socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34]), proto)
        ihl = (frame[14] & 0xF) * 4
        if proto == 1 and len(frame) >= 14 + ihl + 8:
            s += " ICMP type %d" % frame[14 + ihl]
    elif ethertype == 0x86DD:
        s += " IPv6"
    else:
        s += " ethertype 0x%04x" % ethertype
    return s


def respond(frame, my_ip):
    """The reply to an ARP request for my_ip or an ICMP echo request to it, else None."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack("!H", frame[12:14])[0]
    src = frame[6:12]
    if ethertype == 0x0806 and len(frame) >= 42:
        htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
        if op == 1 and frame[38:42] == my_ip and ptype == 0x0800:
            arp = struct.pack("!HHBBH", htype, ptype, hlen, plen, 2) + PEER_MAC + my_ip + frame[22:28] + frame[28:32]
            return src + PEER_MAC + b"\x08\x06" + arp
    if ethertype == 0x0800 and len(frame) >= 34:
        ihl = (frame[14] & 0xF) * 4
        ip = frame[14:14 + ihl]
        total = struct.unpack("!H", frame[16:18])[0]
        if frame[23] == 1 and frame[30:34] == my_ip and frame[14 + ihl] == 8:
            icmp = bytearray(frame[14 + ihl:14 + total])
            icmp[0] = 0
            icmp[2:4] = b"\0\0"
            icmp[2:4] = struct.pack("!H", csum(bytes(icmp)))
            hdr = bytearray(ip)
            hdr[8] = 64
            hdr[12:16], hdr[16:20] = ip[16:20], ip[12:16]
            hdr[10:12] = b"\0\0"
            hdr[10:12] = struct.pack("!H", csum(bytes(hdr)))
            return src + PEER_MAC + b"\x08\x00" + bytes(hdr) + bytes(icmp)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sock", required=True, help="this peer's socket (qemu's remote.path)")
    ap.add_argument("--guest", required=True, help="qemu's socket (qemu's local.path)")
    ap.add_argument("--ip", default="10.99.0.2", help="IPv4 address to answer ARP and ping for")
    ap.add_argument("--log", help="append frame summaries here (default stdout)")
    ap.add_argument("--quiet", action="store_true", help="no per-frame lines")
    a = ap.parse_args()

    out = open(a.log, "a", buffering=1) if a.log else sys.stdout
    peer = Peer(a.sock, a.guest)
    my_ip = socket.inet_aton(a.ip)
    running = [True]

    def stop(*_):
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    t0 = time.monotonic()
    print("peer: listening on %s (ip %s, mac %s)" % (a.sock, a.ip, mac(PEER_MAC)), file=out)
    while running[0]:
        try:
            frame = peer.recv(0.2)
        except InterruptedError:
            continue
        if frame is None:
            continue
        if not a.quiet:
            print("peer: %8.3f rx %s" % (time.monotonic() - t0, summary(frame)), file=out)
        reply = respond(frame, my_ip)
        if reply is not None:
            ok = peer.send(reply)
            if not a.quiet:
                print("peer: %8.3f tx %s%s" % (time.monotonic() - t0, summary(reply), "" if ok else " (qemu gone)"),
                      file=out)
    print("peer: done, %d frames received, %d sent" % (peer.rx, peer.tx), file=out)
    peer.close()


if __name__ == "__main__":
    main()
