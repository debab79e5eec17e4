//! Derives the arena layout stamp from the build: a hash of every source file
//! of the stack crate and the crate version. Two builds that differ in any
//! way refuse to attach to each other's arenas, so a layout change can never
//! be misread as valid state.
use std::{fs, path::Path};

fn hash_dir(dir: &Path, h: &mut u64) {
    let mut entries: Vec<_> = match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(_) => return,
    };
    entries.sort();
    for p in entries {
        if p.is_dir() {
            hash_dir(&p, h);
        } else if p.extension().is_some_and(|e| e == "rs") {
            println!("cargo:rerun-if-changed={}", p.display());
            for b in p
                .to_string_lossy()
                .bytes()
                .chain(fs::read(&p).unwrap_or_default())
            {
                *h ^= u64::from(b);
                *h = h.wrapping_mul(0x100_0000_01b3);
            }
        }
    }
}

fn main() {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in env!("CARGO_PKG_VERSION").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    hash_dir(Path::new("src"), &mut h);
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rustc-env=RBYPASS_LAYOUT_SRC_HASH={h:016x}");
}
