//! Taking another process's device fds (pidfd_open + pidfd_getfd), so a
//! process joining a named stack drives the very AF_XDP sockets, maps and
//! program link that the stack's first process opened, even after that
//! process has exited (every member holds them).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Errors of taking fds from a member process.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("process {pid} is gone")]
    Gone { pid: u32 },
    #[error("not permitted to take process {pid}'s device fds (pidfd_getfd needs the same user and ptrace access: check /proc/sys/kernel/yama/ptrace_scope, or run as root)")]
    Permission { pid: u32 },
    #[error("this kernel has no pidfd_getfd (Linux 5.6 or later is needed to share a device between processes)")]
    Unsupported,
    #[error("taking fd {fd} of process {pid}: {source}")]
    Io {
        pid: u32,
        fd: RawFd,
        source: io::Error,
    },
}

fn classify(pid: u32, fd: RawFd, e: io::Error) -> ShareError {
    match e.raw_os_error() {
        Some(libc::ESRCH) => ShareError::Gone { pid },
        Some(libc::EPERM | libc::EACCES) => ShareError::Permission { pid },
        Some(libc::ENOSYS) => ShareError::Unsupported,
        _ => ShareError::Io { pid, fd, source: e },
    }
}

/// Duplicates `fds` (numbers in process `pid`) into this process, in order.
pub fn take_fds(pid: u32, fds: &[RawFd]) -> Result<Vec<OwnedFd>, ShareError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0u32) };
    if pidfd < 0 {
        return Err(classify(pid, -1, io::Error::last_os_error()));
    }
    // SAFETY: a new fd we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    let mut out = Vec::with_capacity(fds.len());
    for &fd in fds {
        // SAFETY: pidfd_getfd(pidfd, targetfd, flags) returns a new fd
        // (close-on-exec) or -1.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_getfd,
                std::os::fd::AsRawFd::as_raw_fd(&pidfd),
                fd,
                0u32,
            )
        };
        if r < 0 {
            return Err(classify(pid, fd, io::Error::last_os_error()));
        }
        // SAFETY: a new fd we own.
        out.push(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    #[test]
    fn takes_own_fd_and_reports_a_missing_process() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let got = take_fds(std::process::id(), &[b.as_raw_fd()]).unwrap();
        let mut b2 = std::os::unix::net::UnixStream::from(got.into_iter().next().unwrap());
        a.write_all(b"x").unwrap();
        let mut buf = [0u8; 1];
        b2.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"x");
        assert!(matches!(
            take_fds(u32::MAX >> 2, &[0]),
            Err(ShareError::Gone { .. })
        ));
    }
}
