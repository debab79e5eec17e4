//! Reading a stack's counters through `rbypass stackdump`, as a user would,
//! to prove that traffic went through the stack.

// Each integration test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The CLI under test.
pub fn rbypass() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rbypass"))
}

/// Counter `name` of stack `stack`, from `rbypass stackdump counters
/// --stack STACK` (lines `name value`); panics with the output if absent.
pub fn counter(stack: &str, name: &str) -> u64 {
    let out = Command::new(rbypass())
        .args(["stackdump", "counters", "--stack", stack])
        .output()
        .expect("rbypass stackdump");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no counter {name} for stack {stack}:\n{text}"))
}
