//! eBPF without clang: thin typed wrappers over the `bpf(2)` commands the
//! backends use (maps, program load, links), and an assembler for the few
//! instructions our filter programs need.
//!
//! The filter program itself is in [`crate::flow_prog`]; this module only
//! knows how to encode instructions and talk to the kernel.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `bpf(2)` commands.
mod cmd {
    pub const MAP_CREATE: i32 = 0;
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    pub const MAP_UPDATE_ELEM: i32 = 2;
    pub const MAP_DELETE_ELEM: i32 = 3;
    pub const MAP_GET_NEXT_KEY: i32 = 4;
    pub const PROG_LOAD: i32 = 5;
    pub const PROG_TEST_RUN: i32 = 10;
    pub const LINK_CREATE: i32 = 28;
}

/// Map types.
pub mod map_type {
    pub const HASH: u32 = 1;
    pub const ARRAY: u32 = 2;
    pub const XSKMAP: u32 = 17;
}

/// Program types.
pub mod prog_type {
    pub const SCHED_CLS: u32 = 3;
    pub const XDP: u32 = 6;
}

/// Attach types (for links).
pub mod attach_type {
    pub const XDP: u32 = 37;
    pub const TCX_INGRESS: u32 = 46;
}

/// XDP attach flags.
pub mod xdp_flags {
    pub const SKB_MODE: u32 = 1 << 1;
    pub const DRV_MODE: u32 = 1 << 2;
}

/// Helper function numbers.
pub mod helper {
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    pub const REDIRECT_MAP: i32 = 51;
}

/// One eBPF instruction, as the kernel reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst register in the low nibble, src in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// Registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reg {
    R0 = 0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    /// Frame pointer (read only).
    R10,
}

/// Opcode parts (see the kernel's `bpf_common.h` and `bpf.h`).
pub mod op {
    pub const LD: u8 = 0x00;
    pub const LDX: u8 = 0x01;
    pub const ST: u8 = 0x02;
    pub const STX: u8 = 0x03;
    pub const JMP: u8 = 0x05;
    pub const ALU64: u8 = 0x07;

    pub const W: u8 = 0x00;
    pub const H: u8 = 0x08;
    pub const B: u8 = 0x10;
    pub const DW: u8 = 0x18;
    pub const IMM: u8 = 0x00;
    pub const MEM: u8 = 0x60;

    pub const K: u8 = 0x00;
    pub const X: u8 = 0x08;

    pub const ADD: u8 = 0x00;
    pub const AND: u8 = 0x50;
    pub const LSH: u8 = 0x60;
    pub const RSH: u8 = 0x70;
    pub const MOV: u8 = 0xb0;

    pub const JA: u8 = 0x00;
    pub const JEQ: u8 = 0x10;
    pub const JGT: u8 = 0x20;
    pub const JNE: u8 = 0x50;
    pub const JSET: u8 = 0x40;
    pub const CALL: u8 = 0x80;
    pub const EXIT: u8 = 0x90;
}

/// Memory access sizes.
#[derive(Clone, Copy, Debug)]
pub enum Size {
    B,
    H,
    W,
    DW,
}

impl Size {
    fn bits(self) -> u8 {
        match self {
            Size::B => op::B,
            Size::H => op::H,
            Size::W => op::W,
            Size::DW => op::DW,
        }
    }
}

fn insn(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (dst as u8) | ((src as u8) << 4),
        off,
        imm,
    }
}

