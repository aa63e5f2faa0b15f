//! `acs-stream demo`, as the README tells a newcomer to run it.

use std::process::Command;

/// A line of the service's log (tracing's text format: a timestamp, then the level, maybe
/// coloured; or its JSON format).
fn looks_like_a_log_line(line: &str) -> bool {
    // Without the colours' escape sequences (ESC `[` ... `m`).
    let mut plain = String::new();
    let mut escaped = false;
    for c in line.chars() {
        match (escaped, c) {
            (false, '\u{1b}') => escaped = true,
            (true, 'm') => escaped = false,
            (true, _) => {}
            (false, c) => plain.push(c),
        }
    }
    let plain = plain.as_str();
    ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].iter().any(|level| plain.contains(&format!(" {level} ")))
        || plain.trim_start().starts_with('{') && plain.contains("\"level\"")
}

#[test]
fn the_demo_processes_everything_and_says_so() {
    let output = Command::new(env!("CARGO_BIN_EXE_acs-stream"))
        .args(["demo", "--events", "600", "--tenants", "3", "--seed", "7"])
        .env_remove("RUST_LOG")
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    // Not a terminal: no progress bar; not verbose: no log line, anywhere.
    for line in stdout.lines().chain(stderr.lines()) {
        assert!(!looks_like_a_log_line(line), "a log line without --verbose: {line}");
    }
    assert!(stderr.trim().is_empty(), "{stderr}");
    // The summary leads with the sessions: how many, then how many by their loudest alert.
    let first = stdout.lines().find(|line| !line.is_empty()).unwrap_or_default();
    let sessions: usize = first
        .strip_prefix("acs-stream demo: ")
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("the sessions first:\n{stdout}"));
    assert!(sessions > 10, "{stdout}");
    assert!(stdout.contains("600 records consumed"), "{stdout}");
    assert!(stdout.contains("all outputs acknowledged and offsets committed: true"), "{stdout}");
    for topic in ["acs.tenant-01.events", "acs.tenant-02.events", "acs.tenant-03.events", "acs.dlq"] {
        assert!(stdout.contains(topic), "{topic} missing from\n{stdout}");
    }
    assert!(stdout.contains("sample events"), "{stdout}");
    let section = |title: &str| -> Vec<(String, usize)> {
        stdout
            .lines()
            .skip_while(|line| !line.starts_with(title))
            .skip(1)
            .take_while(|line| line.starts_with("  "))
            .filter_map(|line| {
                let count = line.split_whitespace().last()?.parse::<usize>().ok()?;
                Some((line.split_whitespace().next()?.to_owned(), count))
            })
            .collect()
    };
    let per_topic = section("records per topic:");
    let outputs: usize = (per_topic.iter())
        .filter(|(topic, _)| !topic.ends_with(".alerts") && !topic.ends_with(".incidents"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(outputs, 600, "every record ends in exactly one events or dead-letter topic:\n{stdout}");
    // Alerts: the count the run produced, all read back, every one decoded with its rule.
    let alerts: usize = stdout
        .split(" dead letters, ")
        .nth(1)
        .and_then(|rest| rest.split(" alerts").next()?.parse().ok())
        .expect("the alert count");
    assert!(alerts > 0, "the synthetic sessions fire rules:\n{stdout}");
    let in_topics: usize = per_topic.iter().filter(|(topic, _)| topic.ends_with(".alerts")).map(|(_, n)| n).sum();
    assert_eq!(in_topics, alerts, "{stdout}");
    // Every session has a priority (`none` without an incident yet).
    let by_priority = section("sessions by incident priority:");
    let names: Vec<&str> = by_priority.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["critical", "high", "medium", "low", "none"], "{stdout}");
    assert_eq!(by_priority.iter().map(|(_, n)| n).sum::<usize>(), sessions, "{stdout}");
    assert!(per_topic.iter().any(|(topic, n)| topic.ends_with(".incidents") && *n > 0), "{stdout}");
    let by_loudest = section("sessions by loudest alert published:");
    assert_eq!(by_loudest.len(), 6, "five severities and `no alert`:\n{stdout}");
    assert_eq!(by_loudest.iter().map(|(_, n)| n).sum::<usize>(), sessions, "{stdout}");
    let sections = [
        "sessions by incident priority:",
        "review first",
        "sessions by loudest alert published:",
        "alerts published per rule",
        "alerts folded into incidents per rule:",
        "dead letters per code",
        "throughput: ",
    ];
    let at: Vec<usize> = sections.iter().map(|title| stdout.find(title).expect(title)).collect();
    assert!(at.windows(2).all(|pair| pair[0] < pair[1]), "sections in this order: {sections:?}\n{stdout}");
    let per_rule = section("alerts published per rule");
    assert_eq!(per_rule.iter().map(|(_, n)| n).sum::<usize>(), alerts, "{stdout}");
    let defaults = acs_stream::rules::RuleSet::defaults();
    assert!(per_rule.iter().all(|(rule, _)| defaults.get(rule).is_some()), "{stdout}");
    // The demo stops once the tenant side has counted every event forwarded to it, so that
    // tenant-scoped rules see all of them: as many counted as re-keyed.
    let (forwarded, counted): (usize, usize) = stdout
        .split(" records/s, from the first record processed to the last output read), and ")
        .nth(1)
        .and_then(|rest| {
            let (forwarded, rest) = rest.split_once(" re-keyed by tenant for tenant-scoped rules (")?;
            Some((forwarded.parse().ok()?, rest.split(' ').next()?.parse().ok()?))
        })
        .expect("the re-keyed and counted counts");
    assert!(forwarded > 0, "the synthetic traffic matches tenant-scoped rules:\n{stdout}");
    assert_eq!(counted, forwarded, "{stdout}");
}

#[test]
fn verbose_shows_the_services_logs() {
    let output = Command::new(env!("CARGO_BIN_EXE_acs-stream"))
        .args(["demo", "--events", "100", "--tenants", "1", "--verbose"])
        .env_remove("RUST_LOG")
        .output()
        .expect("the demo runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.lines().any(looks_like_a_log_line), "{stderr}");
}
