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

/// Runs `rbypass stackdump ARGS...` and returns its output.
pub fn stackdump(args: &[&str]) -> std::process::Output {
    Command::new(rbypass())
        .arg("stackdump")
        .args(args)
        .output()
        .expect("rbypass stackdump")
}

/// Runs `rbypass stackdump ARGS... --json`, checks it succeeded and parses
/// its one JSON document.
pub fn stackdump_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(rbypass())
        .arg("stackdump")
        .args(args)
        .arg("--json")
        .output()
        .expect("rbypass stackdump");
    assert!(
        out.status.success(),
        "stackdump {args:?} --json failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stackdump {args:?} --json is not one JSON document ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs `rbypass stackdump ARGS...`, checks it succeeded and returns stdout.
pub fn stackdump_text(args: &[&str]) -> String {
    let out = stackdump(args);
    assert!(
        out.status.success(),
        "stackdump {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
