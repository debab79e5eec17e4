//! `gc` and `kill`: remove the arena files of stacks no process uses. These
//! are the only subcommands that change anything, and all they do is unlink
//! files; the arenas themselves are still only read.
//!
//! A stack is in use while any of these holds: its creator runs (and is the
//! process that made it, not a later one given the same pid), its process
//! table has a live entry, or some process maps the arena file (read from
//! `/proc/PID/maps`: this also covers processes that attached without
//! registering).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use rbypass_stack::arena::{self, ArenaError};
use rbypass_stack::procs;

use super::collect;
use super::report::Render;

/// Pids mapping each `/dev/shm/rbypass-*` file (this process excluded).
fn mappers() -> BTreeMap<PathBuf, Vec<u32>> {
    let me = std::process::id();
    let prefix = format!("{}/{}", arena::SHM_DIR, arena::FILE_PREFIX);
    let mut out: BTreeMap<PathBuf, Vec<u32>> = BTreeMap::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.filter_map(Result::ok) {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(maps) = fs::read_to_string(e.path().join("maps")) else {
            continue;
        };
        for line in maps.lines() {
            let Some(i) = line.find('/') else { continue };
            let p = &line[i..];
            if p.starts_with(&prefix) && !p.ends_with(" (deleted)") {
                let v = out.entry(PathBuf::from(p)).or_default();
                if !v.contains(&pid) {
                    v.push(pid);
                }
            }
        }
    }
    out
}

/// Who still uses an arena: (pid, why), empty if nobody.
fn users(path: &Path, mapped: &BTreeMap<PathBuf, Vec<u32>>) -> Result<Vec<(u32, String)>, String> {
    let mut v: Vec<(u32, String)> = Vec::new();
    let mut add = |pid: u32, why: &str| {
        if let Some(e) = v.iter_mut().find(|(p, _)| *p == pid) {
            if !e.1.contains(why) {
                e.1 = format!("{}, {why}", e.1);
            }
        } else {
            v.push((pid, why.to_owned()));
        }
    };
    match arena::Arena::open_readonly(path) {
        Ok(a) => {
            let h = a.header();
            if collect::creator_alive(&a) {
                add(h.creator_pid, "creator");
            }
            for p in h.procs.snapshot() {
                if p.alive {
                    add(p.pid, "in its process table");
                }
            }
        }
        // Another build's arena: its header cannot be trusted, so only
        // the processes mapping it count.
        Err(ArenaError::Stamp { .. }) => {}
        Err(e) => {
            let t = collect::open(path);
            return Err(match t.arena {
                Err(u) if u.not_visible => u.message(),
                _ => e.to_string(),
            });
        }
    }
    for &pid in mapped.get(path).into_iter().flatten() {
        add(pid, "maps the arena");
    }
    Ok(v)
}

/// Unlinks `path` if it is still the file `ident` (device, inode) names.
fn unlink_same(path: &Path, ident: (u64, u64)) -> Result<(), String> {
    match fs::metadata(path) {
        Ok(m) if (m.dev(), m.ino()) == ident => {
            fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))
        }
        Ok(_) => Err(format!(
            "{}: replaced meanwhile; left alone",
            path.display()
        )),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn ident(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[derive(Serialize)]
pub struct GcEntry {
    pub path: String,
    /// The stack name, or "" for a temporary file.
    pub name: String,
    /// `removed`, `would remove`, `kept` or `failed`.
    pub action: String,
    pub reason: String,
}

#[derive(Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub entries: Vec<GcEntry>,
}

/// Temporary files of arenas being built: `.rbypass-NAME.tmpPID`.
fn temp_files() -> Vec<(PathBuf, u32)> {
    let lead = format!(".{}", arena::FILE_PREFIX);
    let mut v: Vec<(PathBuf, u32)> = fs::read_dir(arena::SHM_DIR)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let pid = n.strip_prefix(&lead)?.rsplit_once(".tmp")?.1.parse().ok()?;
                    Some((e.path(), pid))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn gc(dry_run: bool) -> GcReport {
    let mapped = mappers();
    let mut entries = vec![];
    let act = |path: &Path, id: Option<(u64, u64)>| -> (String, String) {
        if dry_run {
            return ("would remove".into(), String::new());
        }
        match id.map(|id| unlink_same(path, id)) {
            Some(Ok(())) => ("removed".into(), String::new()),
            Some(Err(e)) => ("failed".into(), format!("; {e}")),
            None => ("failed".into(), "; gone meanwhile".into()),
        }
    };
    for path in arena::list_arena_files() {
        let name = collect::name_from_path(&path);
        let id = ident(&path);
        let (action, reason) = match users(&path, &mapped) {
            Err(e) => ("kept".into(), e),
            Ok(u) if !u.is_empty() => ("kept".into(), format!("in use: {}", describe(&u))),
            Ok(_) => {
                let (a, extra) = act(&path, id);
                (a, format!("no live process{extra}"))
            }
        };
        entries.push(GcEntry {
            path: path.display().to_string(),
            name,
            action,
            reason,
        });
    }
    for (path, pid) in temp_files() {
        let (action, reason) = if procs::is_alive(pid, 0) {
            ("kept".into(), format!("being built by pid {pid}"))
        } else {
            let (a, extra) = act(&path, ident(&path));
            (a, format!("temporary file of dead pid {pid}{extra}"))
        };
        entries.push(GcEntry {
            path: path.display().to_string(),
            name: String::new(),
            action,
            reason,
        });
    }
    GcReport { dry_run, entries }
}

fn describe(users: &[(u32, String)]) -> String {
    users
        .iter()
        .map(|(p, why)| format!("pid {p} ({why})"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Render for GcReport {
    fn table(&self) -> String {
        let mut s = String::new();
        for e in &self.entries {
            s += &format!("{:<12} {}: {}\n", e.action, e.path, e.reason);
        }
        let n = self
            .entries
            .iter()
            .filter(|e| e.action == "removed" || e.action == "would remove")
            .count();
        s += &format!(
            "{n} file{} {}\n",
            if n == 1 { "" } else { "s" },
            if self.dry_run {
                "would be removed (dry run)"
            } else {
                "removed"
            }
        );
        s
    }
}

#[derive(Serialize)]
pub struct KillReport {
    pub stack: String,
    pub path: String,
    pub removed: bool,
}

/// Removes stack `name` if no process uses it; an error naming the pids otherwise.
pub fn kill(name: &str) -> Result<KillReport, String> {
    if arena::validate_name(name).is_err() {
        return Err(format!("no stack {name}"));
    }
    let path = arena::path_for_name(name);
    let Some(id) = ident(&path) else {
        return Err(format!("no stack {name}"));
    };
    let u = users(&path, &mappers())?;
    if !u.is_empty() {
        return Err(format!(
            "stack {name} has live processes: {}; not removed",
            describe(&u)
        ));
    }
    unlink_same(&path, id)?;
    Ok(KillReport {
        stack: name.to_owned(),
        path: path.display().to_string(),
        removed: true,
    })
}

impl Render for KillReport {
    fn table(&self) -> String {
        format!("removed stack {} ({})\n", self.stack, self.path)
    }
}
