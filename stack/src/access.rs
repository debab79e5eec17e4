//! Who may attach to a stack. An arena file is created 0600, owned by its
//! creator: only that user (and root) can map it. `RBYPASS_SHARE_WITH`
//! opts other users or groups in, with a POSIX ACL on the file (tmpfs keeps
//! ACLs), so sharing is explicit and per stack; anyone else is refused
//! before mapping anything.

use std::path::Path;

/// One user or group a stack is shared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharer {
    Uid(u32),
    Gid(u32),
}

/// Errors of parsing or applying `RBYPASS_SHARE_WITH`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShareError {
    #[error(
        "RBYPASS_SHARE_WITH={0:?}: expected a comma-separated list of uid:N, gid:N, or N (a uid)"
    )]
    Syntax(String),
    #[error("{path}: cannot share the stack ({reason}): /dev/shm needs POSIX ACLs (tmpfs with CONFIG_TMPFS_POSIX_ACL)")]
    NoAcl { path: String, reason: String },
}

/// Parses `RBYPASS_SHARE_WITH`: `uid:1001,gid:50,1002` (a bare number is a uid).
pub fn parse(text: &str) -> Result<Vec<Sharer>, ShareError> {
    let bad = || ShareError::Syntax(text.to_string());
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (kind, n) = match item.split_once(':') {
                Some((k, n)) => (k.trim(), n.trim()),
                None => ("uid", item),
            };
            let n: u32 = n.parse().map_err(|_| bad())?;
            match kind {
                "uid" | "u" | "user" => Ok(Sharer::Uid(n)),
                "gid" | "g" | "group" => Ok(Sharer::Gid(n)),
                _ => Err(bad()),
            }
        })
        .collect()
}

/// ACL entry tags and permissions (linux/posix_acl_xattr.h, sys/acl.h).
mod acl {
    pub const VERSION: u32 = 2;
    pub const USER_OBJ: u16 = 0x01;
    pub const USER: u16 = 0x02;
    pub const GROUP_OBJ: u16 = 0x04;
    pub const GROUP: u16 = 0x08;
    pub const MASK: u16 = 0x10;
    pub const OTHER: u16 = 0x20;
    pub const UNDEFINED_ID: u32 = u32::MAX;
    pub const RW: u16 = 4 | 2;
    pub const NONE: u16 = 0;
}

/// The `system.posix_acl_access` value giving the owner and `sharers`
/// read-write access and nobody else any.
fn acl_xattr(sharers: &[Sharer]) -> Vec<u8> {
    let mut entries: Vec<(u16, u16, u32)> = vec![
        (acl::USER_OBJ, acl::RW, acl::UNDEFINED_ID),
        (acl::GROUP_OBJ, acl::NONE, acl::UNDEFINED_ID),
        (acl::MASK, acl::RW, acl::UNDEFINED_ID),
        (acl::OTHER, acl::NONE, acl::UNDEFINED_ID),
    ];
    for s in sharers {
        entries.push(match *s {
            Sharer::Uid(u) => (acl::USER, acl::RW, u),
            Sharer::Gid(g) => (acl::GROUP, acl::RW, g),
        });
    }
    // The kernel wants entries ordered by tag, then id, with no duplicates.
    entries.sort_unstable_by_key(|&(tag, _, id)| (tag, id));
    entries.dedup_by_key(|e| (e.0, e.2));
    let mut out = acl::VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// Opens the arena file at `path` to `sharers` (besides its owner).
pub fn share(path: &Path, sharers: &[Sharer]) -> Result<(), ShareError> {
    if sharers.is_empty() {
        return Ok(());
    }
    let value = acl_xattr(sharers);
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        ShareError::NoAcl {
            path: path.display().to_string(),
            reason: "path has a NUL byte".into(),
        }
    })?;
    // SAFETY: NUL-terminated path and attribute name; the value buffer
    // lives across the call and its length is passed.
    let r = unsafe {
        libc::setxattr(
            cpath.as_ptr(),
            c"system.posix_acl_access".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(ShareError::NoAcl {
            path: path.display().to_string(),
            reason: std::io::Error::last_os_error().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_refuses_nonsense() {
        assert_eq!(
            parse("uid:1001, gid:50,1002").unwrap(),
            vec![Sharer::Uid(1001), Sharer::Gid(50), Sharer::Uid(1002)]
        );
        assert_eq!(parse("").unwrap(), vec![]);
        assert!(parse("bob").is_err());
        assert!(parse("pid:3").is_err());
        assert!(parse("uid:-1").is_err());
    }

    #[test]
    fn acl_is_ordered_with_a_mask() {
        let v = acl_xattr(&[Sharer::Gid(7), Sharer::Uid(9), Sharer::Uid(9)]);
        assert_eq!(&v[..4], &2u32.to_le_bytes());
        let tags: Vec<(u16, u32)> = v[4..]
            .chunks_exact(8)
            .map(|c| {
                (
                    u16::from_le_bytes([c[0], c[1]]),
                    u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect();
        assert_eq!(
            tags,
            vec![
                (acl::USER_OBJ, u32::MAX),
                (acl::USER, 9),
                (acl::GROUP_OBJ, u32::MAX),
                (acl::GROUP, 7),
                (acl::MASK, u32::MAX),
                (acl::OTHER, u32::MAX),
            ]
        );
    }

    #[test]
    fn share_sets_an_acl_that_reads_back() {
        let path = std::env::temp_dir().join(format!("rbypass-acl-{}", std::process::id()));
        // /dev/shm is where arenas live; fall back to the temp dir.
        let path = if Path::new("/dev/shm").is_dir() {
            Path::new("/dev/shm").join(format!("rbypass-acltest-{}", std::process::id()))
        } else {
            path
        };
        std::fs::write(&path, b"x").unwrap();
        let r = share(&path, &[Sharer::Uid(65534)]);
        if let Err(e) = &r {
            eprintln!("skipped: {e}");
            let _ = std::fs::remove_file(&path);
            return;
        }
        let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        let mut buf = [0u8; 256];
        // SAFETY: valid path, name and buffer.
        let n = unsafe {
            libc::getxattr(
                cpath.as_ptr(),
                c"system.posix_acl_access".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let _ = std::fs::remove_file(&path);
        assert!(n > 0, "the ACL reads back");
        assert!(buf[4..n as usize]
            .chunks_exact(8)
            .any(|c| c[..2] == acl::USER.to_le_bytes() && c[4..8] == 65534u32.to_le_bytes()));
    }
}
