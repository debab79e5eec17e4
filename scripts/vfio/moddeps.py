#!/usr/bin/env python3
"""Resolve kernel module dependencies without kmod (no depmod/modinfo needed).

Usage: moddeps.py MODULES_DIR NAME...

MODULES_DIR is a lib/modules/<version> tree (from an extracted linux-image
.deb, which ships no modules.dep). Prints the module files (paths relative to
MODULES_DIR) needed to load every NAME, dependencies first, one per line.
Names built into the kernel (modules.builtin) are skipped. Each module's
`depends=` comes from its .modinfo ELF section; `softdep=pre:` modules are
loaded too when present. Exits 1 naming any module that is missing.
"""
import lzma
import gzip
import os
import struct
import sys


def norm(name):
    base = os.path.basename(name)
    for ext in (".ko", ".ko.xz", ".ko.gz", ".ko.zst"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    return base.replace("-", "_")


def read_ko(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        data = lzma.decompress(data)
    elif path.endswith(".gz"):
        data = gzip.decompress(data)
    elif path.endswith(".zst"):
        raise SystemExit(f"{path}: zstd-compressed modules are not supported; decompress them first")
    return data


def modinfo(data):
    """Return the key=value pairs of the .modinfo section of an ELF64 LE object."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not an ELF64 little-endian object")
    e_shoff = struct.unpack_from("<Q", data, 0x28)[0]
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def sh(i):
        off = e_shoff + i * e_shentsize
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, off)
        return name, offset, size

    _, stroff, _ = sh(e_shstrndx)
    info = {}
    for i in range(e_shnum):
        name, offset, size = sh(i)
        end = data.index(b"\0", stroff + name)
        if data[stroff + name:end] != b".modinfo":
            continue
        for item in data[offset:offset + size].split(b"\0"):
            if b"=" in item:
                k, v = item.split(b"=", 1)
                info.setdefault(k.decode(), []).append(v.decode(errors="replace"))
    return info


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    root = sys.argv[1]
    index = {}
    for dirpath, _dirs, files in os.walk(os.path.join(root, "kernel")):
        for fn in files:
            if ".ko" in fn:
                index[norm(fn)] = os.path.relpath(os.path.join(dirpath, fn), root)
    builtin = set()
    bpath = os.path.join(root, "modules.builtin")
    if os.path.exists(bpath):
        with open(bpath) as f:
            builtin = {norm(line.strip()) for line in f if line.strip()}

    order, seen, missing = [], set(), []

    def visit(name, stack=()):
        name = norm(name)
        if name in seen or name in builtin:
            return
        if name in stack:
            return
        path = index.get(name)
        if path is None:
            missing.append(name)
            return
        info = modinfo(read_ko(os.path.join(root, path)))
        deps = [d for v in info.get("depends", []) for d in v.split(",") if d]
        for soft in info.get("softdep", []):
            words = soft.split()
            mode = None
            for w in words:
                if w.endswith(":"):
                    mode = w[:-1]
                elif mode == "pre" and norm(w) in index:
                    deps.append(w)
        for d in deps:
            visit(d, stack + (name,))
        if name not in seen:
            seen.add(name)
            order.append(path)

    for n in sys.argv[2:]:
        visit(n)
    if missing:
        print("missing modules: " + " ".join(missing), file=sys.stderr)
        return 1
    print("\n".join(order))
    return 0


if __name__ == "__main__":
    sys.exit(main())