/// A program under construction, with forward jumps to named labels.
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    /// (instruction index, label) of jumps to patch.
    fixups: Vec<(usize, &'static str)>,
    labels: Vec<(&'static str, usize)>,
}

impl Asm {
    /// An empty program.
    pub fn new() -> Asm {
        Asm::default()
    }

    /// `dst = imm` (64-bit).
    pub fn mov_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(insn(op::ALU64 | op::MOV | op::K, dst, Reg::R0, 0, imm))
    }

    /// `dst = src`.
    pub fn mov(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.push(insn(op::ALU64 | op::MOV | op::X, dst, src, 0, 0))
    }

    /// `dst += imm`.
    pub fn add_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(insn(op::ALU64 | op::ADD | op::K, dst, Reg::R0, 0, imm))
    }

    /// `dst += src`.
    pub fn add(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.push(insn(op::ALU64 | op::ADD | op::X, dst, src, 0, 0))
    }

    /// `dst &= imm`.
    pub fn and_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(insn(op::ALU64 | op::AND | op::K, dst, Reg::R0, 0, imm))
    }

    /// `dst <<= imm`.
    pub fn lsh_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(insn(op::ALU64 | op::LSH | op::K, dst, Reg::R0, 0, imm))
    }

    /// `dst >>= imm` (logical).
    pub fn rsh_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(insn(op::ALU64 | op::RSH | op::K, dst, Reg::R0, 0, imm))
    }

    /// `dst = *(size *)(src + off)`.
    pub fn load(&mut self, size: Size, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(insn(op::LDX | op::MEM | size.bits(), dst, src, off, 0))
    }

    /// `*(size *)(dst + off) = src`.
    pub fn store(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(insn(op::STX | op::MEM | size.bits(), dst, src, off, 0))
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn store_imm(&mut self, size: Size, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.push(insn(op::ST | op::MEM | size.bits(), dst, Reg::R0, off, imm))
    }

    /// `dst = map` (a map fd the loader turns into a map pointer).
    pub fn load_map_fd(&mut self, dst: Reg, map: RawFd) -> &mut Self {
        // BPF_PSEUDO_MAP_FD = 1 in the src field.
        self.push(Insn {
            code: op::LD | op::DW | op::IMM,
            regs: (dst as u8) | (1 << 4),
            off: 0,
            imm: map,
        });
        self.push(Insn {
            code: 0,
            regs: 0,
            off: 0,
            imm: 0,
        })
    }

    /// `if dst OP imm goto label` (OP one of [`op::JEQ`], [`op::JNE`],
    /// [`op::JGT`], [`op::JSET`]).
    pub fn jmp_imm(&mut self, cond: u8, dst: Reg, imm: i32, label: &'static str) -> &mut Self {
        self.fixups.push((self.insns.len(), label));
        self.push(insn(op::JMP | cond | op::K, dst, Reg::R0, 0, imm))
    }

    /// `if dst OP src goto label`.
    pub fn jmp_reg(&mut self, cond: u8, dst: Reg, src: Reg, label: &'static str) -> &mut Self {
        self.fixups.push((self.insns.len(), label));
        self.push(insn(op::JMP | cond | op::X, dst, src, 0, 0))
    }

    /// `goto label`.
    pub fn ja(&mut self, label: &'static str) -> &mut Self {
        self.fixups.push((self.insns.len(), label));
        self.push(insn(op::JMP | op::JA, Reg::R0, Reg::R0, 0, 0))
    }

    /// Calls helper `n` (arguments in r1-r5, result in r0; r1-r5 are clobbered).
    pub fn call(&mut self, n: i32) -> &mut Self {
        self.push(insn(op::JMP | op::CALL, Reg::R0, Reg::R0, 0, n))
    }

    /// Returns r0.
    pub fn exit(&mut self) -> &mut Self {
        self.push(insn(op::JMP | op::EXIT, Reg::R0, Reg::R0, 0, 0))
    }

    /// Places `name` at the next instruction.
    pub fn label(&mut self, name: &'static str) -> &mut Self {
        self.labels.push((name, self.insns.len()));
        self
    }

    fn push(&mut self, i: Insn) -> &mut Self {
        self.insns.push(i);
        self
    }

    /// Resolves the jumps; an unknown label or a jump out of range is a bug
    /// in the generator, reported as an error.
    pub fn finish(mut self) -> io::Result<Vec<Insn>> {
        for &(at, name) in &self.fixups {
            let Some(&(_, to)) = self.labels.iter().find(|(n, _)| *n == name) else {
                return Err(io::Error::other(format!("BPF label {name} undefined")));
            };
            let rel = to as i64 - at as i64 - 1;
            self.insns[at].off = i16::try_from(rel)
                .map_err(|_| io::Error::other(format!("BPF jump to {name} out of range")))?;
        }
        Ok(self.insns)
    }
}

/// `bpf(cmd, attr, size)`.
fn sys_bpf(cmd: i32, attr: &mut [u64]) -> io::Result<i64> {
    // SAFETY: attr is a valid, writable buffer of the size passed; the kernel
    // reads (and for some commands writes) at most that many bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this new fd to us; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// Two u32 fields in one attr word (little-endian layout of the union).
fn pair(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | (u64::from(hi) << 32)
}

/// A BPF map, closed on drop.
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    key_size: usize,
    value_size: usize,
}

