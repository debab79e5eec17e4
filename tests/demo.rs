//! The main job (`rbypass demo`) runs end to end: the kernel in a namespace
//! pings the stack and exchanges UDP with it. Needs root; skipped without.

mod support;

#[test]
fn demo_runs() {
    if !support::netns::have_root_and_netns() {
        eprintln!("skipped: needs root and network namespaces");
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rbypass"))
        .args(["demo", "--pings", "5", "--datagrams", "300"])
        .output()
        .expect("run rbypass demo");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "demo failed");
    assert!(
        text.contains("5 packets transmitted, 5 received"),
        "pings answered"
    );
    assert!(text.contains("300/300 datagrams"), "UDP exchanged");
    assert!(text.contains("demo ok"));
}

#[test]
fn stackdump_lists_without_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rbypass"))
        .args(["stackdump"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("STACK"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rbypass"))
        .args(["stackdump", "netstat"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rbypass"))
        .args(["--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("stackdump"));
}
