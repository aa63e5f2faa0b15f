//! `acs-stream demo`, as the README tells a newcomer to run it.

use std::process::Command;

#[test]
fn the_demo_processes_everything_and_says_so() {
    let output = Command::new(env!("CARGO_BIN_EXE_acs-stream"))
        .args(["demo", "--events", "600", "--tenants", "3", "--seed", "7"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("600 records consumed"), "{stdout}");
    assert!(stdout.contains("all outputs acknowledged and offsets committed: true"), "{stdout}");
    for topic in ["acs.tenant-01.events", "acs.tenant-02.events", "acs.tenant-03.events", "acs.dlq"] {
        assert!(stdout.contains(topic), "{topic} missing from\n{stdout}");
    }
    assert!(stdout.contains("sample events"), "{stdout}");
    let counted: usize = stdout
        .lines()
        .skip_while(|line| !line.starts_with("records per topic:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().last()?.parse::<usize>().ok())
        .sum();
    assert_eq!(counted, 600, "every record ends in exactly one output topic:\n{stdout}");
}