impl Map {
    /// Creates a map; `name` (up to 15 bytes) shows in `bpftool map`.
    pub fn create(
        kind: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        name: &str,
    ) -> io::Result<Map> {
        let mut attr = [0u64; 16];
        attr[0] = pair(kind, key_size);
        attr[1] = pair(value_size, max_entries);
        // map_flags, inner_map_fd: 0; numa_node: 0; then map_name[16] at byte 28.
        let bytes = bytemuck_name(name);
        let a = attr.as_mut_ptr().cast::<u8>();
        // SAFETY: bytes 28..44 are inside the 128-byte attr.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), a.add(28), 16) };
        let fd = sys_bpf(cmd::MAP_CREATE, &mut attr)?;
        Ok(Map {
            fd: owned(fd),
            key_size: key_size as usize,
            value_size: value_size as usize,
        })
    }

    /// The map's fd (for [`Asm::load_map_fd`]).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Inserts or replaces `key`.
    pub fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.check(key, Some(value))?;
        let mut attr = [0u64; 4];
        attr[0] = u64::from(self.fd() as u32);
        attr[1] = key.as_ptr() as u64;
        attr[2] = value.as_ptr() as u64;
        attr[3] = 0; // BPF_ANY
        sys_bpf(cmd::MAP_UPDATE_ELEM, &mut attr).map(|_| ())
    }

    /// Removes `key`; absent is not an error.
    pub fn delete(&self, key: &[u8]) -> io::Result<()> {
        self.check(key, None)?;
        let mut attr = [0u64; 4];
        attr[0] = u64::from(self.fd() as u32);
        attr[1] = key.as_ptr() as u64;
        match sys_bpf(cmd::MAP_DELETE_ELEM, &mut attr) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// Reads `key` into `value`; false if absent.
    pub fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        self.check(key, Some(value))?;
        let mut attr = [0u64; 4];
        attr[0] = u64::from(self.fd() as u32);
        attr[1] = key.as_ptr() as u64;
        attr[2] = value.as_mut_ptr() as u64;
        match sys_bpf(cmd::MAP_LOOKUP_ELEM, &mut attr) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A map another process created, from an fd to it that this process
    /// now owns (taken with pidfd_getfd): the sizes must be the creator's.
    pub fn from_fd(fd: OwnedFd, key_size: u32, value_size: u32) -> Map {
        Map {
            fd,
            key_size: key_size as usize,
            value_size: value_size as usize,
        }
    }

    /// Every key in the map (processes sharing a map see each other's
    /// changes only here).
    pub fn keys(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut next = vec![0u8; self.key_size];
        loop {
            let mut attr = [0u64; 4];
            attr[0] = u64::from(self.fd() as u32);
            attr[1] = out.last().map_or(0, |k| k.as_ptr() as u64);
            attr[2] = next.as_mut_ptr() as u64;
            match sys_bpf(cmd::MAP_GET_NEXT_KEY, &mut attr) {
                Ok(_) => out.push(next.clone()),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
                Err(e) => return Err(e),
            }
            if out.len() > 1 << 20 {
                return Err(io::Error::other("BPF map iteration does not end"));
            }
        }
    }

    fn check(&self, key: &[u8], value: Option<&[u8]>) -> io::Result<()> {
        if key.len() != self.key_size || value.is_some_and(|v| v.len() != self.value_size) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        Ok(())
    }
}

fn bytemuck_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(
        name.bytes()
            .filter(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .take(15),
    ) {
        *o = b;
    }
    out
}

/// A loaded program, unloaded when its last fd (and link) closes.
#[derive(Debug)]
pub struct Program {
    fd: OwnedFd,
}

impl Program {
    /// Loads a program; on a verifier refusal the error carries its log.
    pub fn load(
        kind: u32,
        insns: &[Insn],
        name: &str,
        expected_attach: u32,
    ) -> io::Result<Program> {
        let license = CString::new("GPL").expect("no NUL");
        let mut log = vec![0u8; 64 * 1024];
        let attempt = |log_level: u32, log: &mut [u8]| {
            let mut attr = [0u64; 20];
            attr[0] = pair(kind, insns.len() as u32);
            attr[1] = insns.as_ptr() as u64;
            attr[2] = license.as_ptr() as u64;
            attr[3] = pair(log_level, if log_level > 0 { log.len() as u32 } else { 0 });
            attr[4] = if log_level > 0 {
                log.as_mut_ptr() as u64
            } else {
                0
            };
            // kern_version, prog_flags: 0; prog_name[16] at byte 48; prog_ifindex at 64;
            // expected_attach_type at 68.
            let n = bytemuck_name(name);
            let a = attr.as_mut_ptr().cast::<u8>();
            // SAFETY: bytes 48..72 are inside the 160-byte attr.
            unsafe {
                std::ptr::copy_nonoverlapping(n.as_ptr(), a.add(48), 16);
                std::ptr::copy_nonoverlapping(expected_attach.to_ne_bytes().as_ptr(), a.add(68), 4);
            }
            sys_bpf(cmd::PROG_LOAD, &mut attr)
        };
        match attempt(0, &mut log) {
            Ok(fd) => Ok(Program { fd: owned(fd) }),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => Err(e),
            Err(_) => {
                // Load again with the verifier's log, for a useful error.
                let e = match attempt(1, &mut log) {
                    Ok(fd) => return Ok(Program { fd: owned(fd) }),
                    Err(e) => e,
                };
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                let tail: Vec<&str> = text.lines().rev().take(12).collect();
                Err(io::Error::new(
                    e.kind(),
                    format!(
                        "BPF verifier refused {name}: {e}: {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    ),
                ))
            }
        }
    }

    /// The program's fd.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Runs the program once over `frame` in the kernel (BPF_PROG_TEST_RUN)
    /// and returns its verdict: how tests check a filter without a network.
    pub fn test_run(&self, frame: &[u8]) -> io::Result<i32> {
        let mut out = vec![0u8; frame.len() + 512];
        let mut attr = [0u64; 10];
        attr[0] = pair(self.fd() as u32, 0);
        attr[1] = pair(frame.len() as u32, out.len() as u32);
        attr[2] = frame.as_ptr() as u64;
        attr[3] = out.as_mut_ptr() as u64;
        attr[4] = pair(1, 0);
        sys_bpf(cmd::PROG_TEST_RUN, &mut attr)?;
        Ok((attr[0] >> 32) as u32 as i32)
    }
}

/// An attachment of a program (to an interface's XDP hook, or its TC
/// ingress), undone when the last fd referring to it closes: so the hook is
/// cleaned up when the last process using it exits, however it exits.
#[derive(Debug)]
pub struct Link {
    fd: OwnedFd,
}

impl Link {
    /// Attaches `prog` to interface `ifindex` at `attach` with `flags`.
    pub fn create(prog: &Program, ifindex: u32, attach: u32, flags: u32) -> io::Result<Link> {
        let mut attr = [0u64; 8];
        attr[0] = pair(prog.fd() as u32, ifindex);
        attr[1] = pair(attach, flags);
        let fd = sys_bpf(cmd::LINK_CREATE, &mut attr)?;
        Ok(Link { fd: owned(fd) })
    }

    /// A link another process made, from an fd to it that this process now
    /// owns: holding it keeps the program attached after that process exits.
    pub fn from_fd(fd: OwnedFd) -> Link {
        Link { fd }
    }

    /// The link's fd.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_resolves_labels() {
        let mut a = Asm::new();
        a.mov_imm(Reg::R0, 2)
            .jmp_imm(op::JEQ, Reg::R1, 7, "out")
            .mov_imm(Reg::R0, 1)
            .label("out")
            .exit();
        let p = a.finish().unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(
            p[0],
            Insn {
                code: 0xb7,
                regs: 0,
                off: 0,
                imm: 2
            }
        );
        assert_eq!(
            p[1],
            Insn {
                code: 0x15,
                regs: 1,
                off: 1,
                imm: 7
            }
        );
        assert_eq!(p[3].code, 0x95);
        let mut b = Asm::new();
        b.ja("nowhere");
        assert!(b.finish().is_err());
    }

    #[test]
    fn map_fd_takes_two_slots() {
        let mut a = Asm::new();
        a.load_map_fd(Reg::R1, 5).exit();
        let p = a.finish().unwrap();
        assert_eq!(p[0].code, 0x18);
        assert_eq!(p[0].regs, 0x11);
        assert_eq!(p[0].imm, 5);
        assert_eq!(p[1].code, 0);
    }
}
